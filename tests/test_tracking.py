import json
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from upreid import tracking


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _log_stage(root: Path, key: str, values: list[float], tags: dict | None = None) -> None:
    with tracking.stage_run(
        key,
        profile="t",
        params={"a": {"b": 1, "c": (1, 2)}},
        tags=tags or {"input_hash": "h1"},
        commit="abc",
        root=root,
    ) as run:
        for step, v in enumerate(values):
            run.log_metrics({"mAP": v, "loss": 1.0 / (step + 1)}, step)


def test_runs_nest_under_one_pipeline_run(store: Path) -> None:
    _log_stage(store, "finetune/bot/market1501/upreid/s0", [10.0, 20.0, 30.0])
    _log_stage(store, "pretrain/upreid", [1.0])
    runs = tracking.latest_runs("t", store)
    assert set(runs) == {"finetune/bot/market1501/upreid/s0", "pretrain/upreid"}
    run = runs["finetune/bot/market1501/upreid/s0"]
    assert run.metrics["mAP"] == 30.0
    assert run.params["a.b"] == "1" and run.params["a.c"] == "[1, 2]"
    parents = {r.tags["mlflow.parentRunId"] for r in runs.values()}
    assert len(parents) == 1
    assert run.tags["upreid.profile"] == "t" and run.tags["upreid.commit"] == "abc"
    history = tracking.metric_history(run.run_id, "mAP", store)
    assert history == [(0, 10.0), (1, 20.0), (2, 30.0)]


def test_latest_finished_run_wins_and_failures_are_marked(store: Path) -> None:
    _log_stage(store, "pretrain/moco", [1.0])
    _log_stage(store, "pretrain/moco", [2.0], tags={"input_hash": "h2"})
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.stage_run(
            "pretrain/moco", profile="t", params={}, tags={}, commit="abc", root=store
        ) as run:
            run.log_metrics({"mAP": 99.0}, 0)
            raise RuntimeError("boom")
    runs = tracking.latest_runs("t", store)
    assert runs["pretrain/moco"].metrics["mAP"] == 2.0
    assert tracking.find_run("t", "pretrain/moco", "h1", store) is not None
    assert tracking.find_run("t", "pretrain/moco", "h3", store) is None


def test_unreachable_server_is_a_clear_error(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(tracking.TrackingError, match="unreachable"):
        with tracking.stage_run("x", profile="t", params={}, tags={}, commit="c", root=store):
            pytest.fail("the body must not run when the server is unreachable")
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_real_server_serves_the_runs_over_rest(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _log_stage(store, "finetune/mgn/cuhk03/upreid/s0", [5.0, 7.5])
    holder = socket.socket()  # another process's listener on the first port picked
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    held = holder.getsockname()[1]
    picks = iter([held])
    free = tracking._free_port
    monkeypatch.setattr(tracking, "_free_port", lambda: next(picks, None) or free())
    with holder, tracking.serve(store / "mlflow.db", cwd=store) as base:
        assert not base.endswith(f":{held}")  # the taken port was given up for another
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=upreid-t"
        )
        exp = json.load(urllib.request.urlopen(req, timeout=10))["experiment"]
        body = json.dumps(
            {
                "experiment_ids": [exp["experiment_id"]],
                "filter": "tags.`upreid.key` = 'finetune/mgn/cuhk03/upreid/s0'",
            }
        )
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        runs = json.load(urllib.request.urlopen(req, timeout=10))["runs"]
        assert len(runs) == 1
        metrics = {m["key"]: m["value"] for m in runs[0]["data"]["metrics"]}
        assert metrics["mAP"] == 7.5
        # and the library reads the same runs through the server
        os.environ["MLFLOW_TRACKING_URI"] = base
        try:
            assert "finetune/mgn/cuhk03/upreid/s0" in tracking.latest_runs("t", store)
        finally:
            del os.environ["MLFLOW_TRACKING_URI"]


def test_artifacts_are_hard_linked_into_the_project_store(
    store: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(elsewhere)  # the store follows the project, not the current folder
    run_dir = store / "runs" / "r"
    (run_dir / "sub").mkdir(parents=True)
    (run_dir / "best.pt").write_bytes(b"weights-1")
    (run_dir / "sub" / "history.json").write_text("[]")
    with tracking.stage_run("k", profile="t", params={}, tags={}, commit="c", root=store) as run:
        run.log_artifact(run_dir / "best.pt")
        run.log_artifact(run_dir / "sub", "sub")
        run_id = run.run_id
    assert tracking.artifact_paths(run_id, store) == ["best.pt", "sub/history.json"]
    logged = next((store / "mlruns").rglob("best.pt"))
    assert logged.stat().st_ino == (run_dir / "best.pt").stat().st_ino  # no second copy
    assert not (elsewhere / "mlruns").exists()
    # the project replaces files atomically: the logged artifact keeps what was logged
    tmp = run_dir / "best.pt.tmp"
    tmp.write_bytes(b"weights-2")
    os.replace(tmp, run_dir / "best.pt")
    assert logged.read_bytes() == b"weights-1"


def test_runs_carry_source_git_experiment_datasets_and_system_metrics(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.setenv("DVC_EXP_NAME", "lr-sweep")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    sha = "0123456789abcdef0123456789abcdef01234567"
    with tracking.stage_run(
        "finetune/bot/market1501/moco/s0",
        profile="t",
        params={},
        tags={},
        commit=f"{sha}-dirty",
        root=store,
    ) as run:
        run.log_datasets(
            {"train": {"name": "market1501", "source": "/d/m", "train": {"images": 12}}}
        )
        time.sleep(1.0)
        run_id = run.run_id
    client = mlflow.MlflowClient(tracking.tracking_uri(store))
    got = client.get_run(run_id)
    tags = got.data.tags
    assert tags["mlflow.source.git.commit"] == sha and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"] and tags["upreid.dvc_experiment"] == "lr-sweep"
    (inp,) = got.inputs.dataset_inputs
    assert inp.dataset.name == "market1501" and json.loads(inp.dataset.profile)["train"] == {
        "images": 12
    }
    assert [t.value for t in inp.tags if t.key == "mlflow.data.context"] == ["train"]
    assert any(name.startswith("system/") for name in got.data.metrics), got.data.metrics
    parent = client.get_run(tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED" and parent.info.end_time >= got.info.end_time
