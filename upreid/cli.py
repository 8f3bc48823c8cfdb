"""The `upreid` command: the same functions the DVC stages call, one command each."""

from __future__ import annotations

import functools
import json
import pickle
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml

from upreid.data.records import DatasetLayoutError
from upreid.experiments import DATASETS, METHODS, PRETRAIN_VARIANTS
from upreid.params import Params, ParamsError, load_params
from upreid.progress import setup_logging
from upreid.runtime import DeviceError
from upreid.tracking import TrackingError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="UP-ReID: pre-train, fine-tune, evaluate and report for person re-ID.",
)
data_app = typer.Typer(no_args_is_help=True, help="Generate or check datasets.")
app.add_typer(data_app, name="data")

FORMATS = ("market1501", "cuhk03", "msmt17", "personx", "luperson")
STATE: dict[str, Any] = {"params": "params.yaml", "profile": None, "debug": False}

# Choices, shown by --help and checked before any work. Members are taken by name
# (``Format["market1501"]``): a type checker does not know the members of an Enum built this way.
Method = Enum("Method", {m: m for m in METHODS}, type=str)  # type: ignore[misc]
Dataset = Enum("Dataset", {d: d for d in DATASETS}, type=str)  # type: ignore[misc]
Variant = Enum("Variant", {v: v for v in PRETRAIN_VARIANTS}, type=str)  # type: ignore[misc]
Format = Enum("Format", {f: f for f in FORMATS}, type=str)  # type: ignore[misc]

# What a user's mistake raises (a bad value, file or path, an unreachable server, a diverged
# run): one line on stderr and exit status 2; ``--debug`` shows the traceback instead.
USER_ERRORS = (
    ParamsError,
    DatasetLayoutError,
    DeviceError,
    TrackingError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ValueError,
    KeyError,
    pickle.UnpicklingError,
    yaml.YAMLError,
    EOFError,
    RuntimeError,
)
C = TypeVar("C", bound=Callable[..., Any])


def user_errors(command: C) -> C:
    """Turn the user errors a command raises into ``error: <message>`` and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):  # already reported (click's Exit is a RuntimeError)
            raise
        except USER_ERRORS as err:
            if STATE["debug"]:
                raise
            message = " ".join(str(err).split()) or type(err).__name__
            _fail(f"{message} (--debug shows the traceback)")

    return wrapper  # type: ignore[return-value]


ProfileOpt = Annotated[str | None, typer.Option("--profile", help="default, quick or paper")]


@app.callback()
def main(
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
    profile: ProfileOpt = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-S", help="override one value: -S finetune.bot.lr=0.002 (repeatable)"
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
) -> None:
    setup_logging()
    STATE.update(params=params, profile=profile, overrides=overrides or [], debug=debug)


def _params() -> Params:
    try:
        return load_params(STATE["params"], STATE["profile"], STATE.get("overrides"))
    except ParamsError as err:
        if STATE["debug"]:
            raise
        _fail(str(err))
        raise


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _table(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("mAP", "rank1", "rank5", "rank10", "rank20", "mINP") if k in metrics]
    head = " | ".join(f"{k:>7}" for k in keys)
    vals = " | ".join(f"{metrics[k]:7.2f}" for k in keys)
    return f"{head}\n{vals}"


@data_app.command("synth")
@user_errors
def data_synth() -> None:
    """Generate the datasets of the profile (params `data`) and the contact sheet."""
    from upreid.steps.data import run_data

    params = _params()
    if params.data.source != "synth":
        _fail(
            f"data.source is {params.data.source!r} in profile {params.profile!r}: "
            "nothing to generate"
        )
    summary = run_data(params)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "params"}, indent=1))


@data_app.command("check")
@user_errors
def data_check(
    path: Path, fmt: Annotated[Format, typer.Option("--format")] = Format["market1501"]
) -> None:
    """Count images, identities and cameras per split of a dataset folder; list problems."""
    from upreid.data.readers import check_dataset, read_pool
    from upreid.data.records import DatasetLayoutError

    kind: str = Format(fmt).value
    try:
        if kind == "luperson":
            typer.echo(f"luperson {path}: {len(read_pool(path))} images")
            return
        report = check_dataset(kind, path)
    except (DatasetLayoutError, FileNotFoundError) as err:
        _fail(str(err))
        return
    empty = [
        split for split in ("train", "query", "gallery") if not report.get(split, {}).get("images")
    ]
    if empty:
        report["problems"].append(f"empty split(s): {', '.join(empty)}")
    typer.echo(json.dumps(report, indent=1, default=str))
    if report["problems"]:  # the report is printed; the status says it is not clean
        typer.secho(f"{len(report['problems'])} problem(s) found in {path}", err=True)
        raise typer.Exit(1)


@app.command()
@user_errors
def pretrain(
    variant: Annotated[
        Variant,
        typer.Option(help="moco, upreid or an ablation"),
    ] = Variant["upreid"],
    max_steps: Annotated[int | None, typer.Option(help="stop early")] = None,
    pretrain_seed: Annotated[
        int, typer.Option(help="pre-training seed offset (moco, upreid): run <variant>-p<N>")
    ] = 0,
) -> None:
    """Pre-train one variant on the unlabeled pool (resumes a killed run)."""
    from upreid.experiments import SEEDED_VARIANTS, pretrain_name
    from upreid.pipeline import relaunch_distributed
    from upreid.steps.pretrain import run_pretrain

    name = Variant(variant).value
    if pretrain_seed < 0 or (pretrain_seed and name not in SEEDED_VARIANTS):
        _fail(f"--pretrain-seed takes an offset >= 0, and > 0 only for {list(SEEDED_VARIANTS)}")
    params = _params()
    if params.launch.pretrain == "ddp":  # spread: one run takes one process
        relaunch_distributed(params, [sys.argv[0], *sys.argv[1:]])
    name = pretrain_name(name, pretrain_seed)
    typer.echo(json.dumps(run_pretrain(params, name, max_steps=max_steps), indent=1))


def _ablation_variant(
    no_cc: bool, no_icc: bool, no_hm: bool, patches: int | None, positive: str | None
) -> str:
    chosen = {
        "icc": no_cc,
        "cc": no_icc,
        "nohm": no_hm,
        "n4": patches == 4,
        "n12": patches == 12,
        "random": positive == "random",
        "online": positive == "online",
    }
    picked = [v for v, on in chosen.items() if on]
    if patches not in (None, 4, 8, 12) or positive not in (None, "symmetric", "random", "online"):
        _fail("--patches takes 4, 8 or 12; --positive takes symmetric, random or online")
    if len(picked) != 1:
        _fail(
            "name exactly one ablation: --no-cc, --no-icc, --no-hm, --patches 4|12, "
            "--positive random|online"
        )
    return picked[0]


@app.command()
@user_errors
def ablate(
    no_cc: Annotated[bool, typer.Option("--no-cc")] = False,
    no_icc: Annotated[bool, typer.Option("--no-icc")] = False,
    no_hm: Annotated[bool, typer.Option("--no-hm")] = False,
    patches: Annotated[int | None, typer.Option("--patches")] = None,
    positive: Annotated[str | None, typer.Option("--positive")] = None,
) -> None:
    """Pre-train an ablation variant, fine-tune MGN on CUHK03 from it, print its row beside the
    full model's."""
    from upreid.steps.finetune import ablate_variant

    variant = _ablation_variant(no_cc, no_icc, no_hm, patches, positive)
    rows = ablate_variant(_params(), variant)
    for name, metrics in rows.items():
        typer.echo(
            f"{name:>8}: "
            + "  ".join(
                f"{k} {metrics.get(k, float('nan')):.1f}" for k in ("mAP", "rank1", "rank5")
            )
        )


def _pretrain_name(name: str) -> bool:
    from upreid.experiments import split_pretrain_name

    try:
        split_pretrain_name(name)
    except ValueError:
        return False
    return True


@app.command()
@user_errors
def finetune(
    method: Annotated[Method, typer.Option()] = Method["bot"],
    dataset: Annotated[Dataset, typer.Option()] = Dataset["market1501"],
    init: Annotated[
        str,
        typer.Option(
            help="scratch, insup, moco, upreid, a variant, a seeded run (moco-p1), or a "
            "weights file (a path)"
        ),
    ] = "upreid",
    seed: Annotated[int | None, typer.Option()] = None,
    data: Annotated[Path | None, typer.Option(help="dataset folder")] = None,
) -> None:
    """Fine-tune one supervised method from one initialisation."""
    from upreid.experiments import FinetuneRun
    from upreid.steps.finetune import finetune_many

    params = _params()
    if seed is not None and seed < 0:
        _fail(f"--seed must be >= 0, got {seed}")
    if init not in ("scratch", "insup") and not _pretrain_name(init):
        init = f"file:{Path(init).resolve()}"  # a path, taken from the current folder
    run = FinetuneRun(
        Method(method).value, Dataset(dataset).value, init, params.seed if seed is None else seed
    )
    metrics = finetune_many(params, [run], data_path=data)[0]
    typer.echo(_table(metrics))


@app.command()
@user_errors
def adapt(
    target: Annotated[Dataset, typer.Option()] = Dataset["market1501"],
    source: Annotated[Dataset | None, typer.Option()] = None,
    init: Annotated[str, typer.Option()] = "upreid",
) -> None:
    """SpCL on a target dataset, optionally with a labeled source (domain adaptation)."""
    from upreid.steps.spcl import adapt_one

    src = Dataset(source).value if source is not None else None
    typer.echo(_table(adapt_one(_params(), Dataset(target).value, src, init)))


@app.command("eval")
@user_errors
def evaluate(
    checkpoint: Path,
    data: Annotated[Path, typer.Option(help="dataset folder")],
    fmt: Annotated[Format, typer.Option("--format")] = Format["market1501"],
    out: Annotated[Path, typer.Option(help="folder for metrics.json and ranks.png")] = Path(
        "eval_out"
    ),
) -> None:
    """Evaluate a checkpoint on a dataset: metrics table, JSON, and a ranked-list picture."""
    from upreid.steps.inference import evaluate_checkpoint

    if Format(fmt) is Format["luperson"]:
        _fail("--format luperson is an unlabeled pool: evaluation needs a labeled dataset")
    metrics = evaluate_checkpoint(_params(), checkpoint, data, Format(fmt).value, out)
    typer.echo(_table(metrics))
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'ranks.png'}")


@app.command()
@user_errors
def search(
    checkpoint: Path,
    query: Annotated[Path, typer.Option(help="query image")],
    gallery: Annotated[Path, typer.Option(help="folder of gallery images")],
    topk: Annotated[int, typer.Option(min=1)] = 10,
) -> None:
    """The top-k gallery images nearest to one query image."""
    from upreid.steps.inference import search_gallery

    for rank, (path, dist) in enumerate(
        search_gallery(_params(), checkpoint, query, gallery, topk), start=1
    ):
        typer.echo(f"{rank:3d}  {dist:.4f}  {path}")


@app.command()
@user_errors
def explain(
    checkpoints: Annotated[list[Path], typer.Argument(help="one or more checkpoints")],
    images: Annotated[list[Path], typer.Option("--images", help="query images")],
    out: Annotated[Path, typer.Option()] = Path("explain.png"),
) -> None:
    """Feature-response maps of each checkpoint's trunk over a few images (Figure 8)."""
    from upreid.pipeline import runtime_of
    from upreid.steps.inference import explain_checkpoints

    typer.echo(f"wrote {explain_checkpoints(checkpoints, images, out, runtime_of(_params()))}")


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"


@app.command()
@user_errors
def export(
    checkpoint: Path,
    fmt: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.onnx,
    out: Annotated[Path | None, typer.Option(help="output file")] = None,
) -> None:
    """Export a checkpoint's embedding model (images in, L2-normalised features out)."""
    from upreid.export import export as run

    fmt_value = ExportFormat(fmt).value
    target = out or checkpoint.with_suffix(".onnx" if fmt_value == "onnx" else ".ts")
    typer.echo(f"wrote {run(checkpoint, target, fmt_value)}")


@app.command()
@user_errors
def register(
    run: Annotated[str, typer.Argument(help="run key (finetune/bot/market1501/upreid/s0) or id")],
    name: Annotated[str, typer.Option(help="registered model name")] = "upreid-reid",
) -> None:
    """Register a fine-tuning or SpCL run's MLflow model in the model registry."""
    from upreid import tracking

    params = _params()
    run_id = tracking.find_run_id(params.profile, run, params.root)
    version = tracking.register_model(run_id, name, params.root)
    typer.echo(f"registered {run} (run {run_id}) as {name} version {version}")


@app.command()
@user_errors
def tables() -> None:
    """Write the paper's tables and figures to reports/ from the MLflow runs."""
    from upreid.pipeline import where
    from upreid.steps.report import run_report

    params = _params()
    typer.echo(json.dumps(run_report(params), indent=1))
    typer.echo(where(params))


@app.command()
@user_errors
def info(
    port: Annotated[int, typer.Option(min=1, max=65535, help="port of `mlflow ui`")] = 5000,
) -> None:
    """Where the tables are, and the MLflow UI page of this profile's training runs."""
    from upreid.pipeline import where

    typer.echo(where(_params(), port=port))


if __name__ == "__main__":
    app()
