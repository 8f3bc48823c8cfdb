import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from upreid.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "data",
        "pretrain",
        "ablate",
        "finetune",
        "adapt",
        "eval",
        "search",
        "tables",
        "info",
    ):
        assert command in result.output


def test_ablate_needs_exactly_one_switch() -> None:
    result = runner.invoke(app, ["--params", str(ROOT / "params.yaml"), "ablate"])
    assert result.exit_code == 2
    assert "exactly one ablation" in result.output
    result = runner.invoke(
        app, ["--params", str(ROOT / "params.yaml"), "ablate", "--no-cc", "--no-hm"]
    )
    assert result.exit_code == 2
    result = runner.invoke(app, ["--params", str(ROOT / "params.yaml"), "ablate", "--patches", "6"])
    assert result.exit_code == 2 and "4, 8 or 12" in result.output


def test_a_pretraining_seed_only_for_the_compared_methods() -> None:
    base = ["--params", str(ROOT / "params.yaml"), "pretrain"]
    result = runner.invoke(app, [*base, "--variant", "nohm", "--pretrain-seed", "1"])
    assert result.exit_code == 2 and "only for ['moco', 'upreid']" in result.output
    result = runner.invoke(app, [*base, "--variant", "moco", "--pretrain-seed", "-1"])
    assert result.exit_code == 2 and "offset >= 0" in result.output


def test_bad_params_file_is_refused_before_work(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["finetune"]["bot"]["lr_typo"] = 1.0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["--params", str(bad), "info"])
    assert result.exit_code == 2
    assert "lr_typo" in result.output


def test_data_check_missing_folder(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["data", "check", str(tmp_path / "nowhere"), "--format", "market1501"]
    )
    assert result.exit_code == 2
    assert "nowhere" in result.output
    result = runner.invoke(app, ["data", "check", str(tmp_path), "--format", "duke"])
    assert result.exit_code == 2 and "is not one of" in " ".join(result.output.split())


def test_info_names_reports_and_ui() -> None:
    result = runner.invoke(app, ["--params", str(ROOT / "params.yaml"), "info"])
    assert result.exit_code == 0
    assert "reports" in result.output and "mlflow ui" in result.output


def test_data_check_counts_generated_data(tmp_path: Path) -> None:
    import dataclasses
    import json

    from upreid.data.synth import synthesize
    from upreid.params import load_params

    data = load_params(ROOT / "params.yaml", "quick").data
    sizes = {"train_identities": 5, "test_identities": 4, "distractors": 3}
    data = dataclasses.replace(
        data,
        pool=dataclasses.replace(data.pool, identities=3),
        **{
            n: dataclasses.replace(getattr(data, n), **sizes)
            for n in ("market1501", "cuhk03", "msmt17", "personx")
        },
    )
    synthesize(data, tmp_path)
    result = runner.invoke(
        app, ["data", "check", str(tmp_path / "market1501"), "--format", "market1501"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["train"]["identities"] == 5 and report["query"]["identities"] == 4
    assert report["gallery"]["identities"] == 4 + 1  # the test people and the distractors (0)
    assert report["train"]["cameras"] <= 6 and report["problems"] == []
    (tmp_path / "market1501" / "query" / "broken.jpg").write_bytes(b"")
    result = runner.invoke(
        app, ["data", "check", str(tmp_path / "market1501"), "--format", "market1501"]
    )
    assert result.exit_code == 1, result.output  # a problem found: not clean
    problems = json.loads(result.output[: result.output.rindex("}") + 1])["problems"]
    assert len(problems) == 1 and "broken.jpg: file name does not parse" in problems[0]


def _err(args: list[str]) -> str:
    result = runner.invoke(app, ["--params", str(ROOT / "params.yaml"), *args])
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def test_help_shows_the_choices() -> None:
    result = runner.invoke(app, ["finetune", "--help"], env={"COLUMNS": "200"})
    out = " ".join(result.output.split())
    assert result.exit_code == 0 and "bdb" in out and "msmt17" in out
    assert "is not one of" in _err(["finetune", "--method", "foo"])
    assert "is not one of" in _err(["finetune", "--dataset", "duke"])
    assert "is not one of" in _err(["pretrain", "--variant", "nope"])


def test_user_mistakes_print_one_line_and_exit_2(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "params.yaml"
    bad_yaml.write_text("seed: [1\n")
    result = runner.invoke(app, ["--params", str(bad_yaml), "info"])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output
    assert "--seed must be >= 0" in _err(["finetune", "--seed", "-1"])
    assert "--topk" in _err(["search", "x.pt", "--query", "q.jpg", "--gallery", ".", "--topk", "0"])
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for name, content in (("empty.pt", b""), ("text.pt", b"not a checkpoint\n")):
        (tmp_path / name).write_bytes(content)
        out = _err(
            ["search", str(tmp_path / name), "--query", str(bad_yaml), "--gallery", str(gallery)]
        )
        assert out.startswith("error:") and "--debug" in out
    assert "checkpoint not found" in _err(
        [
            "search",
            str(tmp_path / "missing.pt"),
            "--query",
            str(bad_yaml),
            "--gallery",
            str(gallery),
        ]
    )


def test_paths_follow_the_params_file_not_the_current_folder(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = runner.invoke(app, ["--params", str(ROOT / "params.yaml"), "info"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert str(ROOT / "reports") in out and str(ROOT / "mlflow.db") in out
    assert str(tmp_path) not in out and not (tmp_path / "mlflow.db").exists()


def test_more_user_mistakes_print_one_line_and_exit_2(
    bot_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    ckpt = bot_checkpoint
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    Image.new("RGB", (16, 32), (90, 20, 20)).save(gallery / "0001_c1s1_000001_00.jpg")
    not_image = tmp_path / "query.jpg"
    not_image.write_text("this is text, not a picture\n")
    query = ["search", str(ckpt), "--gallery", str(gallery), "--query"]
    out = _err([*query, str(not_image)])
    assert "query.jpg" in out and "image" in out, out
    ok = runner.invoke(app, [*query, str(gallery / "0001_c1s1_000001_00.jpg")])
    assert ok.exit_code == 0 and "0001_c1s1_000001_00.jpg" in ok.output, ok.output

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert _err([*query[:1], str(truncated), *query[2:], str(not_image)]).startswith("error:")

    out = _err(["finetune", "--init", "imagenet21k"])
    assert "imagenet21k" in out and "neither a weights file nor a known init" in out, out

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    start = time.monotonic()
    out = _err(["tables"])
    assert "unreachable" in out and "MLFLOW_TRACKING_URI" in out, out
    assert time.monotonic() - start < 30


def test_debug_shows_the_traceback_and_overrides_are_validated(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "params.yaml"
    bad_yaml.write_text("seed: [1\n")
    result = runner.invoke(app, ["--debug", "--params", str(bad_yaml), "info"])
    assert result.exit_code == 1 and result.exception is not None  # raised, not reported
    assert "error:" not in result.output
    out = _err(["-S", "finetune.bot.lr=inf", "info"])
    assert "finetune.bot" in out and "lr" in out, out
    assert "has no key 'nope'" in _err(["-S", "finetune.bot.nope=1", "info"])


def test_data_check_fails_on_an_empty_split(tmp_path: Path) -> None:
    root = tmp_path / "market1501"
    for split in ("bounding_box_train", "bounding_box_test", "query"):
        (root / split).mkdir(parents=True)
    from PIL import Image

    for split, name in (
        ("bounding_box_train", "0001_c1s1_000001_00.jpg"),
        ("bounding_box_test", "0002_c2s1_000001_00.jpg"),
    ):
        Image.new("RGB", (16, 32)).save(root / split / name)
    result = runner.invoke(app, ["data", "check", str(root), "--format", "market1501"])
    assert result.exit_code == 1, result.output  # the query split is empty
    assert "query" in result.output
