"""Study: why the cosine's low-lr tail costs frozen mAP at the default profile's length.

The default profile's 12 pre-training epochs (264 steps), frozen-feature retrieval
(:mod:`upreid.eval.frozen`) after every epoch, both methods, for three schedules:

- ``constant``: lr 0.0075 held after the 1-epoch warm-up (the profile's, ``lr_floor=1``);
- ``cosine``: lr 0.0075 with the cosine to 0 (``lr_floor=0``, MoCo v2's and LUPerson's);
- ``half``: lr 0.0039 held after the warm-up, whose summed lr over the 264 steps is the
  cosine's (within 1 %).

If frozen mAP follows the lr summed so far, whatever the schedule, the cosine's tail costs only
because it spends less lr while the curve still rises (``half`` then ends level with
``cosine``); if the low-lr tail itself undoes what was learned, the cosine's curve falls in its
tail and ``half`` ends above it.

    python reports/studies/schedule_tail.py --seeds 0 1 2 --work DIR
    python reports/studies/schedule_tail.py --table

The first writes one curve file per schedule and seed under ``DIR/curves`` and merges them into
``reports/studies/schedule_tail.json`` (runs already in ``DIR/curves`` are kept); the second
prints the tables and draws ``schedule_tail.png`` from that file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from learning_curve import run
from matplotlib.figure import Figure
from recipe import interval_cell

from upreid.params import load_params
from upreid.progress import setup_logging
from upreid.train.pretrain import lr_factor

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "schedule_tail"
SCHEDULES = {
    "constant": ("lr_floor=1",),
    "cosine": ("lr_floor=0",),
    "half": ("lr_floor=1", "lr=0.0039"),
}
METHODS = ("moco", "upreid")
SETS = ("cuhk03", "market1501", "personx", "msmt17")
EPOCHS = 12


def summed_lr(overrides: tuple[str, ...], steps_per_epoch: int) -> list[float]:
    """The lr summed over the steps before each step 0..total (the schedule of the loop)."""
    keys = [f"pretrain.{o}" for o in overrides]
    pp = load_params(ROOT / "params.yaml", "default", keys).pretrain
    total = EPOCHS * steps_per_epoch
    warmup = pp.warmup_epochs * steps_per_epoch
    sums = [0.0]
    for step in range(total):
        sums.append(sums[-1] + pp.lr * lr_factor(step, warmup, total, pp.lr_floor))
    return sums


def measure(seeds: list[int], work: Path) -> None:
    curves_dir = work / "curves"
    curves_dir.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for name, overrides in SCHEDULES.items():
            path = curves_dir / f"{name}_s{seed}.json"
            if path.exists() and set(json.loads(path.read_text())["curves"]) >= set(METHODS):
                continue
            for method in METHODS:  # the last schedule's runs, which this study made
                shutil.rmtree(work / "runs" / method, ignore_errors=True)
            run(list(METHODS), EPOCHS, work, seed, path, 1, overrides)
    merged: dict[str, dict] = {}
    for path in sorted(curves_dir.glob("*_s*.json")):
        name, _, seed = path.stem.rpartition("_s")
        merged.setdefault(name, {})[seed] = json.loads(path.read_text())["curves"]
    OUT.with_suffix(".json").write_text(json.dumps({"epochs": EPOCHS, "runs": merged}, indent=1))
    print(f"wrote {OUT.with_suffix('.json')}")


def at(xs: list[float], ys: list[float], x: float) -> float:
    """``ys`` linearly interpolated at ``x`` (``xs`` increasing)."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True)):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise ValueError(f"{x} is outside [{xs[0]}, {xs[-1]}]")


def table() -> str:
    runs = json.loads(OUT.with_suffix(".json").read_text())["runs"]
    first = runs["constant"][next(iter(runs["constant"]))]["moco"]
    per_epoch = first[1]["step"]
    lr_sums = {n: summed_lr(o, per_epoch) for n, o in SCHEDULES.items()}
    seeds = sorted(set.intersection(*(set(runs[n]) for n in SCHEDULES)), key=int)
    lines = [f"Seeds {', '.join(seeds)}; frozen mAP (%), mean over seeds.", ""]

    def curve(name: str, seed: str, method: str, dataset: str) -> tuple[list[float], list[float]]:
        rows = runs[name][seed][method]
        steps = [r["step"] for r in rows]
        return [lr_sums[name][s] for s in steps], [r[f"frozen_mAP_{dataset}"] for r in rows]

    lines += [
        "| method | schedule | summed lr | " + " | ".join(SETS) + " |",
        "|---|---|---|" + "---|" * len(SETS),
    ]
    for method in METHODS:
        for name in SCHEDULES:
            ends = [statistics.fmean(curve(name, s, method, d)[1][-1] for s in seeds) for d in SETS]
            lines.append(
                f"| {method} | {name} | {lr_sums[name][-1]:.2f} | "
                + " | ".join(f"{e:.1f}" for e in ends)
                + " |"
            )
    lines += ["", "Paired by seed (mean, 95 % interval; bold where it excludes 0):", ""]
    comparisons = {
        "constant - cosine, at the end": lambda s, m, d: (
            curve("constant", s, m, d)[1][-1] - curve("cosine", s, m, d)[1][-1]
        ),
        "half - cosine, at the end (equal summed lr)": lambda s, m, d: (
            curve("half", s, m, d)[1][-1] - curve("cosine", s, m, d)[1][-1]
        ),
        "constant - half, at the end (twice the lr)": lambda s, m, d: (
            curve("constant", s, m, d)[1][-1] - curve("half", s, m, d)[1][-1]
        ),
        "cosine at its end - constant at the same summed lr": lambda s, m, d: (
            curve("cosine", s, m, d)[1][-1] - at(*curve("constant", s, m, d), lr_sums["cosine"][-1])
        ),
        "cosine: its last 6 epochs (lr from 57 % of the peak to 0)": lambda s, m, d: (
            curve("cosine", s, m, d)[1][-1] - curve("cosine", s, m, d)[1][EPOCHS // 2]
        ),
        "constant: its last 6 epochs": lambda s, m, d: (
            curve("constant", s, m, d)[1][-1] - curve("constant", s, m, d)[1][EPOCHS // 2]
        ),
    }
    lines += [
        "| difference | method | " + " | ".join(SETS) + " |",
        "|---|---|" + "---|" * len(SETS),
    ]
    for label, diff in comparisons.items():
        for method in METHODS:
            cells = [interval_cell([diff(s, method, d) for s in seeds]) for d in SETS]
            lines.append(f"| {label} | {method} | " + " | ".join(cells) + " |")
    figure(runs, lr_sums, seeds)
    return "\n".join(lines)


def figure(runs: dict, lr_sums: dict[str, list[float]], seeds: list[str]) -> None:
    """Mean frozen mAP over the seeds against the step (top) and the summed lr (bottom)."""
    fig = Figure(figsize=(3.6 * len(SETS), 6.6))
    axes = fig.subplots(2, len(SETS), squeeze=False)
    styles = {"constant": ("-", "o"), "cosine": ("--", "s"), "half": (":", "^")}
    for col, dataset in enumerate(SETS):
        key = f"frozen_mAP_{dataset}"
        bnest = statistics.fmean(
            runs["constant"][s]["moco"][0][f"frozen_bnest_mAP_{dataset}"] for s in seeds
        )
        for row, axis in enumerate(("step", "lr summed over the steps so far")):
            ax = axes[row][col]
            for method, color in zip(METHODS, ("tab:blue", "tab:orange"), strict=True):
                for name, (ls, marker) in styles.items():
                    curves = [runs[name][s][method] for s in seeds]
                    steps = [r["step"] for r in curves[0]]
                    xs = steps if row == 0 else [lr_sums[name][s] for s in steps]
                    ys = [statistics.fmean(c[i][key] for c in curves) for i in range(len(xs))]
                    ax.plot(
                        xs, ys, ls=ls, marker=marker, ms=3, color=color, label=f"{method} {name}"
                    )
            ax.axhline(bnest, color="grey", ls=":", lw=1, label="untrained, BN estimated")
            ax.set(title=dataset, xlabel=axis, ylabel="frozen mAP (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(OUT.with_suffix(".png"), dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", type=Path, help="the generated data, runs and curves")
    ap.add_argument("--table", action="store_true", help="print the tables, draw the figure")
    args = ap.parse_args()
    if args.table:
        print(table())
        return
    if args.work is None:
        ap.error("--work DIR is needed to measure (it keeps each finished curve)")
    setup_logging()
    measure(args.seeds, args.work)


if __name__ == "__main__":
    main()
