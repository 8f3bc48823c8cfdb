"""Benchmark: pre-training images/s of MoCo v2 and UP-ReID side by side, and the data loader.

    python benchmarks/bench_pretrain.py [--arch resnet18 --height 128 --width 64 --batch 64]

Same batch, image size, threads and memory format for both; medians over steps after a warm-up.
The loader is measured alone (the three views of METHOD.md's augmentation from JPEGs written by
the generator). The last line printed is the cost ratio UP-ReID / MoCo per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from upreid.data.dataset import ImageDataset, collate
from upreid.data.records import Record
from upreid.data.synth import Shot, Writer
from upreid.data.transforms import PretrainViews
from upreid.experiments import pretrain_variant
from upreid.params import load_params
from upreid.train.optim import SGD
from upreid.train.pretrain import build_model

ROOT = Path(__file__).resolve().parents[1]


def step_rate(variant: str, args: argparse.Namespace) -> float:
    """Median images/s of full training steps (forward, backward, SGD, EMA, enqueue)."""
    base = load_params(ROOT / "params.yaml").pretrain
    pp = dataclasses.replace(pretrain_variant(base, variant), arch=args.arch, height=args.height,
                             width=args.width, batch_size=args.batch)
    torch.manual_seed(0)
    model = build_model(pp, 0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = SGD(model.online.parameters(), lr=0.01, momentum=0.9)
    views = [torch.randn(args.batch, 3, args.height, args.width).contiguous(memory_format=fmt)
             for _ in range(3)]
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(*views)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.step_ema()
        times.append(time.perf_counter() - start)
    return args.batch / statistics.median(times[1:])


def loader_rate(args: argparse.Namespace, count: int = 256) -> float:
    """Images/s of the pre-training data loader (decode + three views), ``--workers`` workers."""
    data = load_params(ROOT / "params.yaml").data
    writer = Writer("pool", 0, data, 4)
    with tempfile.TemporaryDirectory() as tmp:
        records = []
        for i in range(count):
            path = Path(tmp) / f"{i:04d}.jpg"
            path.write_bytes(writer.image(Shot(i % 50 + 1, i % 4, i)))
            records.append(Record(str(path), -1, 0))
        loader = DataLoader(ImageDataset(records, PretrainViews(args.height, args.width)),
                            batch_size=args.batch, num_workers=args.workers, collate_fn=collate)
        start = time.perf_counter()
        seen = sum(len(batch[0][0]) for batch in loader)
        return seen / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    moco = step_rate("moco", args)
    print(f"MoCo v2: {moco:.1f} images/s", flush=True)
    upreid = step_rate("upreid", args)
    print(f"UP-ReID: {upreid:.1f} images/s", flush=True)
    loader = loader_rate(args)
    print(f"loader ({args.workers} worker(s)): {loader:.1f} images/s", flush=True)
    result = {"arch": args.arch, "height": args.height, "width": args.width,
              "batch": args.batch, "threads": torch.get_num_threads(),
              "channels_last": args.channels_last, "bf16": args.bf16,
              "moco_images_per_s": moco, "upreid_images_per_s": upreid,
              "loader_images_per_s": loader, "cost_ratio_upreid_over_moco": moco / upreid}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(f"cost per image, UP-ReID / MoCo: {moco / upreid:.2f}x")


if __name__ == "__main__":
    main()
