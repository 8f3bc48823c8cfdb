"""Compare two default-profile results (``metrics/`` folders) cell by cell, against seed noise.

    python benchmarks/compare_metrics.py OLD_METRICS_DIR NEW_METRICS_DIR [--out report.md]

For every fine-tuning and SpCL run present in both, the final mAP before and after. The noise
yardstick is the fine-tuning seed spread of the headline cells (MGN on CUHK03 and Market-1501,
each pre-trained init over its seeds) in the old results: a change is called beyond noise when
it exceeds twice the largest such standard deviation. The mean change over all runs, with its 95 %
interval, tells a systematic shift. Headline cells are compared as mean +- std over seeds.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def runs(folder: Path) -> dict[str, float]:
    """``{"finetune/mgn-cuhk03/moco-s0": mAP, "spcl/M/moco": mAP, ...}``."""
    out: dict[str, float] = {}
    for kind in ("finetune", "spcl"):
        for path in sorted((folder / kind).rglob("*.json")):  # finetune/<method>/<dataset>.json
            cell = "-".join(path.relative_to(folder / kind).with_suffix("").parts)
            for run, metrics in json.loads(path.read_text()).items():
                if "mAP" in metrics:
                    out[f"{kind}/{cell}/{run}"] = float(metrics["mAP"])
    return out


def headline(values: dict[str, float]) -> dict[str, list[float]]:
    """Seeds of each pre-trained init in the headline stages: ``{"mgn-cuhk03/moco": [...]}``."""
    cells: dict[str, list[float]] = {}
    for key, value in values.items():
        m = re.fullmatch(r"finetune/(mgn-(?:cuhk03|market1501))/(moco|upreid)-s\d+", key)
        if m:
            cells.setdefault(f"{m[1]}/{m[2]}", []).append(value)
    return cells


def compare(old: dict[str, float], new: dict[str, float]) -> str:
    spread = [statistics.stdev(v) for v in headline(old).values() if len(v) > 1]
    noise = 2 * max(spread) if spread else float("nan")
    common = sorted(set(old) & set(new))
    diffs = [new[k] - old[k] for k in common]
    beyond = [k for k, d in zip(common, diffs, strict=True) if abs(d) > noise]
    lines = ["| cell | old mAP | new mAP | change |", "|---|---|---|---|"]
    lines += [f"| {k} | {old[k]:.1f} | {new[k]:.1f} | {new[k] - old[k]:+.1f} |" for k in common]
    head = ["| headline cell | old mean ± std | new mean ± std |", "|---|---|---|"]
    h_old, h_new = headline(old), headline(new)
    for cell in sorted(h_old.keys() & h_new.keys()):
        a, b = h_old[cell], h_new[cell]
        head.append(
            f"| {cell} (n={len(a)}) | {statistics.fmean(a):.1f} ± "
            f"{statistics.stdev(a) if len(a) > 1 else 0:.1f} | "
            f"{statistics.fmean(b):.1f} ± {statistics.stdev(b) if len(b) > 1 else 0:.1f} |"
        )
    half = 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    summary = (
        f"{len(common)} runs compared; mean change {statistics.fmean(diffs):+.2f} mAP "
        f"(95 % interval ±{half:.2f}: a systematic shift when it excludes 0), "
        f"mean absolute change {statistics.fmean(abs(d) for d in diffs):.2f}; seed noise "
        f"yardstick (2 x the largest headline seed std) {noise:.1f} mAP; "
        f"{len(beyond)} run(s) moved beyond it" + (f": {', '.join(beyond)}." if beyond else ".")
    )
    return "\n".join([summary, "", *head, "", *lines, ""])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    text = compare(runs(args.old), runs(args.new))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
