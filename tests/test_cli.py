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
