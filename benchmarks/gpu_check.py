"""GPU check: the paper's geometry on one accelerator, in at most 8 minutes.

    python benchmarks/gpu_check.py [--json out.json] [--markdown out.md]   # on a CUDA machine
    python benchmarks/gpu_check.py --tiny                                  # same code, CPU, seconds

At ResNet-50, 256x128, bf16 autocast, channels_last it measures:
- MoCo v2 and UP-ReID pre-training: the model step alone on device-resident batches (images/s,
  peak GPU memory, model FLOP utilisation against the GPU's dense bf16 peak, FLOPs counted by
  ``torch.utils.flop_counter`` on one step) and the real training loop (``pretrain()``) over a
  generated pool with loader processes, for a few hundred steps;
- one BoT fine-tuning epoch through ``finetune()`` on a generated Market-1501-style set
  (images/s);
- a Market-1501-scale evaluation (3,368 queries x 15,913 gallery, 2048-d) on the device:
  distances and ranking, without and with k-reciprocal re-ranking (seconds);
- the ``cuda``-marked tests (``pytest -m cuda``): every loop's model and batches on the GPU.

``--tiny`` runs every part on the CPU at toy sizes (tests call it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from upreid.data.records import Record  # noqa: E402
from upreid.experiments import pretrain_variant  # noqa: E402
from upreid.params import Params, load_params  # noqa: E402
from upreid.runtime import Runtime  # noqa: E402

# Dense bf16 tensor-core peaks (vendor datasheets, SXM parts), FLOP/s.
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


@dataclasses.dataclass(frozen=True)
class Sizes:
    arch: str
    height: int
    width: int
    batch: int
    steps: int  # model-only steps per method
    loop_steps: int  # real-loop steps per method
    queue: int
    pool: int  # generated pool images
    train_ids: int  # generated fine-tuning identities
    queries: int
    gallery: int
    dim: int
    workers: int


FULL = Sizes("resnet50", 256, 128, 128, 30, 200, 65536, 4096, 150, 3368, 15913, 2048, 12)
TINY = Sizes("resnet18", 32, 16, 8, 3, 4, 64, 32, 4, 40, 120, 32, 0)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def pretrain_params(params: Params, variant: str, s: Sizes) -> Any:
    return dataclasses.replace(
        pretrain_variant(params.pretrain, variant),
        arch=s.arch,
        height=s.height,
        width=s.width,
        batch_size=s.batch,
        queue_size=s.queue,
        hidden_dim=2048 if s.arch == "resnet50" else 64,
        bn_splits=1,
        workers=s.workers,
        epochs=1000,
        warmup_epochs=0,
        checkpoint_every_steps=0,
    )


def model_step(params: Params, variant: str, s: Sizes, rt: Runtime) -> dict[str, float]:
    """The model step alone: images/s, FLOPs per step, peak memory."""
    from torch.utils.flop_counter import FlopCounterMode

    from upreid.train.pretrain import build_model

    torch.manual_seed(0)
    model = rt.place(build_model(pretrain_params(params, variant, s), 0))
    opt = torch.optim.SGD(
        model.online.parameters(), lr=0.01, momentum=0.9, fused=rt.device.type == "cuda"
    )
    views = [rt.images(torch.randn(s.batch, 3, s.height, s.width)) for _ in range(3)]

    def step() -> None:
        with rt.autocast():
            loss = model(*views)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.step_ema()

    for _ in range(3):  # warm-up (cuDNN autotuning, allocator)
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    reset_peak(rt.device)
    sync(rt.device)
    times = []
    for _ in range(s.steps):
        start = time.perf_counter()
        step()
        sync(rt.device)
        times.append(time.perf_counter() - start)
    rate = s.batch / statistics.median(times)
    flops = float(counter.get_total_flops())
    peak = peak_flops(rt.device)
    return {
        "images_per_s": rate,
        "flops_per_step": flops,
        "peak_gib": peak_gib(rt.device),
        "mfu": flops * rate / s.batch / peak if peak else float("nan"),
    }


def write_pool(root: Path, s: Sizes, params: Params) -> list[Record]:
    from upreid.data.synth import Shot, Writer

    data = dataclasses.replace(params.data, height=s.height, width=s.width)
    writer = Writer("pool", 0, data, 8)
    records = []
    for i in range(s.pool):
        path = root / f"{i:05d}.jpg"
        path.write_bytes(writer.image(Shot(i % 500 + 1, i % 8, i)))
        records.append(Record(str(path), -1, i % 8))
    return records


def loop_rate(
    params: Params, variant: str, s: Sizes, rt: Runtime, records: list[Record], out: Path
) -> float:
    """Images/s of the real pre-training loop (loader, transforms, checkpoints off)."""
    from upreid.train.pretrain import pretrain

    summary = pretrain(
        pretrain_params(params, variant, s), records, out, 0, rt, max_steps=s.loop_steps
    )
    return float(summary["images_per_s"])


def bot_epoch(params: Params, s: Sizes, rt: Runtime, root: Path) -> dict[str, float]:
    """One BoT fine-tuning epoch (and its evaluation) through ``finetune()``."""
    from upreid.data.readers import read_market1501
    from upreid.data.synth import Writer, write_market_style
    from upreid.progress import Progress
    from upreid.train.finetune import finetune

    data = dataclasses.replace(params.data, height=s.height, width=s.width)
    sp = dataclasses.replace(
        data.market1501,
        train_identities=s.train_ids,
        test_identities=max(4, s.train_ids // 4),
        distractors=0,
    )
    write_market_style(
        Writer("market1501", 0, data, sp.cameras),
        root / "market1501",
        sp,
        list(range(1, sp.cameras + 1)),
        "jpg",
        Progress(1, "synth"),
    )
    market = read_market1501(root / "market1501")
    mp = dataclasses.replace(
        params.finetune.bot,
        height=s.height,
        width=s.width,
        epochs=1,
        eval_every=1,
        p=16 if s is FULL else 4,
        k=4,
    )
    start = time.perf_counter()
    result = finetune(
        "bot",
        mp,
        s.arch,
        market,
        "scratch",
        None,
        root / "bot",
        params.eval,
        0,
        rt,
        workers=s.workers,
    )
    return {
        "train_images_per_s": float(result["images_per_s"]),
        "train_images": float(result["train_images"]),
        "wall_s": time.perf_counter() - start,
    }


def evaluation(s: Sizes, rt: Runtime, params: Params) -> dict[str, float]:
    """Market-1501-scale distances + ranking on the device, without and with re-ranking."""
    from upreid.eval.evaluate import _distances
    from upreid.eval.metrics import evaluate_ranking

    gen = torch.Generator().manual_seed(0)
    ids = 750 if s is FULL else 10
    centres = torch.nn.functional.normalize(torch.randn(ids, s.dim, generator=gen), dim=1)
    q_pids = torch.randint(0, ids, (s.queries,), generator=gen)
    g_pids = torch.randint(0, ids, (s.gallery,), generator=gen)
    q_cams = torch.randint(0, 6, (s.queries,), generator=gen)
    g_cams = torch.randint(0, 6, (s.gallery,), generator=gen)

    def feats(pids: torch.Tensor) -> torch.Tensor:
        noisy = centres[pids] + 0.08 * torch.randn(len(pids), s.dim, generator=gen)
        return torch.nn.functional.normalize(noisy, dim=1).to(rt.device)

    qf, gf = feats(q_pids), feats(g_pids)
    out: dict[str, float] = {}
    for rerank in (False, True):
        ev = dataclasses.replace(params.eval, rerank=rerank)
        sync(rt.device)
        start = time.perf_counter()
        dist = _distances(qf, gf, ev)
        metrics = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, chunk=ev.chunk)
        sync(rt.device)
        key = "rerank" if rerank else "plain"
        out[f"{key}_s"] = time.perf_counter() - start
        out[f"{key}_mAP"] = float(metrics["mAP"])
    return out


def cuda_tests(tiny: bool) -> dict[str, Any]:
    """``pytest -m cuda`` (on a CUDA machine; nothing to run with --tiny)."""
    if tiny or not torch.cuda.is_available():
        return {"ran": False}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "cuda",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    return {
        "ran": True,
        "returncode": proc.returncode,
        "summary": (proc.stdout.strip().splitlines() or [""])[-1],
    }


def markdown(r: dict[str, Any]) -> str:
    pre = r["pretrain"]
    lines = [
        f"### GPU check ({r['device_name']}, torch {r['torch']}, {r['sizes']['arch']} "
        f"{r['sizes']['height']}x{r['sizes']['width']}, bf16, channels_last)",
        "",
        "| pre-training | model step images/s | real loop images/s | FLOPs/image "
        "(fwd+bwd) | MFU | peak GPU memory |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("moco", "upreid"):
        m = pre[name]
        lines.append(
            f"| {name} | {m['images_per_s']:.0f} | {m['loop_images_per_s']:.0f} | "
            f"{m['flops_per_step'] / r['sizes']['batch'] / 1e9:.1f} G | "
            f"{100 * m['mfu']:.1f} % | {m['peak_gib']:.1f} GiB |"
        )
    lines += [
        "",
        f"UP-ReID / MoCo cost per image: {r['cost_ratio_upreid_over_moco']:.2f}x (model step).",
        "",
        f"BoT, one fine-tuning epoch: {r['bot']['train_images_per_s']:.0f} images/s "
        f"({r['bot']['train_images']:.0f} images).",
        "",
        f"Market-1501-scale evaluation on the GPU: {r['eval']['plain_s']:.2f} s, with "
        f"re-ranking {r['eval']['rerank_s']:.2f} s.",
        "",
        f"`pytest -m cuda`: {r['cuda_tests'].get('summary', 'not run')}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (seconds)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    s = TINY if args.tiny else FULL
    if not args.tiny and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; run with --tiny on a CPU machine")
    device = torch.device("cpu" if args.tiny else "cuda:0")
    rt = Runtime(device, "bf16", True)
    params = load_params(ROOT / "params.yaml")
    torch.backends.cudnn.benchmark = True
    began = time.perf_counter()
    result: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "sizes": dataclasses.asdict(s),
        "pretrain": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        records = write_pool(Path(tmp), s, params)
        for variant in ("moco", "upreid"):
            m = model_step(params, variant, s, rt)
            m["loop_images_per_s"] = loop_rate(
                params, variant, s, rt, records, Path(tmp) / f"run-{variant}"
            )
            result["pretrain"][variant] = m
            print(
                f"{variant}: model step {m['images_per_s']:.0f} images/s, loop "
                f"{m['loop_images_per_s']:.0f} images/s, MFU {100 * m['mfu']:.1f} %, peak "
                f"{m['peak_gib']:.1f} GiB",
                flush=True,
            )
        result["cost_ratio_upreid_over_moco"] = (
            result["pretrain"]["moco"]["images_per_s"]
            / result["pretrain"]["upreid"]["images_per_s"]
        )
        result["bot"] = bot_epoch(params, s, rt, Path(tmp))
        print(f"bot: {result['bot']['train_images_per_s']:.0f} images/s", flush=True)
    result["eval"] = evaluation(s, rt, params)
    print(
        f"eval: {result['eval']['plain_s']:.2f} s, re-ranked {result['eval']['rerank_s']:.2f} s",
        flush=True,
    )
    result["cuda_tests"] = cuda_tests(args.tiny)
    result["wall_s"] = time.perf_counter() - began
    text = markdown(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
