"""Study: how UP-ReID's three losses pull on the trunk that MoCo's global loss alone would train.

A plain UP-ReID loop over the default profile's pool, the same schedule and optimiser as
:func:`upreid.train.pretrain.pretrain`. Once per epoch, on that step's batch, the gradient of
each weighted term (``lambda_g * L_g``, ``lambda_p * L_icc``, ``lambda_cc * L_cc``) with respect
to the trunk's parameters (``online.backbone``: what is exported) is taken separately; the
script prints each term's norm and its cosine with the global term's gradient, and the share of
the total update that lies along the global term's direction.

    python reports/studies/grad_share.py --data DATA_ROOT --epochs 10 \\
        --set "" --set "lambda_patch=0.3"

``DATA_ROOT`` holds ``luperson/`` (e.g. the recipe study's ``WORK/data``). ``--set`` takes
``pretrain`` keys as YAML values, one run per ``--set``; ``--json`` appends the rows to a file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from upreid.data.dataset import collate
from upreid.data.readers import read_pool
from upreid.models.upreid import UPReID
from upreid.params import load_params
from upreid.train.pretrain import build_model, lr_factor, pretrain_dataset

ROOT = Path(__file__).resolve().parents[2]


def terms(model: UPReID, x_o: Tensor, x_q: Tensor, x_k: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """The weighted loss terms of :meth:`UPReID.terms` (the patch queue is pushed there, the
    global queue by the caller) and the global keys to enqueue."""
    parts, k0 = model.terms(x_o, x_q, x_k)
    return {name: weight * loss for name, (weight, loss) in parts.items()}, k0


def flat_grads(loss: Tensor, params: list[torch.nn.Parameter]) -> Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).flatten()
            for g, p in zip(grads, params, strict=True)
        ]
    )


def measure(out: dict[str, Tensor], trunk: list[torch.nn.Parameter]) -> dict[str, float]:
    grads = {name: flat_grads(loss, trunk) for name, loss in out.items()}
    g = grads["global"]
    total = sum(grads.values(), torch.zeros_like(g))
    row = {f"loss_{n}": float(v.detach()) for n, v in out.items()}
    for name, v in grads.items():
        row[f"norm_{name}"] = float(v.norm())
        if name != "global":
            row[f"cos_{name}"] = float(torch.nn.functional.cosine_similarity(v, g, dim=0))
    row["along_global"] = float(total @ g / (g.norm() * total.norm()))
    return row


def run(overrides: list[str], data: Path, epochs: int, seed: int) -> list[dict[str, float]]:
    torch.manual_seed(seed)
    keys = ["pretrain.method=upreid", f"pretrain.epochs={epochs}"]
    pp = load_params(
        ROOT / "params.yaml", "default", keys + [f"pretrain.{o}" for o in overrides]
    ).pretrain
    model = build_model(pp, seed)
    assert isinstance(model, UPReID)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.online.parameters(), lr=pp.lr, momentum=pp.momentum, weight_decay=pp.weight_decay
    )
    views = pretrain_dataset(pp, read_pool(data / "luperson"))
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        views,
        batch_size=pp.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        generator=gen,
    )
    per_epoch = len(loader)
    warmup, total = pp.warmup_epochs * per_epoch, epochs * per_epoch
    sched = LambdaLR(opt, lambda s: lr_factor(s, warmup, total, pp.lr_floor))
    trunk = list(model.online.backbone.parameters())
    rows: list[dict[str, float]] = []
    for epoch in range(epochs):
        for i, ((x_o, x_q, x_k), *_) in enumerate(loader):
            model.train()
            out, k0 = terms(model, x_o, x_q, x_k)
            if i == 0:
                row = {"epoch": epoch, "step": epoch * per_epoch, **measure(out, trunk)}
                rows.append(row)
                print(overrides, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
            opt.zero_grad()
            sum(out.values(), torch.zeros(())).backward()
            opt.step()
            sched.step()
            model.queue.push(k0.detach()[None])
            model.step_ema()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help='"key=value ..."')
    ap.add_argument("--json", type=Path, help="append one line per run")
    args = ap.parse_args()
    for text in args.set or [""]:
        rows = run(text.split(), args.data, args.epochs, args.seed)
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps({"set": text, "seed": args.seed, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
