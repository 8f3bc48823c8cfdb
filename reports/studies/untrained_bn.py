"""Study: how much of the frozen-feature score of the untrained network comes from its BatchNorm
statistics, which are the identity before any training.

    python reports/studies/untrained_bn.py --work DIR --seeds 0 1 2

For each seed: the ResNet-18 trunk at initialisation, its frozen-feature mAP on the four
generated labeled sets (as the pre-training probe measures step 0), and the same trunk after
its BN running statistics are re-estimated on whole pool images (``pretrain.bn_recalibrate``
20 batches), weights unchanged. A trained trunk is always evaluated with estimated statistics,
so the second row is the like-for-like "untrained" comparison for it.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from upreid.data.readers import read_dataset, read_pool
from upreid.data.synth import synthesize
from upreid.eval.frozen import frozen_probe
from upreid.models.backbone import build_backbone
from upreid.params import load_params
from upreid.progress import setup_logging
from upreid.runtime import CPU
from upreid.train.pretrain import recalibrated

ROOT = Path(__file__).resolve().parents[2]
SETS = ("cuhk03", "market1501", "personx", "msmt17")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="the generated data (made when absent)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    setup_logging()
    params = load_params(ROOT / "params.yaml", "default")
    pp = dataclasses.replace(params.pretrain, bn_recalibrate=20)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        if not (work / "data" / "luperson").exists():
            synthesize(params.data, work / "data", inside=work)
        pool = read_pool(work / "data" / "luperson")
        sets = {n: read_dataset(n, work / "data" / n) for n in SETS}
        probe = frozen_probe(sets, params.eval, pp.height, pp.width, CPU)
        print("| seed | BN statistics | " + " | ".join(SETS) + " |")
        print("|---|---|" + "---|" * len(SETS))
        for seed in args.seeds:
            torch.manual_seed(seed)
            trunk = build_backbone(pp.arch).eval()
            for label, net in (
                ("identity (untrained)", trunk),
                ("re-estimated on pool images", recalibrated(trunk, pool, pp, CPU)),
            ):
                got = probe(net)
                cells = " | ".join(f"{got[f'frozen_mAP_{n}']:.1f}" for n in SETS)
                print(f"| {seed} | {label} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
