"""Typed, validated parameters: one frozen dataclass per ``params.yaml`` section.

``params.yaml`` holds every value. Its top-level ``profile`` key names a profile; the
``profiles`` section holds, per profile, the keys that differ from the base sections (sizes,
never code). :func:`load_params` deep-merges the chosen profile over the base and builds the
dataclasses; an unknown key, a missing key or a wrongly typed value raises :class:`ParamsError`
naming the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ParamsError(ValueError):
    """A params file that does not match the expected schema."""


# ----------------------------------------------------------------------------- generic loader


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return from_mapping(tp, value, where)
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ParamsError as err:
                errors.append(str(err))
        raise ParamsError(f"{where}: {value!r} matches none of {args}: {errors}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ParamsError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ParamsError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {value!r}")
        return value
    raise ParamsError(f"{where}: unsupported type {_type_name(tp)}")


def from_mapping(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``raw``; every field is required, no extra key allowed."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {unknown}; valid keys are {names}")
    missing = [n for n in names if n not in raw]
    if missing:
        raise ParamsError(
            f"{where}: missing key(s) {missing}; add them (the repository's params.yaml has "
            "each with its default and what it does)"
        )
    values = {n: _convert(raw[n], hints[n], f"{where}.{n}") for n in names}
    try:
        return cls(**values)
    except ParamsError:
        raise
    except ValueError as err:  # __post_init__ range checks
        raise ParamsError(f"{where}: {err}") from err


def _positive(where: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ParamsError(f"{where}.{name} must be > 0, got {value}")


def _non_negative(where: str, **values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ParamsError(f"{where}.{name} must be >= 0, got {value}")


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SynthSetParams:
    """Size and cameras of one generated labeled dataset."""

    train_identities: int
    test_identities: int
    cameras: int
    images_per_camera: tuple[int, int]  # min, max images of one identity in one camera
    cameras_per_identity: tuple[int, int]  # min, max cameras an identity appears in
    distractors: int  # gallery images of pid 0 (Market-style layouts only)

    def __post_init__(self) -> None:
        _positive(
            "data",
            train_identities=self.train_identities,
            test_identities=self.test_identities,
            cameras=self.cameras,
        )
        _non_negative("data", distractors=self.distractors)


@dataclass(frozen=True)
class PoolParams:
    """The unlabeled LUPerson-like pre-training pool."""

    identities: int
    images_per_identity: tuple[int, int]
    cameras: int
    format: Literal["lmdb", "folder"]

    def __post_init__(self) -> None:
        _positive("data.pool", identities=self.identities, cameras=self.cameras)


@dataclass(frozen=True)
class DataParams:
    """``data``: the procedural generator and where data lives."""

    source: Literal["synth", "disk"]  # synth: generate under root; disk: real datasets in root
    root: str  # holds luperson/, market1501/, cuhk03/, msmt17/, personx/
    seed: int
    height: int
    width: int
    jpeg_quality: tuple[int, int]
    pool: PoolParams
    market1501: SynthSetParams
    cuhk03: SynthSetParams
    msmt17: SynthSetParams
    personx: SynthSetParams

    def __post_init__(self) -> None:
        _positive("data", height=self.height, width=self.width)
        _non_negative("data", seed=self.seed)


@dataclass(frozen=True)
class PretrainParams:
    """``pretrain``: MoCo v2 / UP-ReID pre-training (docs/METHOD.md, "Pre-training")."""

    method: Literal["moco", "upreid"]
    arch: Literal["resnet10", "resnet18", "resnet34", "resnet50"]
    height: int
    width: int
    batch_size: int
    epochs: int
    lr: float  # at batch_size, not rescaled
    momentum: float
    weight_decay: float
    warmup_epochs: int
    lr_floor: float  # the cosine decays lr to lr x lr_floor (0: to 0, MoCo v2's; 1: constant)
    queue_size: int  # K
    ema_momentum: float  # m
    dim: int
    hidden_dim: int
    temperature_global: float  # tau_g
    temperature_patch: float  # tau_p
    temperature_consistency: float  # tau_c
    lambda_global: float
    lambda_patch: float
    lambda_cc: float
    cc: bool
    icc: bool
    hm: bool
    patches: int  # N = 2R
    positive: Literal["symmetric", "random", "online"]
    bn_splits: int  # shuffle-BN groups of the EMA encoder within one process
    workers: int
    checkpoint_every_steps: int  # 0: only at epoch ends
    log_every_steps: int  # losses to MLflow and the run's log every N steps (and epoch ends)
    compile: bool
    # frozen-feature retrieval (the pooled backbone, no fine-tuning) on these labeled sets at
    # step 0 and every ``frozen_eval_every`` epochs: what pre-training taught; () turns it off
    frozen_eval: tuple[str, ...]
    frozen_eval_every: int
    # the views (docs/METHOD.md, "Views"): RandomResizedCrop's area fraction and aspect (width /
    # height of the crop), Gaussian blur's sigma (at 256 px height when ``blur_relative``)
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    blur_sigma: tuple[float, float]
    blur_relative: bool
    # colour jitter (brightness, contrast, saturation, hue; all 0: none, LUPerson's choice),
    # applied with probability ``color_jitter_p``
    color_jitter: tuple[float, float, float, float]
    color_jitter_p: float
    cc_target: Literal["ema", "online"]  # the encoder that embeds x_o for P^o (no gradient)
    min_patch_height: int  # ICC patches shorter than this are resized up to it (0: never)
    bn_recalibrate: int  # batches of whole images that re-estimate BN statistics at the end
    # the source of x_k: ``image``, a second view of x_q's image (MoCo's and the paper's);
    # ``person``, a view of another pool image of the same person, named ``<person>_...`` (a
    # tracklet or a noisy label, as in LUPerson-NL: not the paper's unsupervised setting)
    positives: Literal["image", "person"]

    def __post_init__(self) -> None:
        where = "pretrain"
        _positive(
            where,
            height=self.height,
            width=self.width,
            batch_size=self.batch_size,
            epochs=self.epochs,
            lr=self.lr,
            queue_size=self.queue_size,
            dim=self.dim,
            hidden_dim=self.hidden_dim,
            bn_splits=self.bn_splits,
            log_every_steps=self.log_every_steps,
            temperature_global=self.temperature_global,
            temperature_patch=self.temperature_patch,
            temperature_consistency=self.temperature_consistency,
        )
        _non_negative(
            where,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            warmup_epochs=self.warmup_epochs,
            lambda_global=self.lambda_global,
            lambda_patch=self.lambda_patch,
            lambda_cc=self.lambda_cc,
            workers=self.workers,
            checkpoint_every_steps=self.checkpoint_every_steps,
        )
        _positive(where, frozen_eval_every=self.frozen_eval_every)
        labeled = ("cuhk03", "market1501", "personx", "msmt17")
        for name in self.frozen_eval:
            if name not in labeled:
                raise ParamsError(
                    f"{where}.frozen_eval: unknown labeled set {name!r}; valid are {list(labeled)}"
                )
        if not 0 <= self.lr_floor <= 1:
            raise ParamsError(f"{where}.lr_floor must be in [0, 1], got {self.lr_floor}")
        if not 0 <= self.ema_momentum < 1:
            raise ParamsError(f"{where}.ema_momentum must be in [0, 1), got {self.ema_momentum}")
        if self.patches < 2 or self.patches % 2:
            raise ParamsError(f"{where}.patches must be an even number >= 2, got {self.patches}")
        _non_negative(where, min_patch_height=self.min_patch_height)
        _non_negative(where, bn_recalibrate=self.bn_recalibrate)
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ParamsError(f"{where}.{name} must be [low, high] with 0 < low <= high")
        if min(self.color_jitter) < 0 or self.color_jitter[3] > 0.5:
            raise ParamsError(f"{where}.color_jitter: each >= 0 and hue <= 0.5")
        if not 0 <= self.color_jitter_p <= 1:
            raise ParamsError(f"{where}.color_jitter_p must be in [0, 1]")
        if self.crop_scale[1] > 1:
            raise ParamsError(f"{where}.crop_scale: an area fraction is at most 1")


@dataclass(frozen=True)
class MethodParams:
    """Recipe of one supervised fine-tuning method."""

    height: int
    width: int
    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    milestones: tuple[int, ...]  # epochs at which lr is multiplied by gamma
    gamma: float
    p: int  # identities per batch
    k: int  # images per identity
    margin: float  # triplet margin; 0 means soft margin
    label_smoothing: float
    eval_every: int

    def __post_init__(self) -> None:
        where = "finetune"
        _positive(
            where,
            height=self.height,
            width=self.width,
            epochs=self.epochs,
            lr=self.lr,
            p=self.p,
            k=self.k,
            eval_every=self.eval_every,
            gamma=self.gamma,
        )
        _non_negative(
            where,
            weight_decay=self.weight_decay,
            margin=self.margin,
            warmup_epochs=self.warmup_epochs,
            label_smoothing=self.label_smoothing,
        )


@dataclass(frozen=True)
class FinetuneParams:
    """``finetune``: supervised BoT, MGN, BDB, PCB (docs/METHOD.md, "Fine-tuning")."""

    arch: Literal["resnet10", "resnet18", "resnet34", "resnet50"]
    insup_weights: str  # local torchvision ResNet ImageNet state-dict file
    workers: int  # loader processes (fine-tuning and SpCL)
    checkpoint_every: int  # epochs between resumable checkpoints (fine-tuning and SpCL)
    image_cache_mb: int  # decoded images kept in memory per run; 0: off (see ImageCache)
    bot: MethodParams
    mgn: MethodParams
    bdb: MethodParams
    pcb: MethodParams

    def __post_init__(self) -> None:
        _positive("finetune", checkpoint_every=self.checkpoint_every)
        _non_negative("finetune", workers=self.workers, image_cache_mb=self.image_cache_mb)


@dataclass(frozen=True)
class SpclParams:
    """``spcl``: self-paced contrastive learning (Ge et al. 2020)."""

    height: int
    width: int
    epochs: int
    iters_per_epoch: int
    lr: float
    weight_decay: float
    batch_size: int
    k: int  # images per pseudo identity in a batch
    temperature: float
    memory_momentum: float
    k1: int
    k2: int
    eps: float
    eps_gap: float  # tight = eps - gap, loose = eps + gap
    min_samples: int
    eval_every: int

    def __post_init__(self) -> None:
        _positive(
            "spcl",
            height=self.height,
            width=self.width,
            epochs=self.epochs,
            iters_per_epoch=self.iters_per_epoch,
            lr=self.lr,
            batch_size=self.batch_size,
            k=self.k,
            temperature=self.temperature,
            eps=self.eps,
            k1=self.k1,
            k2=self.k2,
            min_samples=self.min_samples,
            eval_every=self.eval_every,
        )
        _non_negative("spcl", weight_decay=self.weight_decay, eps_gap=self.eps_gap)
        if not 0 <= self.memory_momentum < 1:
            raise ParamsError(f"spcl.memory_momentum must be in [0, 1), got {self.memory_momentum}")


@dataclass(frozen=True)
class EvalParams:
    """``eval``: the re-ID protocol."""

    metric: Literal["cosine", "euclidean"]
    rerank: bool
    rerank_k1: int
    rerank_k2: int
    rerank_lambda: float
    flip: bool
    batch_size: int
    chunk: int  # queries per chunk in the metric computation

    def __post_init__(self) -> None:
        _positive(
            "eval",
            batch_size=self.batch_size,
            chunk=self.chunk,
            rerank_k1=self.rerank_k1,
            rerank_k2=self.rerank_k2,
        )
        if not 0 <= self.rerank_lambda <= 1:
            raise ParamsError(f"eval.rerank_lambda must be in [0, 1], got {self.rerank_lambda}")


@dataclass(frozen=True)
class RuntimeParams:
    """``runtime``: where every stage computes (training, extraction, distances, ranking)."""

    device: str  # auto (CUDA when present) | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"]  # auto: bf16 where the device has it natively
    channels_last: bool

    def __post_init__(self) -> None:
        ok = self.device in ("auto", "cpu", "cuda") or (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        )
        if not ok:
            raise ParamsError(f"runtime.device: {self.device!r} is not auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class PipelineParams:
    """``pipeline``: which runs the tables compare (values, read by the library, not by DVC)."""

    inits: tuple[str, ...]  # fine-tuning initialisations: scratch, insup, moco, upreid
    headline_seeds: int  # fine-tune seeds of the headline cells (MGN on CUHK03 and Market-1501)
    pretrain_seeds: int  # pre-training seeds of moco and upreid (each fine-tuned in the headline)
    log_models: bool  # every fine-tuned and adapted model also as an MLflow model (torch.export)
    curves: Literal["figures", "all"]  # fine-tuning runs that evaluate every eval_every epochs:
    # those a figure draws (the others once, at the end) | all

    def __post_init__(self) -> None:
        _positive(
            "pipeline", headline_seeds=self.headline_seeds, pretrain_seeds=self.pretrain_seeds
        )
        valid = ("scratch", "insup", "moco", "upreid")
        for init in self.inits:
            if init not in valid:
                raise ParamsError(f"pipeline.inits: unknown init {init!r}; valid are {list(valid)}")


@dataclass(frozen=True)
class LaunchParams:
    """``launch``: processes of each training stage (torchrun when more than one)."""

    nproc_per_node: int
    nnodes: int
    rdzv_endpoint: str  # host:port of the rendezvous for nnodes > 1; "" for one node
    pretrain: Literal["ddp", "spread"]  # ddp: each pre-training run over every process;
    # spread: each run in one process, the runs spread over them (as fine-tuning's are)

    def __post_init__(self) -> None:
        _positive("launch", nproc_per_node=self.nproc_per_node, nnodes=self.nnodes)
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ParamsError("launch.rdzv_endpoint: required when launch.nnodes > 1")


NO_IMAGENET_ARCHS = ("resnet10",)  # trunks torchvision has no ImageNet weights for


@dataclass(frozen=True)
class Params:
    """The whole resolved ``params.yaml``."""

    profile: str
    seed: int
    data: DataParams
    pretrain: PretrainParams
    finetune: FinetuneParams
    spcl: SpclParams
    eval: EvalParams
    pipeline: PipelineParams
    launch: LaunchParams
    runtime: RuntimeParams
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    root: Path = field(default=Path("."), compare=False)  # relative paths start here

    def __post_init__(self) -> None:
        if self.pretrain.arch != self.finetune.arch:
            raise ParamsError(
                f"pretrain.arch {self.pretrain.arch} and finetune.arch {self.finetune.arch} "
                "differ: fine-tuning loads the pre-trained trunks; set both to one ResNet"
            )
        if "insup" in self.pipeline.inits and self.finetune.arch in NO_IMAGENET_ARCHS:
            raise ParamsError(
                f"pipeline.inits has insup, but {self.finetune.arch} has no ImageNet weights: "
                "drop insup, or set pretrain.arch and finetune.arch to resnet18 (or resnet50) "
                "with finetune.insup_weights"
            )

    def digest(self) -> str:
        """Short hash of the resolved values (an MLflow tag)."""
        blob = json.dumps(self.raw, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


SECTIONS: dict[str, type] = {
    "data": DataParams,
    "pretrain": PretrainParams,
    "finetune": FinetuneParams,
    "spcl": SpclParams,
    "eval": EvalParams,
    "pipeline": PipelineParams,
    "launch": LaunchParams,
    "runtime": RuntimeParams,
}
TOP_KEYS = ("profile", "seed", "profiles", *SECTIONS)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any], where: str) -> dict:
    """``base`` with ``override`` laid over it; an override key unknown to ``base`` is an error."""
    merged = dict(base)
    for key, value in override.items():
        if key not in base:
            raise ParamsError(f"{where}.{key}: unknown key; valid keys are {sorted(base)}")
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            merged[key] = deep_merge(base[key], value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def resolve(raw: Mapping[str, Any], profile: str | None = None) -> dict[str, Any]:
    """Merge the chosen profile's overrides over the base sections; return plain data."""
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise ParamsError(f"params: unknown top-level key(s) {unknown}; valid are {list(TOP_KEYS)}")
    missing = [k for k in ("profile", "seed", *SECTIONS) if k not in raw]
    if missing:
        raise ParamsError(f"params: missing top-level key(s) {missing}")
    profile = profile or raw["profile"]
    profiles = raw.get("profiles") or {}
    base = {k: raw[k] for k in ("seed", *SECTIONS)}
    if profile in profiles:
        base = deep_merge(base, profiles[profile] or {}, f"profiles.{profile}")
    elif profile != "default":
        valid = sorted({"default", *profiles})
        raise ParamsError(f"params.profile: unknown profile {profile!r}; valid are {valid}")
    return {"profile": profile, **base}


def apply_overrides(resolved: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``resolved`` with each ``key.path=value`` laid over it (the value read as YAML); a key
    that does not exist is an error naming it."""
    out = json.loads(json.dumps(resolved))  # a deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ParamsError(
                f"override {item!r}: expected key.path=value, e.g. finetune.bot.lr=0.002"
            )
        node, parts = out, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:i]) or "params"
                valid = sorted(node) if isinstance(node, dict) else []
                raise ParamsError(
                    f"override {key}: {where} has no key {part!r}; valid keys are {valid}"
                )
            if i < len(parts) - 1:
                node = node[part]
        try:
            node[parts[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ParamsError(f"override {key}: value {text!r} is not valid YAML") from err
    return out


def parse(
    raw: Mapping[str, Any], profile: str | None = None, overrides: list[str] | None = None
) -> Params:
    """Build :class:`Params` from a parsed ``params.yaml`` mapping, with ``overrides``
    (``key.path=value``) laid over the chosen profile's values."""
    resolved = resolve(raw, profile)
    if overrides:
        resolved = apply_overrides(resolved, overrides)
    if resolved["profile"] != "default":  # the base values are checked too, not only the
        parse(raw, "default")  # ones this profile keeps
    seed = _convert(resolved["seed"], int, "seed")
    if seed < 0:
        raise ParamsError(f"seed must be >= 0, got {seed}")
    sections = {
        name: from_mapping(cls, resolved[name] or {}, name) for name, cls in SECTIONS.items()
    }
    return Params(profile=resolved["profile"], seed=seed, raw=resolved, **sections)


def load_params(
    path: str | Path = "params.yaml", profile: str | None = None, overrides: list[str] | None = None
) -> Params:
    """Read, merge and validate ``path``; ``profile`` overrides the file's ``profile`` key and
    ``overrides`` (``key.path=value``, as ``upreid -S``) single values.
    Relative paths in it (``data.root``, weights files, the store, the outputs) are taken
    from the params file's folder (``Params.root``)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    with path.open() as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" line {where.line + 1}" if where is not None else ""
            raise ParamsError(
                f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})"
            ) from err
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return dataclasses.replace(parse(raw, profile, overrides), root=path.resolve().parent)


def to_dict(section: Any) -> dict[str, Any]:
    """A section as plain data (for logging and checkpoints)."""
    return dataclasses.asdict(section)
