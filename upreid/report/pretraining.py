"""What pre-training taught: frozen-feature retrieval of every pre-trained variant against the
same network untrained (``reports/tables/pretraining.csv|md``), and its curve against the
pre-training step (``reports/figures/pretraining_frozen.png``).

The values come from the pre-training runs (:mod:`upreid.eval.frozen`): ``frozen_mAP_<set>``
after the last epoch and ``init_frozen_mAP_<set>`` before the first step. The untrained network
is the variant ``random`` (as initialised: BatchNorm's running statistics still the identity)
and ``random-bn`` (the same weights, BN statistics estimated on pool images, as every trained
trunk is evaluated); the ablation named ``random`` (a random patch as ICC's positive) is
listed as ``positive-random`` here.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from upreid import tracking
from upreid.experiments import SEEDED_VARIANTS, split_pretrain_name
from upreid.io import atomic_write_bytes
from upreid.report.figures import _finish, _save
from upreid.report.text import fmt, markdown, paired_text, to_csv

COLUMNS = ["variant", "pretrain_seed", "dataset", "frozen_mAP", "frozen_rank1"]
UNTRAINED = "random"
UNTRAINED_BN = "random-bn"
MARGIN = 5.0  # mAP points above the untrained network that count as "learned"


def _label(variant: str) -> str:
    return "positive-random" if variant == UNTRAINED else variant


def pretraining_rows(
    records: dict[str, tracking.RunRecord], names: Sequence[str], seed: int
) -> list[list[str]]:
    """Rows of ``COLUMNS``: the untrained network of each pre-training seed first (from the
    first run of that seed that measured it: every variant of a seed starts from the same seeded
    trunk), then each pre-training run (``names``: variants and seeded runs such as
    ``moco-p1``)."""
    runs = []
    for name in dict.fromkeys(names):
        if f"pretrain/{name}" in records:
            variant, offset = split_pretrain_name(name)
            runs.append((variant, seed + offset, records[f"pretrain/{name}"]))
    untrained: dict[int, tracking.RunRecord] = {}
    for _, pseed, run in runs:
        if any(k.startswith("init_frozen_") for k in run.metrics):
            untrained.setdefault(pseed, run)
    chosen = [
        *(
            (prefix, name, pseed, run)
            for prefix, name in (("init_frozen_", UNTRAINED), ("init_frozen_bnest_", UNTRAINED_BN))
            for pseed, run in sorted(untrained.items())
        ),
        *(("frozen_", _label(variant), pseed, run) for variant, pseed, run in runs),
    ]
    rows: list[list[str]] = []
    for prefix, name, pseed, run in chosen:
        sets = sorted(
            k.removeprefix(f"{prefix}mAP_") for k in run.metrics if k.startswith(f"{prefix}mAP_")
        )
        for dataset in sets:
            rows.append(
                [
                    name,
                    str(pseed),
                    dataset,
                    f"{run.metrics[f'{prefix}mAP_{dataset}']:.2f}",
                    f"{run.metrics.get(f'{prefix}rank1_{dataset}', float('nan')):.2f}",
                ]
            )
    return rows


def _summary(rows: list[list[str]]) -> tuple[list[str], list[list[str]], list[str]]:
    """The Markdown view: one row per variant, one column per set (mean ± std over
    pre-training seeds), how many sets each variant beats the untrained network on by
    ``MARGIN``; and the paired UP-ReID - MoCo difference per pre-training seed."""
    datasets = sorted({r[2] for r in rows})
    variants = list(dict.fromkeys(r[0] for r in rows))
    cell: dict[tuple[str, str], dict[str, float]] = {}
    for variant, pseed, dataset, m_ap, _ in rows:
        cell.setdefault((variant, dataset), {})[pseed] = float(m_ap)
    mean = {k: statistics.fmean(v.values()) for k, v in cell.items()}

    def text(key: tuple[str, str]) -> str:
        vals = list(cell.get(key, {}).values())
        if len(vals) < 2:
            return fmt(mean.get(key))
        return f"{mean[key]:.1f} ± {statistics.stdev(vals):.1f} (n={len(vals)})"

    baselines = [b for b in (UNTRAINED, UNTRAINED_BN) if b in variants]
    header = ["variant", *datasets, *(f"sets > {b} + {MARGIN:g}" for b in baselines)]
    body, notes = [], []
    for variant in variants:
        tallies = []
        for base in baselines:
            above = [
                d
                for d in datasets
                if (variant, d) in mean
                and (base, d) in mean
                and mean[(variant, d)] >= mean[(base, d)] + MARGIN
            ]
            untrained = variant in (UNTRAINED, UNTRAINED_BN)
            tallies.append("-" if untrained else f"{len(above)} of {len(datasets)}")
        body.append([variant, *(text((variant, d)) for d in datasets), *tallies])
    for variant in SEEDED_VARIANTS:
        row = next((r for r in body if r[0] == variant), None)
        if row is None:
            continue
        said = " and ".join(
            f"{row[1 + len(datasets) + i]} sets over `{b}`" for i, b in enumerate(baselines)
        )
        notes.append(
            f"{variant}: frozen features beat the untrained network by >= {MARGIN:g} mAP on "
            f"{said} (means over pre-training seeds)"
        )
    for dataset in datasets:
        mo, up = (cell.get((v, dataset), {}) for v in SEEDED_VARIANTS)
        paired = [up[s] - mo[s] for s in sorted(up, key=int) if s in mo]
        if paired:
            notes.append(paired_text(f"frozen mAP on {dataset}", paired))
    return header, body, notes


def write_pretraining(
    out: Path,
    records: dict[str, tracking.RunRecord],
    names: Sequence[str],
    seed: int,
    root: str | Path = ".",
) -> list[str]:
    """``tables/pretraining.csv|md`` and ``figures/pretraining_frozen.png`` under ``out`` from
    the pre-training runs ``names``; returns the written paths relative to ``out`` (none
    without frozen-feature values)."""
    rows = pretraining_rows(records, names, seed)
    if not rows:
        return []
    atomic_write_bytes(out / "tables" / "pretraining.csv", to_csv(COLUMNS, rows))
    header, body, notes = _summary(rows)
    md = (
        "# What pre-training taught: frozen-feature retrieval\n\n"
        "mAP (%) of the pre-trained trunk's pooled features, no fine-tuning, on each labeled "
        f"set's query and gallery. `{UNTRAINED}` is the same network untrained, as initialised "
        f"(BatchNorm statistics the identity); `{UNTRAINED_BN}` is it with BN statistics "
        "estimated on whole pool images, weights unchanged, as every trained trunk is "
        "evaluated (see reports/studies/README.md: the two differ by several mAP). Per run and "
        "with rank-1: [pretraining.csv](pretraining.csv); the curve against the pre-training "
        "step: [figure](../figures/pretraining_frozen.png).\n\n" + markdown(header, body)
    )
    md += "\n" + "".join(f"- {n}\n" for n in notes)
    atomic_write_bytes(out / "tables" / "pretraining.md", md.encode())
    written = ["tables/pretraining.md", "tables/pretraining.csv"]
    compared = [n for n in names if split_pretrain_name(n)[0] in ("moco", "upreid")]
    fig = _curves(records, compared, root)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    _save(fig, out / "figures" / "pretraining_frozen.png")
    return [*written, "figures/pretraining_frozen.png"]


def _curves(
    records: dict[str, tracking.RunRecord], names: Sequence[str], root: str | Path
) -> Figure:
    """Frozen mAP against the pre-training step, one panel per set, one colour per variant and
    one line per pre-training seed; the step-0 point is that seed's untrained network."""
    runs = [
        (n, records[f"pretrain/{n}"]) for n in dict.fromkeys(names) if f"pretrain/{n}" in records
    ]
    datasets = sorted(
        {
            k.removeprefix("frozen_mAP_")
            for _, run in runs
            for k in run.metrics
            if k.startswith("frozen_mAP_")
        }
    )
    fig = Figure(figsize=(3.6 * max(len(datasets), 1), 3.2))
    axes = fig.subplots(1, max(len(datasets), 1), squeeze=False)[0]
    colours: dict[str, str] = {}
    for ax, dataset in zip(axes, datasets, strict=False):
        labelled: set[str] = set()
        for name, run in runs:
            variant = split_pretrain_name(name)[0]
            points = tracking.metric_history(run.run_id, f"frozen_mAP_{dataset}", root)
            if not points:
                continue
            colour = colours.setdefault(variant, f"C{len(colours)}")
            label = None if variant in labelled else variant
            labelled.add(variant)
            ax.plot(*zip(*points, strict=False), marker="o", color=colour, label=label, alpha=0.8)
        ax.set(title=dataset, xlabel="pre-training step", ylabel="frozen mAP (%)")
        _finish(ax)
    if not datasets:
        _finish(axes[0])
    return fig
