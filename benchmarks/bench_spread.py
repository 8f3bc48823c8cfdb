"""Benchmark: a stage's runs in one process with every core, or spread over processes that
share the cores, side by side (what `launch.nproc_per_node` buys on a CPU machine).

    python benchmarks/bench_spread.py [--method mgn] [--runs 4] [--procs 2] [--data DIR]

Both modes fine-tune the same ``--runs`` runs (seeds 0, 1, ..., from scratch, the default
profile's params) on the default profile's generated Market-1501 (or ``--data``): "one" in one
process with all cores as threads, "spread" in ``--procs`` processes at once, each with its share
of the cores and every ``procs``-th run. Each process pays its own imports, as a stage does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """Fine-tune the runs of ``args.seeds`` one after another; their mAP to ``args.out``."""
    import torch

    from upreid.data.readers import read_market1501
    from upreid.params import load_params
    from upreid.runtime import Runtime
    from upreid.train.finetune import finetune

    torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params.yaml", "default")
    fp = params.finetune
    data = read_market1501(args.data)
    maps = {}
    for seed in args.seeds:
        metrics = finetune(
            args.method,
            getattr(fp, args.method),
            fp.arch,
            data,
            "scratch",
            None,
            args.out / f"s{seed}",
            params.eval,
            seed,
            runtime=Runtime(torch.device("cpu"), "fp32", params.runtime.channels_last),
            checkpoint_every=fp.checkpoint_every,
            image_cache_mb=fp.image_cache_mb,
        )
        maps[seed] = metrics["mAP"]
    (args.out / "maps.json").write_text(json.dumps(maps))


def launch(args: argparse.Namespace, out: Path, seeds: list[int], threads: int) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", "--method", args.method, "--data", str(args.data)]
    cmd += ["--out", str(out), "--threads", str(threads), "--seeds", *map(str, seeds)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen(cmd, env=env)


def mode(args: argparse.Namespace, tmp: Path, name: str, procs: int, cores: int) -> dict:
    seeds = list(range(args.runs))
    threads = max(1, cores // procs)
    start = time.perf_counter()
    outs = [tmp / f"{name}-{rank}" for rank in range(procs)]
    running = [launch(args, out, seeds[rank::procs], threads) for rank, out in enumerate(outs)]
    if any(p.wait() != 0 for p in running):
        raise RuntimeError(f"a {name} worker failed")
    wall = time.perf_counter() - start
    maps = {k: v for out in outs for k, v in json.loads((out / "maps.json").read_text()).items()}
    return {
        "processes": procs,
        "threads_each": threads,
        "wall_s": round(wall, 1),
        "mAP": dict(sorted(maps.items())),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", default="mgn")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--data", type=Path, help="a Market-1501 folder (default: generate one)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--seeds", type=int, nargs="*", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    with tempfile.TemporaryDirectory(prefix="upreid-bench-spread-") as tmp:
        if args.data is None:
            from upreid.data.synth import synthesize
            from upreid.params import load_params

            synthesize(load_params(ROOT / "params.yaml", "default").data, Path(tmp) / "data")
            args.data = Path(tmp) / "data" / "market1501"
        one = mode(args, Path(tmp), "one", 1, cores)
        spread = mode(args, Path(tmp), "spread", args.procs, cores)
    result = {
        "method": args.method,
        "runs": args.runs,
        "cores": cores,
        "one": one,
        "spread": spread,
        "spread_speedup": round(one["wall_s"] / spread["wall_s"], 3),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
