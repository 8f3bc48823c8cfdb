"""A unit of work runs once for given inputs: skip when done, resume when killed, never lose a
finished run to one of new inputs that fails; MLflow's record is derived from result.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from upreid import tracking
from upreid.units import Unit, run_unit


class Boom(Exception):
    pass


class Worker:
    """A fake training run: writes a checkpoint, then (unless told to fail) a product."""

    def __init__(self) -> None:
        self.folders: list[Path] = []
        self.fail = False
        self.resumed: list[bool] = []

    def __call__(self, folder: Path, on_metrics: Any) -> dict[str, Any]:
        self.folders.append(folder)
        self.resumed.append((folder / "last.pt").is_file())
        (folder / "last.pt").write_text("checkpoint")
        on_metrics({"loss": 1.0}, 1)
        if self.fail:
            raise Boom
        (folder / "best.pt").write_text(f"product of {folder.name}")
        return {"mAP": 42.0}


def _unit(tmp: Path, inputs: str) -> Unit:
    return Unit(
        "finetune/bot/market1501/moco/s0",
        tmp / "runs" / "moco-s0",
        inputs,
        {"lr": 0.1},
        artifacts=("best.pt",),
        resume_state="last.pt",
    )


@pytest.fixture(autouse=True)
def local_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _run(tmp: Path, unit: Unit, worker: Worker) -> dict[str, Any]:
    return run_unit(unit, worker, "t", {"seed": 0}, root=tmp)


def test_done_once_then_reused_and_relogged_from_the_folder(tmp_path: Path) -> None:
    worker = Worker()
    unit = _unit(tmp_path, "aaa")
    assert _run(tmp_path, unit, worker) == {"mAP": 42.0}
    assert not (unit.out / "last.pt").exists() and (unit.out / "best.pt").is_file()
    assert json.loads((unit.out / "result.json").read_text())["input_hash"] == "aaa"
    assert _run(tmp_path, unit, worker) == {"mAP": 42.0}
    assert len(worker.folders) == 1  # the second call reused the result
    (tmp_path / "mlflow.db").unlink()  # a lost store is rebuilt from the run folders
    assert _run(tmp_path, unit, worker) == {"mAP": 42.0}
    assert len(worker.folders) == 1
    runs = tracking.latest_runs("t", tmp_path)
    assert runs[unit.key].metrics["mAP"] == 42.0


def test_a_killed_run_resumes_in_its_folder(tmp_path: Path) -> None:
    worker = Worker()
    unit = _unit(tmp_path, "aaa")
    worker.fail = True
    with pytest.raises(Boom):
        _run(tmp_path, unit, worker)
    worker.fail = False
    _run(tmp_path, unit, worker)
    assert worker.folders == [unit.out, unit.out] and worker.resumed == [False, True]


def test_new_inputs_replace_a_finished_run_only_when_they_succeed(tmp_path: Path) -> None:
    worker = Worker()
    old = _unit(tmp_path, "aaa")
    _run(tmp_path, old, worker)
    new = _unit(tmp_path, "bbb")
    worker.fail = True
    with pytest.raises(Boom):
        _run(tmp_path, new, worker)
    # the finished run is untouched; the new one builds beside it
    assert json.loads((old.out / "result.json").read_text())["input_hash"] == "aaa"
    assert (old.out / "best.pt").read_text() == "product of moco-s0"
    assert worker.folders[-1] == new.staging
    worker.fail = False
    _run(tmp_path, new, worker)
    assert worker.resumed[-1] is True  # resumed in the staging folder
    assert json.loads((new.out / "result.json").read_text())["input_hash"] == "bbb"
    assert not new.staging.exists()
    assert sorted(p.name for p in new.out.parent.iterdir()) == ["moco-s0"]


def test_a_run_left_running_by_a_kill_ends_killed(tmp_path: Path) -> None:
    unit = _unit(tmp_path, "aaa")
    orphan = tracking.stage_run(
        unit.key, profile="t", params={}, tags={}, commit="c", root=tmp_path
    )
    orphan.__enter__()  # a process killed inside its run never leaves it
    _run(tmp_path, unit, Worker())
    client = tracking._client(tracking.tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("upreid-t")
    status = sorted(
        r.info.status
        for r in client.search_runs([exp.experiment_id], f"tags.`upreid.key` = '{unit.key}'")
    )
    assert status == ["FINISHED", "KILLED"]


def test_the_summary_does_not_repeat_the_last_logged_row(tmp_path: Path) -> None:
    """A run's final mAP, logged with its last epoch, is not logged again at the same step
    (each value once in MLflow's history); summary values not in that row are added there."""

    def work(folder: Path, on_metrics: Any) -> dict[str, Any]:
        on_metrics({"mAP": 40.0}, 1)
        on_metrics({"loss": 0.5}, 2)  # two rows at the last step (a loss, then an evaluation)
        on_metrics({"mAP": 42.0}, 2)
        return {"mAP": 42.0, "best_mAP": 42.0, "loss": 0.5}

    unit = Unit("finetune/bot/market1501/moco/s0", tmp_path / "runs" / "r", "h", {})
    run_unit(unit, work, "t", {"seed": 0}, root=tmp_path)
    run_id = tracking.latest_runs("t", tmp_path)[unit.key].run_id
    assert tracking.metric_history(run_id, "mAP", tmp_path) == [(1, 40.0), (2, 42.0)]
    assert tracking.metric_history(run_id, "best_mAP", tmp_path) == [(2, 42.0)]
    assert tracking.metric_history(run_id, "loss", tmp_path) == [(2, 0.5)]
