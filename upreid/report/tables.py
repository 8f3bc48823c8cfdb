"""The paper's tables and figures from the MLflow runs: Markdown + CSV + PNG in ``reports/``.

Each cell shows our value (mean ± std over seeds where several exist) beside the paper's; a cell
whose run is absent says so. Each table ends with a plain statement of which of the paper's
orderings hold here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from upreid import tracking
from upreid.experiments import (
    ABLATION_STAGE,
    HEADLINE,
    PRETRAIN_VARIANTS,
    SEEDED_VARIANTS,
    seeded_runs,
)
from upreid.io import atomic_write_bytes
from upreid.params import Params
from upreid.report import paper
from upreid.report.figures import write_curves
from upreid.report.pretraining import write_pretraining
from upreid.report.runs import ABSENT, Runs, Value
from upreid.report.text import fmt, markdown, paired_text, to_csv

INIT_NAMES = {"scratch": "Scratch", "insup": "INSUP", "moco": "Moco", "upreid": "UP-ReID"}
DATASET_NAMES = {
    "cuhk03": "CUHK03",
    "market1501": "Market1501",
    "personx": "PersonX",
    "msmt17": "MSMT17",
}
METHOD_NAMES = {"bdb": "BDB", "bot": "BoT", "mgn": "MGN", "pcb": "PCB"}


@dataclass
class Table:
    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str]

    def write(self, folder: Path, caption: str = "") -> None:
        md = f"# {self.title}\n\n" + (f"{caption}\n\n" if caption else "")
        md += markdown(self.header, self.rows)
        if self.notes:
            md += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        atomic_write_bytes(folder / f"{self.name}.md", md.encode())
        atomic_write_bytes(folder / f"{self.name}.csv", to_csv(self.header, self.rows))


def _ordering(label: str, better: Value, worse: Value) -> tuple[str, bool | None]:
    """Whether ``better`` > ``worse`` here, said plainly with the spread when known."""
    if better.mean is None or worse.mean is None:
        return f"{label}: not measured (run absent)", None
    holds = better.mean > worse.mean
    gap = better.mean - worse.mean
    spread = max(better.std or 0.0, worse.std or 0.0)
    tail = f", seed std up to {spread:.1f}" if spread else ", one seed"
    verdict = "holds" if holds else "does NOT hold"
    text = f"{label}: {verdict} here ({better.mean:.1f} vs {worse.mean:.1f}, gap {gap:+.1f}{tail})"
    if spread and abs(gap) <= spread:
        text += "; the gap is within the seed spread: inconclusive"
    return text, holds


def table1(runs: Runs, inits: Sequence[str]) -> Table:
    datasets = ("cuhk03", "market1501", "personx", "msmt17")
    header = ["Method", "Init"] + [f"{DATASET_NAMES[d]} mAP/R1 (ours | paper)" for d in datasets]
    rows, notes, tally = [], [], []
    for method in ("bdb", "bot", "mgn"):
        for init in ("scratch", "insup", "moco", "upreid"):
            row = [METHOD_NAMES[method], INIT_NAMES[init]]
            for d in datasets:
                m = runs.finetune(method, d, init, "mAP")
                r = runs.finetune(method, d, init, "rank1")
                pub = paper.TABLE1.get((method, init, d))
                ours = ABSENT if not m.values else f"{m.text()}/{r.text()}"
                row.append(f"{ours} | {'/'.join(map(fmt, pub)) if pub else 'n/a'}")
            rows.append(row)
        for d in datasets:
            label = f"{METHOD_NAMES[method]} {DATASET_NAMES[d]} mAP, UP-ReID > Moco"
            line, holds = _ordering(
                label,
                runs.finetune(method, d, "upreid", "mAP"),
                runs.finetune(method, d, "moco", "mAP"),
            )
            gain_paper = paper.TABLE1_R1_GAIN.get(method, {}).get(d)
            up, mo = (runs.finetune(method, d, i, "rank1").mean for i in ("upreid", "moco"))
            if gain_paper is not None and up is not None and mo is not None:
                line += f"; R1 gain {up - mo:+.1f} (paper {gain_paper:+.1f})"
            notes.append(line)
            tally.append(holds)
    notes.insert(0, _tally("UP-ReID > Moco (mAP)", tally))
    notes.append(
        "The paper's Table 1 is an image; its text gives the MGN + UP-ReID cells "
        "(Table 8) and the Rank-1 gains over Moco quoted here. INSUP needs an ImageNet "
        f"weights file; the profile's inits are {list(inits)}."
    )
    return Table("table1", "Table 1: supervised fine-tuning (mAP/Rank-1)", header, rows, notes)


def _tally(what: str, results: Sequence[bool | None]) -> str:
    known = [r for r in results if r is not None]
    return (
        f"Overall, {what} holds in {sum(known)} of {len(known)} measured cells "
        f"({len(results) - len(known)} not measured)."
    )


def table2(runs: Runs) -> Table:
    header = [
        "Init",
        "M mAP (ours | paper)",
        "M R1 (ours | paper)",
        "P->M mAP (ours | paper)",
        "P->M R1 (ours | paper)",
    ]
    rows = []
    for init in ("scratch", "insup", "moco", "upreid"):
        row = [INIT_NAMES[init]]
        for setting in ("M", "P2M"):
            pub = paper.TABLE2.get(init, {}).get(setting)
            for j, metric in enumerate(("mAP", "rank1")):
                v = runs.value(f"spcl/{setting}/{init}", metric)
                row.append(f"{v.text()} | {fmt(pub[j]) if pub else 'n/a'}")
        rows.append(row)
    notes = [
        _ordering(
            f"SpCL {s} mAP, UP-ReID > Moco",
            runs.value(f"spcl/{s}/upreid", "mAP"),
            runs.value(f"spcl/{s}/moco", "mAP"),
        )[0]
        for s in ("M", "P2M")
    ]
    for setting in ("M", "P2M"):  # what adaptation itself adds to each init
        for init in ("scratch", "insup", "moco", "upreid"):
            line, _ = _ordering(
                f"SpCL {setting} from {INIT_NAMES[init]}, adapted > before",
                runs.value(f"spcl/{setting}/{init}", "mAP"),
                runs.value(f"spcl/{setting}/{init}", "init_mAP"),
            )
            if "not measured" not in line:
                notes.append(line)
    return Table(
        "table2",
        "Table 2: SpCL, unsupervised (M) and PersonX -> Market1501 (P->M)",
        header,
        rows,
        notes,
    )


def _ablation(
    runs: Runs,
    name: str,
    title: str,
    variants: dict[str, str],
    published: Mapping[str, tuple[float, ...]],
    metrics: Sequence[str],
) -> Table:
    method, dataset = ABLATION_STAGE
    header = ["Model"] + [f"{m} (ours | paper)" for m in metrics]
    rows = []
    for variant, label in variants.items():
        pub = published.get(variant)
        rows.append(
            [label]
            + [
                f"{runs.finetune(method, dataset, variant, m).text()} | "
                f"{fmt(pub[j]) if pub and j < len(pub) else 'n/a'}"
                for j, m in enumerate(metrics)
            ]
        )
    full = runs.finetune(method, dataset, "upreid", "mAP")
    notes = [
        _ordering(
            f"mAP, {label.split(' (')[0]} < full UP-ReID",
            full,
            runs.finetune(method, dataset, v, "mAP"),
        )[0]
        for v, label in variants.items()
        if v != "upreid"
    ]
    notes.append(
        f"Fine-tuned with {METHOD_NAMES[method]} on {DATASET_NAMES[dataset]}, as in the paper."
    )
    return Table(name, title, header, rows, notes)


def tables_3_8(runs: Runs, profile: str) -> list[Table]:
    header = [
        "Method",
        "CUHK03 mAP",
        "CUHK03 R1",
        "Market1501 mAP",
        "Market1501 R1",
        "MSMT17 mAP",
        "MSMT17 R1",
    ]
    ours = [f"MGN + UP-ReID (ours, profile {profile})"]
    for d in ("cuhk03", "market1501", "msmt17"):
        ours += [runs.finetune("mgn", d, "upreid", m).text() for m in ("mAP", "rank1")]
    note = [
        f"Our row is the `{profile}` profile's run (small data, small backbone, short "
        "training): it is not comparable with the published full-scale numbers above it."
    ]
    out = []
    for name, keys in (("table3", paper.TABLE3_ROWS), ("table8", tuple(paper.TABLE8))):
        rows = [[k, *map(fmt, paper.TABLE8[k])] for k in keys]
        cols = header if name == "table8" else header[:5]
        rows = [r[: len(cols)] for r in rows] + [ours[: len(cols)]]
        out.append(
            Table(name, f"Table {name[-1]}: comparison with the state of the art", cols, rows, note)
        )
    return out


def table7(runs: Runs) -> Table:
    datasets = ("cuhk03", "market1501", "personx")
    header = ["Init"] + [f"{DATASET_NAMES[d]} mAP/R1 (ours | paper)" for d in datasets]
    rows = []
    for init in ("scratch", "insup", "moco", "upreid"):
        row = [INIT_NAMES[init]]
        for d in datasets:
            m, r = (runs.finetune("pcb", d, init, k) for k in ("mAP", "rank1"))
            pub = paper.TABLE7.get(init, {}).get(d)
            ours = ABSENT if not m.values else f"{m.text()}/{r.text()}"
            row.append(f"{ours} | {'/'.join(map(fmt, pub)) if pub else 'n/a'}")
        rows.append(row)
    notes = [
        _ordering(
            f"PCB {DATASET_NAMES[d]} mAP, UP-ReID > Moco",
            runs.finetune("pcb", d, "upreid", "mAP"),
            runs.finetune("pcb", d, "moco", "mAP"),
        )[0]
        for d in datasets
    ]
    return Table("table7", "Table 7: PCB (mAP/Rank-1)", header, rows, notes)


def headline_cells(runs: Runs, params: Params) -> dict[str, str]:
    """The headline cells (MGN on CUHK03 and Market-1501): each init's spread over fine-tune
    seeds (first pre-training seed) and over pre-training seeds (first fine-tune seed), then
    the paired UP-ReID - MoCo difference per pre-training seed with its 95 % interval."""
    cells: dict[str, str] = {}
    n = params.pipeline.pretrain_seeds
    for m, d in HEADLINE:
        for init in params.pipeline.inits:
            tuned = runs.finetune(m, d, init, "mAP")
            text = tuned.text() + (" over fine-tune seeds" if len(tuned.values) > 1 else "")
            if init in SEEDED_VARIANTS and n > 1:
                per = runs.over_pretrain_seeds(m, d, init, "mAP", n, params.seed)
                text += f"; {Value(tuple(per.values())).text()} over pre-training seeds"
            cells[f"{m}/{d}/{init}"] = text
        if n > 1 and set(SEEDED_VARIANTS) <= set(params.pipeline.inits):
            mo, up = (
                runs.over_pretrain_seeds(m, d, i, "mAP", n, params.seed) for i in SEEDED_VARIANTS
            )
            diffs = [up[p] - mo[p] for p in sorted(up) if p in mo]
            label = f"{METHOD_NAMES[m]} {DATASET_NAMES[d]} mAP"
            cells[f"{m}/{d}: UP-ReID - MoCo"] = paired_text(label, diffs)
    return cells


def _pretrain_seed_notes(runs: Runs, params: Params, cells: dict[str, str]) -> dict[str, list[str]]:
    """What the pre-training seeds say: the paired UP-ReID - MoCo lines of the headline cells,
    and for the ablation tables the full model's and the baseline's spread over pre-training
    seeds (the other variants are pre-trained once)."""
    n = params.pipeline.pretrain_seeds
    out = {"headline": [v for k, v in cells.items() if k.endswith("UP-ReID - MoCo")]}
    method, dataset = ABLATION_STAGE
    spread = []
    for init, label in (("moco", "(a) Baseline"), ("upreid", "full UP-ReID")):
        per = runs.over_pretrain_seeds(method, dataset, init, "mAP", n, params.seed)
        if len(per) > 1:
            spread.append(f"{label} {Value(tuple(per.values())).text()}")
    out["ablation"] = [
        (
            f"Over pre-training seeds (fine-tune seed {params.seed}), mAP: " + "; ".join(spread)
            if spread
            else "One pre-training seed per row"
        )
        + ". The other rows are pre-trained once: their gaps to the full model carry the "
        "pre-training spread too."
    ]
    return out


def build_tables(runs: Runs, params: Params, headline: dict[str, str] | None = None) -> list[Table]:
    """Every table; ``headline`` is :func:`headline_cells` when the caller has it already."""
    if headline is None:
        headline = headline_cells(runs, params)
    seeded = _pretrain_seed_notes(runs, params, headline)
    t1 = table1(runs, params.pipeline.inits)
    t1.notes += seeded["headline"]
    tables = [
        t1,
        table2(runs),
        _ablation(
            runs,
            "table4",
            "Table 4: consistency (CC) and intrinsic contrast (ICC)",
            {
                "moco": "(a) Baseline",
                "cc": "(b) Baseline w CC",
                "icc": "(c) Baseline w ICC",
                "upreid": "(d) UP-ReID",
            },
            paper.TABLE4,
            ("mAP", "rank1"),
        ),
        _ablation(
            runs,
            "table5",
            "Table 5: hard mining (with Appendix D's positive schemes)",
            {
                "nohm": "UP-ReID w/o HM",
                "upreid": "UP-ReID w HM (symmetric positive)",
                "random": "w HM, random positive (App. D)",
                "online": "w HM, online hardest positive (App. D)",
            },
            paper.TABLE5,
            ("mAP", "rank1", "rank5"),
        ),
        _ablation(
            runs,
            "table6",
            "Table 6: number of patches N",
            {"n4": "UP-ReID w N=4", "n12": "UP-ReID w N=12", "upreid": "UP-ReID w N=8"},
            paper.TABLE6,
            ("mAP", "rank1", "rank5"),
        ),
        table7(runs),
        *tables_3_8(runs, params.profile),
    ]
    for t in tables:
        if t.name in ("table4", "table5", "table6"):
            t.notes += seeded["ablation"]
    return tables


def write_reports(
    params: Params, out: Path, records: dict[str, tracking.RunRecord], root: str | Path = "."
) -> dict[str, Any]:
    """Every table and figure into ``out`` from ``records`` (the runs of the current inputs,
    by key); returns a summary (cells measured, absent)."""
    runs = Runs(records)
    headline = headline_cells(runs, params)
    tables = build_tables(runs, params, headline)
    caption = (
        f"Profile `{params.profile}`, seed {params.seed} (headline cells: fine-tuning "
        f"seeds {params.seed}..{params.seed + params.pipeline.headline_seeds - 1} of each "
        "pre-trained init; n = runs behind a cell). Regenerate with `dvc repro`."
    )
    for table in tables:
        table.write(out / "tables", caption)
    figures = write_curves(runs, out / "figures" / "curves", params.seed, root)
    names = [*PRETRAIN_VARIANTS, *seeded_runs(params)]
    learned = write_pretraining(out, records, names, params.seed, root)
    absent = sum(cell.startswith(ABSENT) for t in tables for r in t.rows for cell in r[1:])
    _write_index(out, params, tables, figures + learned[2:], headline, learned[:1])
    return {
        "runs": len(records),
        "tables": len(tables),
        "figures": len(figures),
        "absent_cells": absent,
    }


def _write_index(
    out: Path,
    params: Params,
    tables: list[Table],
    figures: list[str],
    headline: dict[str, str],
    learned: list[str],
) -> None:
    lines = [
        f"# Results: profile `{params.profile}`, seed {params.seed}",
        "",
        "Regenerated by `dvc repro` (stage `report`, i.e. `upreid tables`) from the MLflow "
        "runs. Each cell: ours | the paper's. Numbers from the default profile come from "
        "generated data and a small CPU-sized model: compare orderings, not values.",
        "",
        "## Tables",
        "",
    ]
    lines += [f"- [{t.title}](tables/{t.name}.md) ([csv](tables/{t.name}.csv))" for t in tables]
    lines += [
        f"- [What pre-training taught: frozen-feature retrieval]({md}) ([csv]({md[:-3]}.csv))"
        for md in learned
    ]
    lines += ["", "## Figures", ""] + [f"- [{Path(f).stem}]({f})" for f in figures]
    if (out / "figures" / "figure8_explain.png").is_file():
        lines.append(
            "- [figure8: feature-response maps, BoT from MoCo vs from UP-ReID]"
            "(figures/figure8_explain.png)"
        )
    lines += [
        "- [contact sheet of the generated data](figures/contact_sheet.png)",
        "",
        "## Headline cells (MGN mAP, mean ± std over seeds; UP-ReID - MoCo paired by "
        "pre-training seed)",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in headline.items()]
    lines += ["", "## Where the paper's orderings hold", ""]
    for t in tables:
        lines += [f"- {t.name}: {n}" for n in t.notes if "hold" in n]
    atomic_write_bytes(out / "README.md", ("\n".join(lines) + "\n").encode())
