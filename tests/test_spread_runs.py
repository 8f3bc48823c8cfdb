"""A training stage under torchrun (2 gloo processes) spreads its runs over the ranks and
writes the same results as one process, with every run in MLflow; the thread plan of a share."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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
        "headline_seeds": 1,
        "pretrain_seeds": 1,
        "log_models": False,
    }
    params["profiles"]["quick"]["launch"] = {"nproc_per_node": nproc, "pretrain": "spread"}
    quick = params["profiles"]["quick"]  # the shortest runs that still train and evaluate
    quick["pretrain"]["frozen_eval"] = []
    quick["finetune"]["bot"].update(epochs=1, milestones=[1])
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


def _stage(work: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=work,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


SPREAD_PRETRAIN = """\
from _common import start

from upreid.steps.pretrain import run_pretrain_stage

run_pretrain_stage(start(distributed=True), ["moco", "icc"])
"""


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
    logs = {}
    for work in (one, two):
        # pre-training spread: moco on rank 1, icc on rank 0, each as in one process
        (work / "stages" / "spread_pretrain.py").write_text(SPREAD_PRETRAIN)
        _stage(work, "stages/spread_pretrain.py")
        logs[work] = _stage(work, "stages/finetune.py", "bot")
    for variant in ("moco", "icc"):
        ra, rb = (
            json.loads((w / "runs/pretrain" / variant / "result.json").read_text())
            for w in (one, two)
        )
        assert {k: v for k, v in ra["metrics"].items() if k not in TIMING} == {
            k: v for k, v in rb["metrics"].items() if k not in TIMING
        }, variant
        assert rb["metrics"]["runtime_world"] == 1  # each run in one process, not DDP
    datasets = ["cuhk03", "market1501", "msmt17", "personx"]
    for dataset in datasets:
        a, b = (
            json.loads((w / "metrics" / "finetune" / "bot" / f"{dataset}.json").read_text())
            for w in (one, two)
        )
        assert a == b and sorted(a["mAP"]) == ["moco", "scratch"], (a, b)
        for run in ("moco-s0", "scratch-s0"):
            ra, rb = (
                json.loads((w / "runs/finetune/bot" / dataset / run / "result.json").read_text())
                for w in (one, two)
            )
            assert {k: v for k, v in ra["metrics"].items() if k not in TIMING} == {
                k: v for k, v in rb["metrics"].items() if k not in TIMING
            }, (dataset, run)
    # rank 1 did every other run (each dataset's scratch-s0), which rank 0 then logged to MLflow
    for dataset in datasets:
        for init, rank1 in (("scratch", True), ("moco", False)):
            relogged = (
                f"finetune/bot/{dataset}/{init}/s0: unchanged inputs, result re-logged to MLflow"
            )
            assert (relogged in logs[two]) == rank1 and relogged not in logs[one], (dataset, init)
    log = two / "runs" / "finetune" / "bot" / "market1501" / "moco-s0" / "result.json"
    assert json.loads(log.read_text())["key"] == "finetune/bot/market1501/moco/s0"
    from upreid import tracking

    runs = tracking.latest_runs("quick", two)
    want = {f"finetune/bot/{d}/{i}/s0" for d in datasets for i in ("scratch", "moco")}
    assert want | {"pretrain/moco", "pretrain/icc"} <= set(runs)


def test_rank_0_which_logs_every_run_gets_the_smaller_share() -> None:
    from upreid.train.distributed import share_of

    units = list(range(7))
    assert share_of(units, 0, 2) == [1, 3, 5] and share_of(units, 1, 2) == [0, 2, 4, 6]
    shares = [share_of(units, r, 3) for r in range(3)]
    assert [len(s) for s in shares] == [2, 2, 3]
    assert sorted(u for s in shares for u in s) == units  # each unit once
    assert share_of(units, 0, 1) == units


def test_share_threads_gives_the_cores_of_ranks_out_of_runs_to_the_others() -> None:
    from upreid.train.distributed import share_threads

    # 3 runs on 2 ranks of one node with 2 cores: both run at 1 thread, then rank 0 at 2
    assert share_threads([2, 1], 0, 0, 2, 2) == [1, 2]
    assert share_threads([2, 1], 1, 1, 2, 2) == [1]
    # 8 cores, 3 ranks with 3, 2 and 1 runs: 3 + 3 + 2, then 4 + 4, then 8
    assert share_threads([3, 2, 1], 0, 0, 3, 8) == [3, 4, 8]
    assert share_threads([3, 2, 1], 1, 1, 3, 8) == [3, 4]
    assert share_threads([3, 2, 1], 2, 2, 3, 8) == [2]
    # 3 cores, 2 ranks: none left idle
    assert share_threads([1, 1], 0, 0, 2, 3) == [2] and share_threads([1, 1], 1, 1, 2, 3) == [1]
    # two nodes of 2 ranks (ranks 2, 3 on the second): only a node's own ranks count
    assert share_threads([2, 2, 2, 1], 2, 0, 2, 4) == [2, 4]
    assert share_threads([2, 2, 2, 1], 0, 0, 2, 4) == [2, 2]
    # more ranks than cores: never fewer than one thread
    assert share_threads([1, 1, 1], 2, 2, 3, 2) == [1]
