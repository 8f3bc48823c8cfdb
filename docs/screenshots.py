"""Take the README's screenshots of the MLflow UI from a finished run of the pipeline.

Run it after ``dvc repro`` of a profile (the quick one is enough), from the repository root::

    python docs/screenshots.py PROJECT_DIR [--out docs/images] [--profile quick]

PROJECT_DIR is the folder that holds ``mlflow.db`` (the project folder itself after
``dvc repro``). The script starts ``mlflow server`` on a free local port against that store,
looks up the experiment ``upreid-<profile>`` and its ``finetune/mgn/cuhk03/*`` runs with the
MLflow client, and photographs three pages with headless Chromium:

- ``mlflow-runs.png``: the experiment's training runs (the runs table);
- ``mlflow-run-metrics.png``: the mAP chart of the run ``finetune/mgn/cuhk03/upreid/s0``;
- ``mlflow-compare.png``: the run-comparison view of the ``finetune/mgn/cuhk03/*`` runs.

The server is stopped at the end, also on errors. Needs ``chromium`` (or ``--chromium PATH``).

The MLflow UI only renders in headless Chromium under a virtual time budget; the charts need
a long one (minutes of virtual time, which takes a while on a slow machine). Look at the
images: a page that was still loading shows a spinner, so raise ``--chart-budget`` and rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
from PIL import Image

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
]
# The fine-tuning runs shown on the chart and in the comparison, in this order.
COMPARE_INITS = ["moco", "upreid", "cc", "icc", "nohm"]
METRIC = "mAP"


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, port: int, workdir: Path) -> subprocess.Popen:
    """Start ``mlflow server`` on ``db`` in its own process group (so it can be stopped whole)."""
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{db}",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]
    log = open(workdir / "server.log", "wb")
    # cwd: a scratch folder, so the server's default artifact folder lands nowhere that matters
    return subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server and its workers (SIGTERM to the group, SIGKILL if it lingers)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until the server answers ``/health`` (it takes ~10-20 s on a slow machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise TimeoutError(f"mlflow server did not answer {base}/health in {timeout:.0f} s")


def json_param(value: object) -> str:
    """A JSON value as the UI's hash-route query parameters spell it (percent-encoded)."""
    return urllib.parse.quote(json.dumps(value, separators=(",", ":")), safe="")


def non_white_fraction(png: Path) -> float:
    """The share of pixels that are not (near) white: a page still loading is almost blank."""
    with Image.open(png) as im:
        grey = im.convert("L")
        hist = grey.histogram()
    return 1.0 - sum(hist[245:]) / sum(hist)


def shrink(png: Path) -> None:
    """Re-save the screenshot as a 256-colour PNG (a UI page loses nothing visible)."""
    with Image.open(png) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def screenshot(chromium: str, url: str, out: Path, budget_ms: int,
               size: tuple[int, int] = (1400, 900)) -> None:
    """Load ``url`` in headless Chromium for ``budget_ms`` of virtual time and save a PNG."""
    with tempfile.TemporaryDirectory(prefix="upreid-chromium-") as profile:
        cmd = [
            chromium, *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={out}",
            url,
        ]
        out.unlink(missing_ok=True)
        t0 = time.monotonic()
        # virtual time runs ahead of the clock when the page is idle; allow for a slow machine
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=budget_ms / 1000 + 300)
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot for {url}")
    shrink(out)
    print(f"{out}: {out.stat().st_size // 1024} KB, {time.monotonic() - t0:.0f} s, "
          f"{non_white_fraction(out):.0%} non-white", flush=True)


def find_runs(client: mlflow.MlflowClient, experiment_id: str) -> dict[str, str]:
    """Run name -> run id for the experiment's ``finetune/mgn/cuhk03/<init>/s0`` runs."""
    runs = client.search_runs(
        [experiment_id],
        filter_string="attributes.run_name LIKE 'finetune/mgn/cuhk03/%'",
        max_results=100,
    )
    return {r.info.run_name: r.info.run_id for r in runs}


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project_dir", type=Path, help="folder holding mlflow.db")
    ap.add_argument("--out", type=Path, default=here / "images", help="where the PNGs go")
    ap.add_argument("--profile", default="quick", help="experiment upreid-<profile>")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--table-budget", type=int, default=20_000,
                    help="virtual ms for the runs table and the comparison (default 20000)")
    ap.add_argument("--chart-budget", type=int, default=150_000,
                    help="virtual ms for the metric chart (default 150000)")
    args = ap.parse_args(argv)

    db = (args.project_dir / "mlflow.db").resolve()
    if not db.exists():
        ap.error(f"{db} does not exist; run `dvc repro` in the project first")
    args.out.mkdir(parents=True, exist_ok=True)

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp_name = f"upreid-{args.profile}"
    exp = client.get_experiment_by_name(exp_name)
    if exp is None:
        ap.error(f"no experiment {exp_name!r} in {db}")
    eid = exp.experiment_id
    runs = find_runs(client, eid)
    chart_run = runs.get("finetune/mgn/cuhk03/upreid/s0")
    compared = [runs[k] for i in COMPARE_INITS if (k := f"finetune/mgn/cuhk03/{i}/s0") in runs]
    if chart_run is None or len(compared) < 2:
        ap.error(f"the finetune/mgn/cuhk03/* runs are missing from {exp_name}")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    pages = [
        ("mlflow-runs.png", args.table_budget,
         f"{base}/#/experiments/{eid}/runs?workflowType=machine_learning"),
        ("mlflow-run-metrics.png", args.chart_budget,
         f"{base}/#/metric?runs={json_param([chart_run])}&metric={json_param(METRIC)}"
         f"&experiments={json_param([eid])}&plot_metric_keys={json_param([METRIC])}"),
        ("mlflow-compare.png", args.table_budget,
         f"{base}/#/compare-runs?runs={json_param(compared)}&experiments={json_param([eid])}"),
    ]

    with tempfile.TemporaryDirectory(prefix="upreid-mlflow-") as work:
        server = start_server(db, port, Path(work))
        try:
            wait_healthy(base, server)
            for name, budget, url in pages:
                print(url, flush=True)
                screenshot(args.chromium, url, args.out / name, budget)
        except BaseException:
            log = Path(work, "server.log")
            if log.exists():
                sys.stderr.write(log.read_text(errors="replace")[-3000:])
            raise
        finally:
            stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
