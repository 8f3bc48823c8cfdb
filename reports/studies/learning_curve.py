"""Study: frozen-feature mAP against the pre-training step, from one long run per method.

The default profile's data and pre-training recipe, with only ``epochs`` raised (the schedule
stretches with it), frozen-feature retrieval (:mod:`upreid.eval.frozen`) on the four generated
labeled sets before the first step and after every ``--probe-every`` epochs. The step where a
method's curve rises above its step-0 value (the untrained network) is where pre-training starts
to teach re-ID.

    python reports/studies/learning_curve.py --epochs 120 --probe-every 8 --variants moco upreid

writes ``reports/studies/learning_curve.json`` (every measurement) and ``learning_curve.png``;
the generated data and the runs go to a temporary folder (``--work`` keeps them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from matplotlib.figure import Figure

from upreid.data.readers import read_dataset, read_pool
from upreid.data.synth import synthesize
from upreid.eval.frozen import frozen_probe
from upreid.experiments import PRETRAIN_VARIANTS, pretrain_variant
from upreid.params import load_params
from upreid.progress import setup_logging
from upreid.runtime import CPU
from upreid.train.pretrain import pretrain

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def run(
    variants: list[str],
    epochs: int,
    work: Path,
    seed: int,
    out: Path,
    probe_every: int = 1,
    overrides: tuple[str, ...] = (),
) -> dict[str, list[dict]]:
    """Pre-train each variant for ``epochs``; ``out`` (JSON) is rewritten after each one. The
    curves of other variants already in ``out`` with the same epochs and seed are kept, so the
    variants can be run one call at a time."""
    keys = [f"pretrain.{o}" for o in overrides]
    keys += [f"finetune.{o}" for o in overrides if o.startswith("arch=")]  # kept equal
    params = load_params(ROOT / "params.yaml", "default", keys)
    data = work / "data"
    if not (data / "luperson").exists():
        synthesize(params.data, data, inside=work)
    pool = read_pool(data / "luperson")
    meta = {
        "epochs": epochs,
        "seed": seed,
        "profile": "default",
        "set": sorted(overrides),
        "probe_every": probe_every,
    }
    curves: dict[str, list[dict]] = {}
    if out.exists():
        old = json.loads(out.read_text())
        if all(old.get(k) == v for k, v in meta.items()):
            curves = {k: v for k, v in old["curves"].items() if k not in variants}
    for variant in variants:
        pp = dataclasses.replace(pretrain_variant(params.pretrain, variant), epochs=epochs)
        sets = {n: read_dataset(n, data / n) for n in pp.frozen_eval}
        probe = frozen_probe(sets, params.eval, pp.height, pp.width, CPU)
        rows: list[dict] = []

        def keep(row: dict[str, float], step: int, rows: list[dict] = rows) -> None:
            if "frozen_mAP" in row:
                rows.append({"step": step, **row})

        start = time.perf_counter()
        pretrain(
            pp,
            pool,
            work / "runs" / variant,
            seed,
            on_metrics=keep,
            probe=probe,
            probe_every=probe_every,
        )
        if not rows:
            raise SystemExit(
                f"{work / 'runs' / variant} holds a finished run (nothing was measured): "
                "give a new --work folder"
            )
        curves[variant] = rows
        wall = time.perf_counter() - start
        print(f"{variant}: {len(rows)} measurements, {wall:.0f} s", flush=True)
        out.write_text(json.dumps({**meta, "curves": curves}, indent=1))
    return curves


def figure(curves: dict[str, list[dict]], path: Path) -> None:
    first = next(iter(curves.values()))[0]
    datasets = sorted(k.removeprefix("frozen_mAP_") for k in first if k.startswith("frozen_mAP_"))
    fig = Figure(figsize=(3.6 * len(datasets), 3.2))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets, strict=True):
        for variant, rows in curves.items():
            steps = [r["step"] for r in rows]
            ax.plot(steps, [r[f"frozen_mAP_{dataset}"] for r in rows], marker="o", label=variant)
        first = next(iter(curves.values()))[0]
        ax.axhline(first[f"frozen_mAP_{dataset}"], color="grey", ls="--", lw=1, label="untrained")
        if f"frozen_bnest_mAP_{dataset}" in first:
            ax.axhline(
                first[f"frozen_bnest_mAP_{dataset}"],
                color="grey",
                ls=":",
                lw=1,
                label="untrained, BN estimated",
            )
        ax.set(title=dataset, xlabel="pre-training step", ylabel="frozen mAP (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=120, help="the default profile has 12")
    ap.add_argument("--probe-every", type=int, default=8, help="epochs between measurements")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a pretrain key of the default profile (arch=resnet18)",
    )
    ap.add_argument("--variants", nargs="+", default=["moco", "upreid"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, help="keep the data and runs here")
    ap.add_argument("--out", type=Path, default=HERE / "learning_curve")
    ap.add_argument("--redraw", action="store_true", help="only redraw the figure from --out")
    args = ap.parse_args()
    if args.probe_every < 1:
        ap.error(f"--probe-every must be >= 1, got {args.probe_every}")
    owned = {k for v in PRETRAIN_VARIANTS.values() for k in v}
    if clash := sorted({o.partition("=")[0] for o in args.set} & owned):
        ap.error(f"--set {clash}: the variant sets these; pick another --variants")
    if args.redraw:
        curves = json.loads(args.out.with_suffix(".json").read_text())["curves"]
        figure(curves, args.out.with_suffix(".png"))
        return
    setup_logging()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        curves = run(
            args.variants,
            args.epochs,
            work,
            args.seed,
            args.out.with_suffix(".json"),
            args.probe_every,
            tuple(args.set),
        )
    figure(curves, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
