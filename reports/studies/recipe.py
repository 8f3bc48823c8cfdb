"""Study: which pre-training choices make frozen features beat the untrained network.

Each variant is the default profile's ``pretrain`` section with some keys overridden; it is
pre-trained on the default profile's generated pool for each seed, and its frozen features
(:mod:`upreid.eval.frozen`: the pooled trunk, no fine-tuning) are ranked on the four generated
labeled sets before the first step (the untrained network, same seed) and at the end.

    python reports/studies/recipe.py --name views --seeds 0 1 2 \\
        --variant "luperson: method=moco" \\
        --variant "person-crop: method=moco crop_ratio=[0.375,0.667]"

appends one JSON line per (variant, seed) to ``reports/studies/recipe.jsonl`` (``--out``), and
prints a table of ``frozen mAP - untrained mAP`` per set, mean over seeds. Values are YAML
(``lr=0.03``, ``crop_ratio=[0.375,0.667]``, ``cc=false``). A (study, variant, seed) already in the
file is not run again. The generated data go to ``--work`` (default: a temporary folder).

``--paired "A - B"`` prints seed-paired differences; a name ``study/variant`` takes another
study's row (same data, so a baseline need not run twice). ``--data "pool.identities=5000"``
changes the generated data (``data`` keys, all variants of the call; use its own ``--work``).
``--bot`` also fine-tunes BoT (the default profile's) on CUHK03 and Market-1501 from each
pre-trained trunk and from the same seed's untrained one, and keeps both mAPs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from upreid.data.readers import read_dataset, read_pool
from upreid.data.synth import synthesize
from upreid.eval.frozen import frozen_probe
from upreid.params import PretrainParams, load_params
from upreid.progress import setup_logging
from upreid.report.text import excludes_zero, paired_interval
from upreid.runtime import CPU
from upreid.train.pretrain import pretrain

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SETS = ("cuhk03", "market1501", "personx", "msmt17")


def parse_variant(text: str) -> tuple[str, PretrainParams, dict[str, Any]]:
    """``"name: key=value key=value"`` -> (name, the default profile's ``pretrain`` section with
    those keys overridden, the overrides), through the project's ``-S`` override parser."""
    name, _, rest = text.partition(":")
    items = rest.split()
    overrides = {i.partition("=")[0]: yaml.safe_load(i.partition("=")[2]) for i in items}
    keys = [f"pretrain.{i}" for i in items] + [  # fine-tuning (--bot) loads the same trunk
        f"finetune.{i}" for i in items if i.startswith("arch=")
    ]
    pp = load_params(ROOT / "params.yaml", "default", keys).pretrain
    return name.strip(), pp, overrides


def done(out: Path) -> set[tuple[str, str, int]]:
    if not out.exists():
        return set()
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["study"], r["variant"], r["seed"]) for r in rows}


def run_one(pp: PretrainParams, work: Path, seed: int, bot: bool = False) -> dict[str, Any]:
    data = work / "data"
    pool = read_pool(data / "luperson")
    sets = {n: read_dataset(n, data / n) for n in SETS}
    probe = frozen_probe(
        sets, load_params(ROOT / "params.yaml", "default").eval, pp.height, pp.width, CPU
    )
    rows: list[dict[str, Any]] = []

    def keep(row: dict[str, float], step: int) -> None:
        if "frozen_mAP" in row:
            rows.append({"step": step, **row})

    run_dir = Path(tempfile.mkdtemp(dir=work, prefix="run-"))
    start = time.perf_counter()
    summary = pretrain(pp, pool, run_dir, seed, on_metrics=keep, probe=probe, probe_every=pp.epochs)
    wall = time.perf_counter() - start
    tuned = fine_tune_bot(sets, run_dir, seed, pp.arch) if bot else {}
    shutil.rmtree(run_dir)
    return {
        **tuned,
        "untrained": {n: rows[0][f"frozen_mAP_{n}"] for n in SETS},
        **(
            {"untrained_bnest": {n: rows[0][f"frozen_bnest_mAP_{n}"] for n in SETS}}
            if f"frozen_bnest_mAP_{SETS[0]}" in rows[0]
            else {}
        ),
        "trained": {n: rows[-1][f"frozen_mAP_{n}"] for n in SETS},
        "trained_rank1": {n: rows[-1][f"frozen_rank1_{n}"] for n in SETS},
        "steps": summary["steps"],
        "wall_s": wall,
        "final_loss": summary.get("loss"),
    }


BOT_SETS = ("cuhk03", "market1501")


def fine_tune_bot(sets: dict[str, Any], run_dir: Path, seed: int, arch: str) -> dict[str, Any]:
    """BoT (the default profile's, on ``arch``) on CUHK03 and Market-1501 from the pre-trained
    trunk and from the same seed's untrained one (``scratch``, the same for every variant of
    that trunk: kept beside the data, ``bot-scratch-<arch>-s<seed>.json``): final mAP of each."""
    from upreid.train.finetune import finetune

    params = load_params(
        ROOT / "params.yaml", "default", [f"pretrain.arch={arch}", f"finetune.arch={arch}"]
    )

    def tune(name: str, init: str, weights: str | None, out: Path) -> float:
        metrics = finetune(
            "bot",
            params.finetune.bot,
            params.finetune.arch,
            sets[name],
            init,
            weights,
            out,
            params.eval,
            seed,
            image_cache_mb=256,
        )
        shutil.rmtree(out)
        return float(metrics["mAP"])

    cache = run_dir.parent / f"bot-scratch-{arch}-s{seed}.json"
    if not cache.exists():
        scratch = {n: tune(n, "scratch", None, run_dir / f"bot-{n}-scratch") for n in BOT_SETS}
        cache.write_text(json.dumps(scratch))
    trained = {
        n: tune(n, "upreid", str(run_dir / "backbone.pt"), run_dir / f"bot-{n}") for n in BOT_SETS
    }
    return {"bot_untrained": json.loads(cache.read_text()), "bot_trained": trained}


def table(out: Path, study: str) -> str:
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["study"] == study]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    lines = [
        "| variant | seeds | steps | "
        + " | ".join(SETS)
        + " | sets >= +5 | over BN-est. | BoT "
        + " | BoT ".join(BOT_SETS)
        + " |",
        "|---|---|---|" + "---|" * len(SETS) + "---|---|" + "---|" * len(BOT_SETS),
    ]
    for name, rs in by.items():
        gains = {n: [r["trained"][n] - r["untrained"][n] for r in rs] for n in SETS}
        cells = []
        for n in SETS:
            g = gains[n]
            sd = f" ± {statistics.stdev(g):.1f}" if len(g) > 1 else ""
            mean = statistics.fmean(r["trained"][n] for r in rs)
            cells.append(f"{mean:.1f} ({statistics.fmean(g):+.1f}{sd})")
        wins = sum(statistics.fmean(gains[n]) >= 5 for n in SETS)
        est = [r for r in rs if "untrained_bnest" in r]
        wins_est = (
            str(
                sum(
                    statistics.fmean(r["trained"][n] - r["untrained_bnest"][n] for r in est) >= 5
                    for n in SETS
                )
            )
            if est
            else "-"
        )
        bot = []
        for n in BOT_SETS:
            tuned = [r for r in rs if "bot_trained" in r]
            if not tuned:
                bot.append("-")
                continue
            g = [r["bot_trained"][n] - r["bot_untrained"][n] for r in tuned]
            sd = f" ± {statistics.stdev(g):.1f}" if len(g) > 1 else ""
            mean = statistics.fmean(r["bot_trained"][n] for r in tuned)
            bot.append(f"{mean:.1f} ({statistics.fmean(g):+.1f}{sd})")
        lines.append(
            f"| {name} | {len(rs)} | {rs[0]['steps']} | "
            + " | ".join(cells)
            + f" | {wins} | {wins_est} | "
            + " | ".join(bot)
            + " |"
        )
    return "\n".join(lines)


def interval_cell(diffs: list[float]) -> str:
    """Paired differences as a table cell: mean and 95 % t interval, bold where the interval
    excludes 0; "-" with fewer than two."""
    ci = paired_interval(diffs)
    if ci is None:
        return "-"
    mean, lo, hi = ci
    text = f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}]"
    return f"**{text}**" if excludes_zero(lo, hi) else text


def paired(out: Path, study: str, pairs: list[str]) -> str:
    """``"A - B"`` per pair: the differences A - B matched by seed (the same seed's data order
    and initialisation), mean and 95 % t interval, frozen mAP on the three sets that are not at
    chance and BoT mAP; bold where the interval excludes 0. A name is a variant of ``study``, or
    ``other-study/variant`` for a row measured by another study on the same data."""
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    by = {(r["variant"], r["seed"]): r for r in rows if r["study"] == study}
    by |= {(f"{r['study']}/{r['variant']}", r["seed"]): r for r in rows}
    cols = [("trained", n) for n in SETS[1:]] + [("bot_trained", n) for n in BOT_SETS]
    lines = [
        "| difference | seeds | "
        + " | ".join(("BoT " if k == "bot_trained" else "") + n for k, n in cols)
        + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for pair in pairs:
        a, _, b = (x.strip() for x in pair.partition(" - "))
        seeds = sorted(s for (v, s) in by if v == a and (b, s) in by)
        for s in seeds:
            if by[(a, s)].get("data") != by[(b, s)].get("data"):
                raise SystemExit(f"error: {a} and {b} ran on different data (--data); no pairing")
        cells = []
        for key, n in cols:
            cells.append(
                interval_cell(
                    [
                        by[(a, s)][key][n] - by[(b, s)][key][n]
                        for s in seeds
                        if key in by[(a, s)] and key in by[(b, s)]
                    ]
                )
            )
        lines.append(f"| {a} - {b} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="the study's name (groups its rows)")
    ap.add_argument("--variant", action="append", default=[], help='"name: key=value ..."')
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--work", type=Path, help="keep the generated data here")
    ap.add_argument("--out", type=Path, default=HERE / "recipe.jsonl")
    ap.add_argument("--table", action="store_true", help="print the study's table and stop")
    ap.add_argument(
        "--paired", action="append", default=[], help='"A - B": print paired differences and stop'
    )
    ap.add_argument("--data", default="", help='data overrides: "pool.identities=5000 ..."')
    ap.add_argument("--bot", action="store_true", help="also fine-tune BoT on CUHK03, Market")
    args = ap.parse_args()
    if args.table or args.paired:
        print(
            table(args.out, args.name) if args.table else paired(args.out, args.name, args.paired)
        )
        return
    setup_logging()
    data_overrides = [f"data.{item}" for item in args.data.split()]
    base = load_params(ROOT / "params.yaml", "default", data_overrides)
    variants = [parse_variant(v) for v in args.variant]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        if not (work / "data" / "luperson").exists():
            synthesize(base.data, work / "data", inside=work)
        finished = done(args.out)
        for seed in args.seeds:
            for name, pp, overrides in variants:
                if (args.name, name, seed) in finished:
                    continue
                result = run_one(pp, work, seed, bot=args.bot)
                row = {
                    "study": args.name,
                    "variant": name,
                    "seed": seed,
                    "overrides": overrides,
                    **({"data": args.data} if args.data else {}),
                    **result,
                }
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                gain = {n: round(result["trained"][n] - result["untrained"][n], 1) for n in SETS}
                print(f"{name} seed {seed}: {result['wall_s']:.0f} s, gain {gain}", flush=True)
    print(table(args.out, args.name))


if __name__ == "__main__":
    main()
