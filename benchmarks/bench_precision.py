"""Benchmark: both precisions train. UP-ReID pre-training and BoT fine-tuning, each for
``--steps`` optimizer steps through the real loops, in fp32 and in bf16 autocast.

    python benchmarks/bench_precision.py [--steps 200 --device cpu --pretrain-lr LR]

On generated data at the default profile's geometry (ResNet-18, 64x32). Prints, per loop and
precision, the mean loss of the first 20 steps (pre-training: the 20 after the queue first
filled, before which a contrastive loss rises as random negatives give way to real ones) and of
the last 20, whether a loss was ever non-finite (the
loop stops on one), the step rate, and for fine-tuning the final mAP.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from upreid.experiments import pretrain_variant  # noqa: E402
from upreid.params import Params, load_params  # noqa: E402
from upreid.runtime import (  # noqa: E402
    Runtime,
    avoid_amx_bf16_convolution,
    resolve_device,
    resolve_precision,
)
from upreid.train.loop import NonFiniteLoss  # noqa: E402


def _summary(losses: list[float], finite: bool, start: int = 0, **extra: float) -> dict[str, Any]:
    """Mean loss of 20 steps from ``start`` and of the last 20."""
    head, tail = losses[start : start + 20], losses[-20:]
    return {
        "steps": len(losses),
        "finite": finite,
        "first_loss": statistics.fmean(head) if head else float("nan"),
        "last_loss": statistics.fmean(tail) if tail else float("nan"),
        **extra,
    }


def pretraining(
    params: Params, rt: Runtime, steps: int, root: Path, lr: float | None = None
) -> dict[str, Any]:
    from upreid.data.readers import read_pool
    from upreid.train.pretrain import pretrain

    pp = dataclasses.replace(
        pretrain_variant(params.pretrain, "upreid"),
        lr=lr or params.pretrain.lr,
        batch_size=32,
        epochs=1000,
        warmup_epochs=0,
        checkpoint_every_steps=0,
    )
    losses: list[float] = []
    finite = True
    try:
        summary = pretrain(
            pp,
            read_pool(root / "luperson"),
            root / f"pre-{rt.precision}",
            0,
            rt,
            on_metrics=lambda m, s: losses.append(m["loss"]),
            max_steps=steps,
        )
    except NonFiniteLoss:
        finite, summary = False, {"images_per_s": float("nan")}
    # a contrastive loss rises while the queue fills with real keys: compare from there on
    filled = -(-pp.queue_size // pp.batch_size)
    return _summary(
        losses,
        finite,
        start=filled,
        images_per_s=float(summary["images_per_s"]),
        queue_filled_at_step=filled,
    )


def finetuning(params: Params, rt: Runtime, steps: int, root: Path) -> dict[str, Any]:
    from upreid.data.readers import read_market1501
    from upreid.train import finetune as ft

    data = read_market1501(root / "market1501")
    mp = params.finetune.bot
    per_epoch = len({r.pid for r in data.train}) // mp.p
    epochs = max(1, -(-steps // max(1, per_epoch)))
    mp = dataclasses.replace(mp, epochs=epochs, eval_every=epochs, milestones=(epochs,))
    losses: list[float] = []
    finite = True
    original = ft.reid_loss

    def recording(*args: Any, **kw: Any) -> Any:
        loss, parts = original(*args, **kw)
        losses.append(float(loss.detach()))
        return loss, parts

    ft.reid_loss = recording  # type: ignore[assignment]
    try:
        result = ft.finetune(
            "bot",
            mp,
            "resnet18",
            data,
            "scratch",
            None,
            root / f"bot-{rt.precision}",
            params.eval,
            0,
            rt,
        )
    except NonFiniteLoss:
        finite, result = False, {"mAP": float("nan"), "images_per_s": float("nan")}
    finally:
        ft.reid_loss = original  # type: ignore[assignment]
    return _summary(
        losses, finite, mAP=float(result["mAP"]), images_per_s=float(result["images_per_s"])
    )


def generate(params: Params, root: Path) -> None:
    from upreid.data.synth import synthesize

    data = dataclasses.replace(
        params.data, pool=dataclasses.replace(params.data.pool, identities=200)
    )
    synthesize(data, root)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--pretrain-lr",
        type=float,
        help="pre-training lr at the benchmark's batch of 32 (default: the profile's pretrain.lr)",
    )
    args = ap.parse_args()
    if args.device == "cpu":  # before the first convolution of the process, or it is too late
        avoid_amx_bf16_convolution()
    params = load_params(ROOT / "params.yaml")
    device = resolve_device(args.device)
    result: dict[str, Any] = {
        "device": str(device),
        "steps": args.steps,
        "pretrain_lr": args.pretrain_lr or params.pretrain.lr,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(params, root)
        for precision in ("fp32", "bf16"):
            rt = Runtime(device, resolve_precision(precision, device), True)
            torch.manual_seed(0)
            pre = functools.partial(pretraining, lr=args.pretrain_lr)
            for name, fn in (("pretrain_upreid", pre), ("finetune_bot", finetuning)):
                r = fn(params, rt, args.steps, root)
                result.setdefault(name, {})[precision] = r
                print(
                    f"{name} {precision}: {r['steps']} steps, loss {r['first_loss']:.3f} -> "
                    f"{r['last_loss']:.3f}, finite {r['finite']}, "
                    f"{r['images_per_s']:.1f} images/s"
                    + (f", mAP {r['mAP']:.1f}" if "mAP" in r else ""),
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
