"""Benchmark: one whole fine-tuning run with the runtime options off and on, side by side.

    python benchmarks/bench_run.py [--methods bot mgn] [--repeats 2] [--data DIR]

"off": a checkpoint (``last.pt``) every epoch and every image decoded at each read; "on": the
default profile's ``finetune.checkpoint_every`` and ``finetune.image_cache_mb``. Same data (the
default profile's generated Market-1501, or ``--data``), params, seed and init (scratch); the
settings alternate, and each run's result must be the same either way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import torch

    from upreid.data.readers import read_market1501
    from upreid.data.synth import synthesize
    from upreid.params import load_params
    from upreid.runtime import Runtime
    from upreid.train.finetune import finetune

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--methods", nargs="+", default=["bot", "mgn"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data", type=Path, help="a Market-1501 folder (default: generate one)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml", "default")
    fp = params.finetune
    with tempfile.TemporaryDirectory(prefix="upreid-bench-run-") as tmp:
        if args.data is None:
            synthesize(params.data, Path(tmp) / "data")
            args.data = Path(tmp) / "data" / "market1501"
        data = read_market1501(args.data)
        settings = {
            "off": {"checkpoint_every": 1, "image_cache_mb": 0},
            "on": {"checkpoint_every": fp.checkpoint_every, "image_cache_mb": fp.image_cache_mb},
        }
        result: dict[str, object] = {"settings": settings, "images": len(data.train)}
        for method in args.methods:
            mp = getattr(fp, method)
            walls: dict[str, list[float]] = {k: [] for k in settings}
            maps: dict[str, set[float]] = {k: set() for k in settings}
            for rep in range(args.repeats):
                for name in ("off", "on") if rep % 2 == 0 else ("on", "off"):
                    out = Path(tmp) / f"{method}-{name}-{rep}"
                    start = time.perf_counter()
                    metrics = finetune(
                        method,
                        mp,
                        fp.arch,
                        data,
                        "scratch",
                        None,
                        out,
                        params.eval,
                        0,
                        runtime=Runtime(torch.device("cpu"), "fp32", params.runtime.channels_last),
                        **settings[name],
                    )
                    walls[name].append(time.perf_counter() - start)
                    maps[name].add(metrics["mAP"])
            off, on = statistics.median(walls["off"]), statistics.median(walls["on"])
            result[method] = {
                "epochs": mp.epochs,
                "off_wall_s": round(off, 2),
                "on_wall_s": round(on, 2),
                "speedup": round(off / on, 3),
                "same_mAP": maps["off"] == maps["on"] and len(maps["on"]) == 1,
            }
            print(
                f"{method}: off {off:.2f} s, on {on:.2f} s ({off / on:.2f}x), same mAP "
                f"{result[method]['same_mAP']}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
