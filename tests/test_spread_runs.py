"""A fine-tuning stage under torchrun (2 gloo processes) spreads its runs over the ranks and
writes the same metrics file as one process, with every run in MLflow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("wall_s", "images_per_s")


def _project(dest: Path, nproc: int) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mp", ROOT / "benchmarks" / "measure_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.copy_project(dest, "quick")
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["profiles"]["quick"]["pipeline"] = {
        "inits": ["scratch", "moco"],
        "headline_seeds": 2,
        "pretrain_seeds": 1,
        "log_models": False,
    }
    params["launch"]["nproc_per_node"] = nproc
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _env(work: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PYTHONPATH": str(work),
        "OMP_NUM_THREADS": "1",
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _stage(work: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=work,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _fake_pretrained(work: Path) -> None:
    """A MoCo backbone file as the pre-training stage exports it (random weights)."""
    from upreid.models.backbone import build_backbone

    torch.manual_seed(1)
    out = work / "runs" / "pretrain" / "moco"
    out.mkdir(parents=True)
    torch.save(
        {"backbone": build_backbone("resnet18").state_dict(), "arch": "resnet18"},
        out / "backbone.pt",
    )


@pytest.mark.slow
def test_two_gloo_processes_split_the_runs_and_write_the_same_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    one, two = tmp_path / "one", tmp_path / "two"
    _project(one, 1)
    _project(two, 2)
    _stage(one, "stages/data.py")
    shutil.copytree(one / "data", two / "data")
    for work in (one, two):
        _fake_pretrained(work)
        _stage(work, "stages/finetune.py", "mgn", "market1501")
    a = json.loads((one / "metrics" / "finetune" / "mgn-market1501.json").read_text())
    b = json.loads((two / "metrics" / "finetune" / "mgn-market1501.json").read_text())
    assert a == b and sorted(a["mAP"]) == ["moco", "scratch"], (a, b)  # seeds averaged
    for run in ("moco-s0", "moco-s1", "scratch-s0"):
        ra, rb = (
            json.loads((w / "runs/finetune/mgn-market1501" / run / "result.json").read_text())
            for w in (one, two)
        )
        assert {k: v for k, v in ra["metrics"].items() if k not in TIMING} == {
            k: v for k, v in rb["metrics"].items() if k not in TIMING
        }, run
    # rank 1 did moco-s0; rank 0 did the others and logged all three to MLflow
    log = two / "runs" / "finetune" / "mgn-market1501" / "moco-s0" / "result.json"
    assert json.loads(log.read_text())["key"] == "finetune/mgn/market1501/moco/s0"
    from upreid import tracking

    runs = tracking.latest_runs("quick", two)
    assert {f"finetune/mgn/market1501/{r}" for r in ("scratch/s0", "moco/s0", "moco/s1")} <= set(
        runs
    )
