"""Take the README's screenshots of the MLflow UI from a finished run of the pipeline.

Run it from the repository root after ``dvc repro`` of a profile (the quick one is enough)::

    python docs/screenshots.py PROJECT_DIR [--out docs/images] [--profile quick]

PROJECT_DIR is the folder that holds ``mlflow.db`` (the project folder itself after
``dvc repro``). The script copies that store to a scratch folder (it never writes to the
project's store), starts ``mlflow server`` on a free local port against the copy, looks up
the experiment ``upreid-<profile>`` and its fine-tuning runs with the MLflow client, and
photographs three pages with headless Chromium (``chromium``, or ``--chromium PATH``):

- ``mlflow-runs.png``: the experiment's training runs, best mAP first, with the ``init``
  parameter and the ``best_mAP`` and ``best_rank1`` metrics as columns (a shared view,
  what the runs page's Share button makes, stored as an experiment tag of the copy);
- ``mlflow-run-metrics.png``: the mAP chart of a fine-tuning run (the ``upreid`` run
  with the most evaluated epochs);
- ``mlflow-compare.png``: the run-comparison view of ``finetune/mgn/cuhk03/*`` runs
  (MoCo and UP-ReID initialisations and ablations).

The browser reaches the server under a host name of its own (``--host-resolver-rules``)
rather than 127.0.0.1: for a local address the UI opens its Assistant panel, which would
cover a third of every page. The server is stopped at the end, also on errors.

The MLflow UI only renders in headless Chromium under a virtual time budget. Look at the
images: a page that was still loading shows a spinner; raise ``--budget`` and rerun.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
from PIL import Image

from upreid import tracking

HOST = "upreid-mlflow"  # the name the browser uses for the server (mapped to 127.0.0.1)
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
    f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
]
SHARE_KEY = "readme"
# The runs table: all runs, best mAP first, with a wide Run Name column and a few columns
# that tell the runs apart (the UI's view state; see the module docstring).
RUNS_VIEW = {
    "searchFilter": "",
    "orderByKey": "metrics.`best_mAP`",
    "orderByAsc": False,
    "selectedColumns": [
        "attributes.`Dataset`",
        "params.`init`",
        "metrics.`best_mAP`",
        "metrics.`best_rank1`",
    ],
    "columnOrder": ["attributes.`Run Name`"],
    "columnWidths": {"attributes.`Run Name`": 270},
}
COMPARED = "finetune/mgn/cuhk03"  # the runs of the comparison, one per init below
COMPARED_INITS = ["moco", "upreid", "cc", "icc", "nohm"]
METRIC = "mAP"


@dataclass
class Page:
    file: str
    url: str
    size: tuple[int, int]
    budget_ms: int


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(db: Path, dest: Path) -> Path:
    """Copy the SQLite store consistently (a pipeline may be writing to it)."""
    copy = dest / "mlflow.db"
    src, dst = sqlite3.connect(f"file:{db}?mode=ro", uri=True), sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return copy


def server_args(port: int) -> list[str]:
    """The server only answers host names it knows, and only takes the UI's POSTs (run
    searches) from origins it knows: the browser's name for it is ``HOST``."""
    allowed = ["--allowed-hosts", f"{HOST}:{port},127.0.0.1:{port}"]
    return [*allowed, "--cors-allowed-origins", f"http://{HOST}:{port}"]


def q(value: object) -> str:
    """A JSON value as the UI's hash-route query parameters spell it (percent-encoded)."""
    return urllib.parse.quote(json.dumps(value, separators=(",", ":")), safe="")


def screenshot(chromium: str, page: Page, out_dir: Path) -> Path:
    """Load the page in headless Chromium for its virtual time budget and save a PNG."""
    out = out_dir / page.file
    out.unlink(missing_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="upreid-chromium-") as profile:
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={page.size[0]},{page.size[1]}",
            f"--virtual-time-budget={page.budget_ms}",
            f"--screenshot={out}",
            page.url,
        ]
        subprocess.run(
            cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600
        )
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot of {page.url}")
    # 256 colours lose nothing visible on a UI page and make the file a third of the size
    with Image.open(out) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(out, optimize=True)
    print(f"{out} ({out.stat().st_size // 1024} KB, {time.monotonic() - t0:.0f} s)", flush=True)
    return out


def chart_run(client: mlflow.MlflowClient, runs: dict[str, str]) -> str:
    """The fine-tuning run whose mAP chart is shown: an ``upreid`` run with the most epochs."""
    candidates = sorted(
        (k for k in runs if k.startswith("finetune/") and "/upreid/" in k),
        key=lambda k: (not k.startswith(COMPARED), k),
    )  # mgn/cuhk03 first
    steps = {
        k: len({m.step for m in client.get_metric_history(runs[k], METRIC)}) for k in candidates
    }
    return runs[max(candidates, key=lambda k: steps[k])]  # max keeps the first of a tie


def pages(client: mlflow.MlflowClient, eid: str, port: int, budget_ms: int) -> list[Page]:
    """The three pages to photograph, from the experiment's runs."""
    newest_last = reversed(client.search_runs([eid], max_results=1000))
    runs = {r.info.run_name: r.info.run_id for r in newest_last}  # a rerun replaces a run
    compared = [runs[k] for i in COMPARED_INITS if (k := f"{COMPARED}/{i}/s0") in runs]
    if len(compared) < 2 or not any(k.startswith("finetune/") for k in runs):
        raise SystemExit(f"the experiment lacks the {COMPARED}/* fine-tuning runs")
    base = f"http://{HOST}:{port}/#"
    return [
        Page(
            "mlflow-runs.png",
            f"{base}/experiments/{eid}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={SHARE_KEY}",
            (1400, 1000),
            budget_ms,
        ),
        Page(
            "mlflow-run-metrics.png",
            f"{base}/metric?runs={q([chart_run(client, runs)])}&metric={q(METRIC)}"
            f"&experiments={q([eid])}&plot_metric_keys={q([METRIC])}"
            "&x_axis=step&show_point=true",
            (1400, 700),
            budget_ms,
        ),
        Page(
            "mlflow-compare.png",
            f"{base}/compare-runs?runs={q(compared)}&experiments={q([eid])}",
            (1600, 2020),
            budget_ms,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project_dir", type=Path, help="the folder that holds mlflow.db")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "images",
        help="where the PNGs go (default: docs/images)",
    )
    ap.add_argument("--profile", default="quick", help="photograph upreid-<profile>")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument(
        "--budget", type=int, default=120_000, help="virtual time per page, ms (default 120000)"
    )
    args = ap.parse_args(argv)

    db = (args.project_dir / "mlflow.db").resolve()
    if not db.exists():
        ap.error(f"{db} does not exist; run `dvc repro` in the project first")
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="upreid-screenshots-") as tmp:
        work = Path(tmp)
        copy = snapshot(db, work)
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{copy}")
        exp = client.get_experiment_by_name(f"upreid-{args.profile}")
        if exp is None:
            ap.error(f"no experiment upreid-{args.profile} in {db}")
        client.set_experiment_tag(
            exp.experiment_id, f"mlflow.sharedViewState.{SHARE_KEY}", json.dumps(RUNS_VIEW)
        )
        port = free_port()
        todo = pages(client, exp.experiment_id, port, args.budget)

        log = work / "server.log"
        try:  # cwd: the scratch folder, where the server's default artifact folder harms nothing
            with tracking.serve(
                copy, port=port, extra_args=server_args(port), cwd=work, log_file=log
            ):
                for page in todo:
                    screenshot(args.chromium, page, args.out)
        except BaseException:
            if log.exists():
                sys.stderr.write(log.read_text(errors="replace")[-3000:])
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
