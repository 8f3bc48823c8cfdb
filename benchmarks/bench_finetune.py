"""Benchmark: fine-tuning throughput per method (training steps and inference) in fp32 and
bf16, side by side.

    python benchmarks/bench_finetune.py [--arch resnet18 --height 128 --width 64]

Same batch (P x K), image size, threads and memory format for BoT, MGN, BDB and PCB; the fp32
and bf16 steps of a method alternate in one process; medians over steps after a warm-up.
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
from upreid.runtime import (
    Runtime,
    avoid_amx_bf16_convolution,
    cpu_has_native_bf16,
    resolve_device,
)
from upreid.train.loop import decay_groups

PRECISIONS = ("fp32", "bf16")


def rates(method: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """``{precision: {"train": images/s, "inference": images/s}}``, steps interleaved."""
    device = resolve_device(args.device)
    cases = {}
    for precision in PRECISIONS:
        torch.manual_seed(0)
        rt = Runtime(device, precision, args.channels_last)
        model = rt.place(build_reid_model(method, args.arch, 100))
        opt = torch.optim.Adam(decay_groups(model, 5e-4), lr=3.5e-4)
        cases[precision] = (rt, model, opt)
    batch = args.p * args.k
    x = torch.randn(batch, 3, args.height, args.width)
    y = torch.arange(args.p).repeat_interleave(args.k).to(device)
    train: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    infer: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(args.steps + 1):
        for precision, (rt, model, opt) in cases.items():
            model.train()
            start = time.perf_counter()
            with rt.autocast():
                out = model(rt.images(x))
            loss, _ = reid_loss(out, y, 0.1, 0.3)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sync(device)
            train[precision].append(time.perf_counter() - start)
    for _ in range(args.steps + 1):
        for precision, (rt, model, _opt) in cases.items():
            embed = rt.embedder(model, lambda out: out.embedding)
            start = time.perf_counter()
            with torch.no_grad():
                embed(x)
            sync(device)
            infer[precision].append(time.perf_counter() - start)
    return {
        p: {
            "train": batch / statistics.median(train[p][1:]),
            "inference": batch / statistics.median(infer[p][1:]),
        }
        for p in PRECISIONS
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--p", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.device == "cpu":
        avoid_amx_bf16_convolution()  # as the project runs CPU bf16 (upreid/runtime.py)
    result: dict[str, object] = {
        "arch": args.arch,
        "height": args.height,
        "width": args.width,
        "batch": args.p * args.k,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "cpu_native_bf16": cpu_has_native_bf16(),
    }
    for method in METHODS:
        r = rates(method, args)
        result[method] = r
        print(
            f"{method}: train fp32 {r['fp32']['train']:.1f} / bf16 {r['bf16']['train']:.1f} "
            f"images/s ({r['bf16']['train'] / r['fp32']['train']:.2f}x), inference fp32 "
            f"{r['fp32']['inference']:.1f} / bf16 {r['bf16']['inference']:.1f} images/s",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
