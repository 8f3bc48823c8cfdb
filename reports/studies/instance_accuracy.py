"""Study: does MoCo learn its own task (instance discrimination) on the generated pool?

A plain MoCo loop over the default profile's pool (constant lr, no schedule, so that lr is the
only difference between runs), printing every 22 steps (one epoch) the mean loss, and on the
last batch the in-batch accuracy: how often a query's most similar key among the batch's 64 is
its own (chance 1/64), with the mean positive and queue similarities.

    python reports/studies/instance_accuracy.py --data DATA_ROOT --epochs 4 \\
        --set lr=0.06 --set lr=0.0075

``DATA_ROOT`` holds ``luperson/`` (the generated data, e.g. ``data/synth``). ``--set`` takes
``pretrain`` keys as YAML values, one run per ``--set`` (several keys: ``"lr=0.0075 cc=false"``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from upreid.data.dataset import ImageDataset, collate
from upreid.data.readers import read_pool
from upreid.data.transforms import PretrainViews
from upreid.experiments import pretrain_variant
from upreid.params import load_params
from upreid.train.pretrain import build_model

ROOT = Path(__file__).resolve().parents[2]


def run(overrides: list[str], data: Path, epochs: int) -> None:
    torch.manual_seed(0)
    params = load_params(ROOT / "params.yaml", "default", [f"pretrain.{o}" for o in overrides])
    pp = pretrain_variant(params.pretrain, "moco")
    pool = read_pool(data / "luperson")
    model = build_model(pp, 0).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.online.parameters(), lr=pp.lr, momentum=pp.momentum, weight_decay=pp.weight_decay
    )
    views = ImageDataset(pool, PretrainViews.from_params(pp))
    loader = DataLoader(
        views, batch_size=pp.batch_size, shuffle=True, drop_last=True, collate_fn=collate
    )
    losses: list[float] = []
    for epoch in range(epochs):
        for (x_o, x_q, x_k), *_ in loader:
            model.train()
            out = model(x_o, x_q, x_k)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            model.step_ema()
            losses.append(out["loss"].item())
        with torch.no_grad():
            q, k = model.online(x_q), model.keys(x_k)
            acc = ((q @ k.t()).argmax(1) == torch.arange(len(q))).float().mean().item()
            pos = (q * k).sum(1).mean().item()
            neg = (q @ model.queue.keys[0].t()).mean().item()
        mean = sum(losses[-len(loader) :]) / len(loader)
        print(
            f"{overrides} epoch {epoch + 1}: loss {mean:.3f}, in-batch accuracy {acc:.2f}, "
            f"positive {pos:.3f}, queue {neg:.3f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], help='"key=value ..."')
    args = ap.parse_args()
    for text in args.set or [""]:
        run(text.split(), args.data, args.epochs)


if __name__ == "__main__":
    main()
