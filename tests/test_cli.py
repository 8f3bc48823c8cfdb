from pathlib import Path

import yaml
from typer.testing import CliRunner

from upreid.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("data", "pretrain", "ablate", "finetune", "adapt", "eval", "search",
                    "tables", "info"):
        assert command in result.output


def test_ablate_needs_exactly_one_switch() -> None:
    result = runner.invoke(app, ["--params", str(ROOT / "params.yaml"), "ablate"])
    assert result.exit_code == 2
    assert "exactly one ablation" in result.output
    result = runner.invoke(app, ["--params", str(ROOT / "params.yaml"), "ablate", "--no-cc",
                                 "--no-hm"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["--params", str(ROOT / "params.yaml"), "ablate",
                                 "--patches", "6"])
    assert result.exit_code == 2 and "4, 8 or 12" in result.output


def test_bad_params_file_is_refused_before_work(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["finetune"]["bot"]["lr_typo"] = 1.0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["--params", str(bad), "info"])
    assert result.exit_code == 2
    assert "lr_typo" in result.output


def test_data_check_missing_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nowhere"), "--format",
                                 "market1501"])
    assert result.exit_code == 2
    assert "nowhere" in result.output
    result = runner.invoke(app, ["data", "check", str(tmp_path), "--format", "duke"])
    assert result.exit_code == 2 and "unknown format" in result.output


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
        data, pool=dataclasses.replace(data.pool, identities=3),
        **{n: dataclasses.replace(getattr(data, n), **sizes)
           for n in ("market1501", "cuhk03", "msmt17", "personx")})
    synthesize(data, tmp_path)
    result = runner.invoke(app, ["data", "check", str(tmp_path / "market1501"), "--format",
                                 "market1501"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["train"]["identities"] == 5 and report["query"]["identities"] == 4
    assert report["gallery"]["identities"] == 4 + 1  # the test people and the distractors (0)
    assert report["train"]["cameras"] <= 6 and report["problems"] == []
    (tmp_path / "market1501" / "query" / "broken.jpg").write_bytes(b"")
    result = runner.invoke(app, ["data", "check", str(tmp_path / "market1501"), "--format",
                                 "market1501"])
    assert result.exit_code == 0, result.output
    problems = json.loads(result.output)["problems"]
    assert len(problems) == 1 and "broken.jpg: file name does not parse" in problems[0]
