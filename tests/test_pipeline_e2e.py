"""The quick profile through the real `dvc repro` into a real MLflow store."""

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from upreid import tracking

ROOT = Path(__file__).resolve().parents[1]


def _measure_module():
    spec = importlib.util.spec_from_file_location(
        "measure_pipeline", ROOT / "benchmarks" / "measure_pipeline.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dvc_env() -> tuple[str, dict[str, str]]:
    dvc = Path(sys.executable).with_name("dvc")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{dvc.parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return str(dvc), env


def _repro(work: Path) -> str:
    dvc, env = _dvc_env()
    proc = subprocess.run(
        [dvc, "repro"], cwd=work, env=env, capture_output=True, text=True, timeout=2400
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr  # DVC's stage lines, then the stages' logs


def _kill_repro_when(work: Path, target: str, marker: Path, done: Path) -> None:
    """Start ``dvc repro target``; SIGKILL it and every child as soon as ``marker`` (a
    checkpoint) exists, before ``done`` (the finished run's result) does."""
    dvc, env = _dvc_env()
    with open(work / f"killed-{target}.log", "w") as log:
        proc = subprocess.Popen(
            [dvc, "repro", target],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 1800  # a hang guard: slow machines take minutes
        while not marker.exists():
            assert proc.poll() is None, f"dvc repro {target} ended before {marker} appeared"
            assert time.monotonic() < deadline, f"no {marker} after 1800 s"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not done.exists(), f"{done} was written before the kill: the run was not interrupted"


@pytest.mark.slow
def test_quick_profile_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _measure_module().copy_project(tmp_path, "quick")
    # SIGKILL mid pre-training, then mid fine-tuning: each later `dvc repro` resumes.
    pre = tmp_path / "runs" / "pretrain" / "upreid"
    _kill_repro_when(tmp_path, "pretrain", pre / "checkpoint.pt", pre / "result.json")
    fine = tmp_path / "runs" / "finetune" / "bot" / "market1501" / "moco-s0"
    _kill_repro_when(tmp_path, "finetune@bot", fine / "last.pt", fine / "result.json")
    first = _repro(tmp_path)
    assert "Running stage 'report'" in first
    resumed = (tmp_path / "killed-finetune@bot.log").read_text()
    assert re.search(r"resuming from .*pretrain/upreid/checkpoint\.pt", resumed), resumed[-3000:]
    assert "finetune bot: resuming from" in first, first[-3000:]
    # a finished run keeps its product, not its resume state
    assert not (pre / "checkpoint.pt").exists() and (pre / "backbone.pt").is_file()
    assert not (fine / "last.pt").exists() and (fine / "best.pt").is_file()
    _check_same_as_uninterrupted(tmp_path, pre, fine)

    table4 = (tmp_path / "reports" / "tables" / "table4.md").read_text()
    row = next(line for line in table4.splitlines() if "(d) UP-ReID" in line)
    assert re.search(r"\| \d+\.\d \\\| 85\.3", row), row  # ours \| paper's
    table1 = (tmp_path / "reports" / "tables" / "table1.md").read_text()
    assert len(re.findall(r"\d+\.\d/\d+\.\d \\\|", table1)) >= 20
    assert (tmp_path / "reports" / "figures" / "curves" / "figure6_mgn.png").is_file()

    runs = tracking.latest_runs("quick", tmp_path)
    for key in (
        "pretrain/moco",
        "pretrain/upreid",
        "finetune/mgn/cuhk03/upreid/s0",
        "finetune/pcb/personx/moco/s0",
        "spcl/P2M/upreid",
    ):
        assert key in runs, sorted(runs)
        assert "mAP" in runs[key].metrics or "loss" in runs[key].metrics
    assert "mAP" in runs["finetune/bot/msmt17/moco/s0"].metrics
    parents = {r.tags["mlflow.parentRunId"] for r in runs.values()}
    assert len(parents) == 1
    artifacts = tracking.artifact_paths(runs["finetune/mgn/cuhk03/upreid/s0"].run_id, tmp_path)
    assert {"best.pt", "curves.png", "history.json", "result.json"} <= set(artifacts), artifacts
    report = tracking.artifact_paths(runs["report"].run_id, tmp_path)
    assert "tables/table1.md" in report and "README.md" in report, report

    _check_dvc_views(tmp_path)
    _check_mlflow_ui(tmp_path, runs["finetune/mgn/cuhk03/upreid/s0"].run_id)
    # a lost store: the next `dvc repro` has nothing to run but the store stage, which rebuilds
    # it from the run folders (an intact store re-logs none: tests/test_store.py)
    (tmp_path / "mlflow.db").unlink()
    rebuilt = _repro(tmp_path)
    assert re.findall(r"Running stage '([^']+)'", rebuilt) == ["store"], rebuilt[-2000:]
    assert re.search(r"MLflow store: 50 finished runs, 50 re-logged", rebuilt), rebuilt[-2000:]
    assert set(runs) - {"report"} <= set(_fresh_runs(tmp_path))  # every unit's run

    _check_experiment(tmp_path)


def _fresh_runs(work: Path) -> dict[str, dict]:
    """The store's newest runs as a new process sees them (MLflow keeps one database engine
    per process: this one still reads the store deleted above)."""
    code = (
        "import json, sys; from upreid import tracking; "
        "runs = tracking.latest_runs('quick', sys.argv[1]); "
        "print(json.dumps({k: {'tags': r.tags, 'params': r.params} for k, r in runs.items()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(work)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


CHROMIUM_FLAGS = (  # headless, and no calls home on a closed network
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1400,900",
)


def _page(url: str, work: Path) -> str:
    """The DOM of ``url`` once headless Chromium has run its scripts."""
    chromium = shutil.which("chromium")
    assert chromium, "needs Debian's chromium: the README's test command installs it"
    with tempfile.TemporaryDirectory(dir=work) as profile:
        proc = subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=15000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _check_mlflow_ui(work: Path, run_id: str) -> None:
    """`mlflow server` over the store, in a real browser: the page `upreid info` names is the
    training runs of the experiment; a fine-tuning run shows its name, mAP and dataset; its
    mAP chart draws."""
    with tracking.serve(work / "mlflow.db", cwd=work, log_file=work / "mlflow-server.log") as base:
        port = base.rsplit(":", 1)[1]
        upreid = Path(sys.executable).with_name("upreid")
        info = subprocess.run(
            [str(upreid), "--params", str(work / "params.yaml"), "info", "--port", str(port)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (landing,) = re.findall(rf"{re.escape(base)}/\S+", info)
        assert landing.endswith("runs?workflowType=machine_learning"), info
        runs_page = _page(landing, work)
        assert "pipeline quick@" in runs_page and "Select all runs" in runs_page, runs_page[-3000:]
        exp = landing.split("/experiments/")[1].split("/")[0]
        run_page = _page(f"{base}/#/experiments/{exp}/runs/{run_id}", work)
        for text in ("finetune/mgn/cuhk03/upreid/s0", "mAP", "cuhk03"):
            assert text in run_page, (text, run_page[-3000:])
        chart = _page(
            f'{base}/#/metric?runs=["{run_id}"]&metric="mAP"&experiments=["{exp}"]'
            '&plot_metric_keys=["mAP"]',
            work,
        )
        assert "finetune/mgn/cuhk03/upreid/s0" in chart and "main-svg" in chart, chart[-3000:]


def _dvc(work: Path, *args: str) -> str:
    dvc, env = _dvc_env()
    proc = subprocess.run(
        [dvc, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _check_dvc_views(work: Path) -> None:
    """`dvc metrics show` is a table of a few columns; `dvc plots show` draws every run."""
    table = _dvc(work, "metrics", "show", "--md")
    header = table.splitlines()[0]
    assert "mAP.upreid" in header and "loss.upreid" in header, header
    assert header.count("|") < 40, header
    _dvc(work, "plots", "show", "-o", "plots-html")
    html = (work / "plots-html" / "index.html").read_text()
    assert html.count('"text": "fine-tuning mAP"') == 37, html[:2000]
    assert html.count('"text": "pre-training loss"') == 9
    assert html.count('"text": "frozen-feature mAP (pre-training)"') == 9


def _check_experiment(work: Path) -> None:
    """`dvc exp run -S` in a git checkout: the changed stages rerun, their MLflow runs carry
    the experiment's name, and `dvc exp show` lists it."""
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    # what this test wrote beside the project stays out of the commit
    (work / ".git" / "info" / "exclude").write_text("ref-*/\nplots-html/\n*.log\n")
    for args in (
        ["add", "-A"],
        ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base"],
    ):
        subprocess.run(["git", *args], cwd=work, check=True, capture_output=True)
    _dvc(work, "exp", "run", "-n", "bot-lr", "-S", "finetune.bot.lr=0.002", "finetune@bot")
    run = _fresh_runs(work)["finetune/bot/market1501/moco/s0"]
    assert run["tags"].get("upreid.dvc_experiment") == "bot-lr", run["tags"]
    assert run["params"]["finetune.lr"] == "0.002"
    shown = _dvc(work, "exp", "show", "--md", "--no-pager", "--only-changed")
    assert "bot-lr" in shown and "0.002" in shown, shown


def _check_same_as_uninterrupted(work: Path, pre: Path, fine: Path) -> None:
    """The killed-and-resumed runs end exactly where uninterrupted ones do (same seed, CPU)."""
    from upreid.data.readers import read_dataset, read_pool
    from upreid.experiments import FinetuneRun, eval_every, pretrain_variant
    from upreid.params import load_params
    from upreid.pipeline import runtime_of
    from upreid.train.finetune import finetune
    from upreid.train.pretrain import pretrain

    params = load_params(work / "params.yaml")
    assert params.profile == "quick"
    data_root = work / params.data.root
    pp = pretrain_variant(params.pretrain, "upreid")
    pretrain(
        pp, read_pool(data_root / "luperson"), work / "ref-pre", params.seed, runtime_of(params)
    )
    ours = torch.load(pre / "backbone.pt", map_location="cpu", weights_only=True)
    ref = torch.load(work / "ref-pre" / "backbone.pt", map_location="cpu", weights_only=True)
    ours, ref = ours["backbone"], ref["backbone"]
    assert ours.keys() == ref.keys()
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key

    # evaluated as the pipeline evaluates that run (pipeline.curves: BoT is in no figure)
    run = FinetuneRun("bot", "market1501", "moco", params.seed)
    mp = dataclasses.replace(params.finetune.bot, eval_every=eval_every(params, run))
    metrics = finetune(
        "bot",
        mp,
        params.finetune.arch,
        read_dataset("market1501", data_root / "market1501"),
        "moco",
        str(pre.parent / "moco" / "backbone.pt"),
        work / "ref-fine",
        params.eval,
        params.seed,
        runtime=runtime_of(params),
        workers=params.finetune.workers,
    )
    saved = json.loads((fine / "result.json").read_text())["metrics"]
    for key in ("mAP", "rank1", "mINP", "best_mAP"):
        assert saved[key] == metrics[key], (key, saved[key], metrics[key])
