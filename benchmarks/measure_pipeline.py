"""Wall time and peak memory of `dvc repro` for one profile, in a fresh copy of the project.

    python benchmarks/measure_pipeline.py --profile quick [--json out.json] [--keep DIR]

Peak memory is the largest resident set of any process of the run (stages run one at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"^Running stage '(?P<name>[^']+)'")


def copy_project(dest: Path, profile: str) -> None:
    """The tracked files of the project (no data, runs or store) with ``profile`` selected."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file() and not name.startswith(("reports/", "metrics/")) and name != "dvc.lock":
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["profile"] = profile
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "upreid",
        "GIT_AUTHOR_EMAIL": "dev@upreid.local",
        "GIT_COMMITTER_NAME": "upreid",
        "GIT_COMMITTER_EMAIL": "dev@upreid.local",
    }
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)


def repro(workdir: Path, log_file: Path | None = None) -> dict[str, Any]:
    """Run ``dvc repro`` in ``workdir``; wall seconds, peak RSS (GiB) and each stage's seconds
    (stages run one at a time: a stage lasts from its "Running stage" line to the next)."""
    dvc = Path(sys.executable).with_name("dvc")
    # the copy's own library, not the (editable) installed one: the checkout may change meanwhile
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{dvc.parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(workdir),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.monotonic()
    marks: list[tuple[str, float]] = []
    out = open(log_file, "w") if log_file else None  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [str(dvc), "repro"],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            stage = STAGE_LINE.match(line)
            if stage:
                marks.append((stage["name"], time.monotonic()))
            if out:
                out.write(line)
        proc.wait()
    finally:
        if out:
            out.close()
    end = time.monotonic()
    wall = end - start
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro failed ({proc.returncode}) in {workdir}; see {log_file}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    ends = [t for _, t in marks[1:]] + [end]
    stages = {name: round(e - t, 1) for (name, t), e in zip(marks, ends, strict=True)}
    return {
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(peak_kib / 2**20, 2),
        "stages_s": stages,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix=f"upreid-{args.profile}-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_project(work, args.profile)
    result = {"profile": args.profile, **repro(work, work / "repro.log")}
    second = repro(work)  # nothing to do but the always-run stages
    result["second_repro_wall_s"] = second["wall_s"]
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
