"""Benchmark: pre-training images/s of MoCo v2 and UP-ReID in fp32 and bf16, side by side, and
the data loader.

    python benchmarks/bench_pretrain.py [--arch resnet18 --height 128 --width 64 --batch 64]

Same batch, image size, threads and memory format for every case; the fp32 and bf16 steps of a
method alternate in one process (so a busy neighbour slows both alike); medians over steps after
a warm-up. The loader is measured alone (the three views of the pre-training augmentation from
JPEGs written by the generator). The last line printed is the cost ratio UP-ReID / MoCo.
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
from upreid.runtime import (
    Runtime,
    avoid_amx_bf16_convolution,
    cpu_has_native_bf16,
    resolve_device,
)
from upreid.train.pretrain import build_model

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def step_rates(variant: str, args: argparse.Namespace) -> dict[str, float]:
    """Median images/s of full training steps (forward, backward, SGD, EMA, enqueue) in fp32
    and in bf16 autocast, steps interleaved."""
    base = load_params(ROOT / "params.yaml").pretrain
    pp = dataclasses.replace(
        pretrain_variant(base, variant),
        arch=args.arch,
        height=args.height,
        width=args.width,
        batch_size=args.batch,
    )
    device = resolve_device(args.device)
    cases = {}
    for precision in PRECISIONS:
        torch.manual_seed(0)
        rt = Runtime(device, precision, args.channels_last)
        model = rt.place(build_model(pp, 0))
        opt = torch.optim.SGD(model.online.parameters(), lr=0.01, momentum=0.9)
        cases[precision] = (rt, model, opt)
    views = [torch.randn(args.batch, 3, args.height, args.width) for _ in range(3)]
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(args.steps + 1):
        for precision, (rt, model, opt) in cases.items():
            x = [rt.images(v) for v in views]
            sync(device)
            start = time.perf_counter()
            with rt.autocast():
                loss = model(*x)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.step_ema()
            sync(device)
            times[precision].append(time.perf_counter() - start)
    return {p: args.batch / statistics.median(t[1:]) for p, t in times.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        loader = DataLoader(
            ImageDataset(records, PretrainViews(args.height, args.width)),
            batch_size=args.batch,
            num_workers=args.workers,
            collate_fn=collate,
        )
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
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.device == "cpu":
        avoid_amx_bf16_convolution()  # as the project runs CPU bf16 (upreid/runtime.py)
    result: dict[str, object] = {
        "arch": args.arch,
        "height": args.height,
        "width": args.width,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "channels_last": args.channels_last,
        "device": args.device,
        "cpu_native_bf16": cpu_has_native_bf16(),
    }
    for variant, name in (("moco", "MoCo v2"), ("upreid", "UP-ReID")):
        rates = step_rates(variant, args)
        result[f"{variant}_images_per_s"] = rates
        print(
            f"{name}: fp32 {rates['fp32']:.1f}, bf16 {rates['bf16']:.1f} images/s "
            f"(bf16/fp32 {rates['bf16'] / rates['fp32']:.2f}x)",
            flush=True,
        )
    loader = loader_rate(args)
    print(f"loader ({args.workers} worker(s)): {loader:.1f} images/s", flush=True)
    moco, upreid = result["moco_images_per_s"], result["upreid_images_per_s"]
    ratio = {p: moco[p] / upreid[p] for p in PRECISIONS}  # type: ignore[index]
    result.update(loader_images_per_s=loader, cost_ratio_upreid_over_moco=ratio)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(f"cost per image, UP-ReID / MoCo: fp32 {ratio['fp32']:.2f}x, bf16 {ratio['bf16']:.2f}x")


if __name__ == "__main__":
    main()
