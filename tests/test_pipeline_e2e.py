"""The quick profile through the real `dvc repro` into a real MLflow store."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from upreid import tracking

ROOT = Path(__file__).resolve().parents[1]


def _measure_module():
    spec = importlib.util.spec_from_file_location(
        "measure_pipeline", ROOT / "benchmarks" / "measure_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _repro(work: Path) -> str:
    dvc = Path(sys.executable).with_name("dvc")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{dvc.parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([str(dvc), "repro"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_quick_profile_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _measure_module().copy_project(tmp_path, "quick")
    first = _repro(tmp_path)
    assert "Running stage 'report'" in first

    table4 = (tmp_path / "reports" / "tables" / "table4.md").read_text()
    row = next(line for line in table4.splitlines() if "(d) UP-ReID" in line)
    assert re.search(r"\| \d+\.\d \| 85\.3", row), row
    table1 = (tmp_path / "reports" / "tables" / "table1.md").read_text()
    assert len(re.findall(r"\d+\.\d/\d+\.\d \|", table1)) >= 20
    assert (tmp_path / "reports" / "figures" / "curves" / "figure6_mgn.png").is_file()

    runs = tracking.latest_runs("quick", tmp_path)
    for key in ("pretrain/moco", "pretrain/upreid", "finetune/mgn/cuhk03/upreid/s0",
                "finetune/pcb/personx/moco/s0", "spcl/P2M/upreid"):
        assert key in runs, sorted(runs)
        assert "mAP" in runs[key].metrics or "loss" in runs[key].metrics
    assert "mAP" in runs["finetune/bot/msmt17/moco/s0"].metrics
    parents = {r.tags["mlflow.parentRunId"] for r in runs.values()}
    assert len(parents) == 1

    second = _repro(tmp_path)
    assert "Running stage" not in second, second
