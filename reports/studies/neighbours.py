"""Study: what frozen features group images by, camera or person.

For each backbone file (or ``random``: the untrained network of seed 0), the pooled trunk
features of a labeled set's gallery, and for each image its 5 nearest other images (cosine):
the fraction from the same camera, of the same person, and of the same person in another camera
(what cross-camera re-ID needs).

    python reports/studies/neighbours.py --data DATA_ROOT random runs/moco/backbone.pt

``DATA_ROOT`` holds the generated (or real) labeled sets, e.g. ``data/synth``. With
``--queries`` it ranks each query's gallery under the protocol instead and counts the queries
whose first-ranked image comes from their own camera, and those for which every other person
in their camera outranks their first match (``--sets cuhk03``: why CUHK03 is at chance).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from upreid.data.dataset import ImageDataset, collate
from upreid.data.readers import read_dataset
from upreid.data.transforms import test_transform
from upreid.models.backbone import build_backbone, load_backbone_file


def _embed(trunk: torch.nn.Module, records: list, height: int, width: int) -> torch.Tensor:
    images = ImageDataset(records, test_transform(height, width))
    x, *_ = collate([images[i] for i in range(len(records))])
    with torch.no_grad():
        return F.normalize(trunk(x).mean(dim=(2, 3)), dim=1)


def neighbours(
    trunk: torch.nn.Module, data_root: Path, dataset: str, height: int, width: int, k: int = 5
) -> dict[str, float]:
    records = list(read_dataset(dataset, data_root / dataset).gallery)
    f = _embed(trunk, records, height, width)
    sim = f @ f.t()
    sim.fill_diagonal_(-2)
    nn = sim.topk(k, dim=1).indices
    cam = torch.tensor([r.camid for r in records])
    pid = torch.tensor([r.pid for r in records])
    same_cam = cam[nn] == cam[:, None]
    same_pid = pid[nn] == pid[:, None]
    return {
        "same_camera": same_cam.float().mean().item(),
        "same_person": same_pid.float().mean().item(),
        "same_person_other_camera": (same_pid & ~same_cam).float().mean().item(),
        "cameras": float(len(set(cam.tolist()))),
    }


def query_ranks(
    trunk: torch.nn.Module, data_root: Path, dataset: str, height: int, width: int
) -> dict[str, int]:
    """Per query, its gallery ranked by cosine without its own camera's images of itself (the
    standard protocol): is the first image from its camera, and does every other person in its
    camera come before its first match?"""
    data = read_dataset(dataset, data_root / dataset)
    query, gallery = list(data.query), list(data.gallery)
    sim = _embed(trunk, query, height, width) @ _embed(trunk, gallery, height, width).t()
    g_cam = torch.tensor([r.camid for r in gallery])
    g_pid = torch.tensor([r.pid for r in gallery])
    first_own_camera = all_own_camera_first = 0
    for i, q in enumerate(query):
        keep = ~((g_pid == q.pid) & (g_cam == q.camid))
        order = sim[i].argsort(descending=True)
        order = order[keep[order]]
        match = int((g_pid[order] == q.pid).nonzero()[0, 0])
        own = g_cam == q.camid
        first_own_camera += bool(own[order[0]])
        all_own_camera_first += int(own[order[:match]].sum()) == int((own & keep).sum())
    return {
        "queries": len(query),
        "first_from_own_camera": first_own_camera,
        "own_camera_all_before_match": all_own_camera_first,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("backbones", nargs="+", help="backbone.pt files, or 'random'")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--sets", nargs="+", default=["personx", "market1501"])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--queries", action="store_true", help="rank the queries (see above)")
    args = ap.parse_args()
    if args.queries:
        print("| backbone | set | queries | first from own camera | own camera all before match |")
        print("|---|---|---|---|---|")
    else:
        print("| backbone | set | top-5 same camera | same person | same person, other camera |")
        print("|---|---|---|---|---|")
    for name in args.backbones:
        torch.manual_seed(0)
        trunk = build_backbone(args.arch)
        if name != "random":
            load_backbone_file(trunk, name)
        trunk.eval()
        for dataset in args.sets:
            if args.queries:
                r = query_ranks(trunk, args.data, dataset, args.height, args.width)
                print(
                    f"| {name} | {dataset} | {r['queries']} | {r['first_from_own_camera']} "
                    f"| {r['own_camera_all_before_match']} |"
                )
                continue
            m = neighbours(trunk, args.data, dataset, args.height, args.width)
            print(
                f"| {name} | {dataset} ({m['cameras']:.0f} cameras) | {m['same_camera']:.2f} "
                f"| {m['same_person']:.2f} | {m['same_person_other_camera']:.3f} |"
            )


if __name__ == "__main__":
    main()
