"""The stage scripts' quick exit: exit handlers, logs and output survive it; a failure
exits the usual way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import atexit, logging, sys
sys.path.insert(0, {stages!r})
from _common import run
from upreid.progress import setup_logging

def main():
    setup_logging()
    atexit.register(lambda: open({marker!r}, "w").write("handler ran"))
    logging.getLogger("upreid").info("stage log line")
    print("stage output", end="")  # no newline: still flushed
    if {fail!r}:
        raise RuntimeError("stage failed on purpose")

run(main)
"""


def _stage(tmp_path: Path, fail: bool) -> subprocess.CompletedProcess[str]:
    marker = tmp_path / "marker.txt"
    script = tmp_path / "stage.py"
    script.write_text(SCRIPT.format(stages=str(ROOT / "stages"), marker=str(marker), fail=fail))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


def test_a_finished_stage_runs_exit_handlers_and_flushes(tmp_path: Path) -> None:
    proc = _stage(tmp_path, fail=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "stage output"
    assert "stage log line" in proc.stdout + proc.stderr
    assert (tmp_path / "marker.txt").read_text() == "handler ran"


def test_a_failed_stage_exits_with_its_traceback(tmp_path: Path) -> None:
    proc = _stage(tmp_path, fail=True)
    assert proc.returncode == 1
    assert "RuntimeError: stage failed on purpose" in proc.stderr
    assert (tmp_path / "marker.txt").read_text() == "handler ran"


def test_an_unreachable_tracking_server_fails_a_stage_in_seconds(tmp_path: Path) -> None:
    import os
    import shutil
    import time

    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # nothing listens there
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "stages/data.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "is unreachable" in proc.stderr
    assert time.monotonic() - start < 60
    assert not (tmp_path / "data").exists()  # failed before touching anything
