"""The report reads exactly the runs of the current inputs; the store derives from run folders."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from upreid import tracking
from upreid.params import load_params
from upreid.pipeline import Paths
from upreid.steps.store import MissingRunsError, current_runs, expected_folders, sync_store
from upreid.units import LOG, RESULT

ROOT = Path(__file__).resolve().parents[1]


def _finished(folder: Path, key: str, value: float) -> None:
    folder.mkdir(parents=True)
    (folder / LOG).write_text(json.dumps([{"step": 1, "mAP": value / 2}]))
    (folder / RESULT).write_text(
        json.dumps(
            {
                "key": key,
                "input_hash": f"h-{key}",
                "metrics": {"mAP": value},
                "params": {"lr": 0.1},
                "tags": {"seed": "0"},
            }
        )
    )


def test_missing_runs_are_named_and_a_lost_store_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(ROOT / "params.yaml", "quick")
    folders = expected_folders(params, Paths(params, tmp_path))
    assert len(folders) == len(set(folders)) > 40  # pre-training, fine-tuning and SpCL runs
    keys = {f: "/".join(f.relative_to(tmp_path / "runs").parts) for f in folders}
    for i, folder in enumerate(folders[1:]):
        _finished(folder, keys[folder], float(i))
    with pytest.raises(MissingRunsError, match=r"1 runs .* not done \(runs/pretrain/moco\)"):
        current_runs(params, tmp_path)

    _finished(folders[0], keys[folders[0]], 99.0)
    # a store of another input's run of the same key is not read: the folders decide
    with tracking.stage_run(
        keys[folders[0]],
        profile="quick",
        params={},
        tags={"input_hash": "stale"},
        commit="c",
        root=tmp_path,
    ) as run:
        run.log_metrics({"mAP": -1.0}, 1)
    records = current_runs(params, tmp_path)  # re-logs every run from its folder
    assert set(records) == set(keys.values())
    assert records[keys[folders[0]]].metrics["mAP"] == 99.0
    assert records[keys[folders[0]]].params["lr"] == "0.1"
    assert sync_store(params, tmp_path) == {"runs": len(folders), "relogged": 0}

    (tmp_path / "mlflow.db").unlink()  # the next process (the next `dvc repro`) rebuilds it
    code = (
        "import json, sys; from upreid.params import load_params; "
        "from upreid.steps.store import sync_store, current_runs; "
        f"p = load_params({str(ROOT / 'params.yaml')!r}, 'quick'); "
        f"print(json.dumps(sync_store(p, {str(tmp_path)!r}))); "
        f"r = current_runs(p, {str(tmp_path)!r}); "
        "from upreid.tracking import metric_history; "
        f"k = {keys[folders[3]]!r}; "
        f"print(json.dumps(metric_history(r[k].run_id, 'mAP', {str(tmp_path)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert json.loads(out[0]) == {"runs": len(folders), "relogged": len(folders)}
    assert json.loads(out[1]) == [
        [1, 1.0],
        [1, 2.0],
    ]  # the curve from the folder, then the final value
