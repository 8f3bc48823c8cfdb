"""Benchmark: fine-tuning throughput per method (training steps and inference), side by side.

    python benchmarks/bench_finetune.py [--arch resnet18 --height 128 --width 64]

Same batch (P x K), image size, threads and memory format for BoT, MGN, BDB and PCB; medians
over steps after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from upreid.losses.reid import reid_loss
from upreid.models.reid import METHODS, build_reid_model
from upreid.train.optim import Adam


def rates(method: str, args: argparse.Namespace) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_reid_model(method, args.arch, 100)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = Adam([p for p in model.parameters() if p.requires_grad], lr=3.5e-4)
    batch = args.p * args.k
    x = torch.randn(batch, 3, args.height, args.width).contiguous(memory_format=fmt)
    y = torch.arange(args.p).repeat_interleave(args.k)
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        loss, _ = reid_loss(model(x), y, 0.1, 0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    model.eval()
    infer = []
    with torch.no_grad():
        for _ in range(args.steps + 1):
            start = time.perf_counter()
            model(x)
            infer.append(time.perf_counter() - start)
    return batch / statistics.median(times[1:]), batch / statistics.median(infer[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--p", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result: dict[str, object] = {"arch": args.arch, "height": args.height, "width": args.width,
                                 "batch": args.p * args.k, "threads": torch.get_num_threads()}
    for method in METHODS:
        train, infer = rates(method, args)
        result[method] = {"train_images_per_s": train, "inference_images_per_s": infer}
        print(f"{method}: train {train:.1f} images/s, inference {infer:.1f} images/s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
