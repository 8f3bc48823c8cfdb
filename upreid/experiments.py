"""The runs the paper's tables compare, as literal tables: pre-training variants, fine-tuning
stages and the inits each one runs. The pipeline, the CLI and the report all read these."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from upreid.params import Params, PretrainParams

# Pre-training variants: overrides of the ``pretrain`` section (Tables 1-6, Appendix D).
PRETRAIN_VARIANTS: dict[str, dict[str, Any]] = {
    "moco": {"method": "moco", "cc": False, "icc": False},  # (a) Baseline, the MoCo column
    "upreid": {"method": "upreid"},  # (d) the full model
    "cc": {"method": "upreid", "icc": False},  # (b) Baseline w CC
    "icc": {"method": "upreid", "cc": False},  # (c) Baseline w ICC
    "nohm": {"method": "upreid", "hm": False},  # Table 5, w/o HM (Eq. 8)
    "n4": {"method": "upreid", "patches": 4},  # Table 6
    "n12": {"method": "upreid", "patches": 12},  # Table 6
    "random": {"method": "upreid", "positive": "random"},  # Appendix D, Figure 7
    "online": {"method": "upreid", "positive": "online"},  # Appendix D, Figure 7
}

FILE_PREFIX = "file:"  # an init from a weights file: file:PATH

# The methods the paper compares are pre-trained with ``pipeline.pretrain_seeds`` seeds: the run
# of pre-training seed offset p > 0 is named ``<variant>-p<p>`` (``moco-p1``), that of offset 0
# keeps the variant's name. The ablations are pre-trained once.
SEEDED_VARIANTS = ("moco", "upreid")
_SEEDED_NAME = re.compile(r"^(?P<variant>[a-z0-9]+)-p(?P<offset>[1-9][0-9]*)$")

DATASETS = ("cuhk03", "market1501", "personx", "msmt17")
METHODS = ("bdb", "bot", "mgn", "pcb")
# Fine-tuning cells (method, dataset): Table 1 (BDB, BoT, MGN x 4) and Table 7 (PCB x 3). One
# stage per method runs its cells (many runs in a stage keep several processes busy).
FINETUNE_CELLS: tuple[tuple[str, str], ...] = (
    *((m, d) for m in ("bdb", "bot", "mgn") for d in DATASETS),
    *(("pcb", d) for d in ("cuhk03", "market1501", "personx")),
)
# Headline cells: several fine-tune seeds of each pre-trained init (the comparison the paper is
# about), for the spread the report quotes; scratch and insup run one seed.
HEADLINE = (("mgn", "cuhk03"), ("mgn", "market1501"))
# The ablations (Tables 4-6, Appendix D) fine-tune MGN on CUHK03, as the paper does.
ABLATION_STAGE = ("mgn", "cuhk03")
ABLATION_VARIANTS = ("cc", "icc", "nohm", "n4", "n12", "random", "online")
# The fine-tuning runs whose mAP the figures draw against the epoch: name -> (method, datasets,
# inits), each at the first fine-tune seed. Figure 4 BDB, Figure 5 MGN ablations on CUHK03,
# Figure 6 MGN. With ``pipeline.curves: figures`` only these evaluate every ``eval_every``
# epochs; every other run once, at the end (what the tables read).
CURVES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "figure4_bdb": (
        "bdb",
        ("cuhk03", "market1501", "personx"),
        ("scratch", "insup", "moco", "upreid"),
    ),
    "figure5_mgn_ablation": ("mgn", ("cuhk03",), ("moco", "cc", "icc", "upreid")),
    "figure6_mgn": (
        "mgn",
        ("cuhk03", "market1501", "personx"),
        ("scratch", "insup", "moco", "upreid"),
    ),
}
# SpCL settings (Table 2): name -> (source or None, target).
SPCL_SETTINGS: dict[str, tuple[str | None, str]] = {
    "M": (None, "market1501"),
    "P2M": ("personx", "market1501"),
}


@dataclass(frozen=True)
class FinetuneRun:
    method: str
    dataset: str
    init: str  # scratch, insup, or a pre-training variant
    seed: int

    @property
    def label(self) -> str:
        """The init as a name: itself, or ``file-<stem>-<hash>`` for ``file:PATH``."""
        if not self.init.startswith(FILE_PREFIX):
            return self.init
        path = self.init[len(FILE_PREFIX) :]
        tag = hashlib.sha256(path.encode()).hexdigest()[:8]
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem)[:40]
        return f"file-{stem}-{tag}"

    @property
    def key(self) -> str:
        return f"finetune/{self.method}/{self.dataset}/{self.label}/s{self.seed}"

    @property
    def dirname(self) -> str:
        return f"{self.label}-s{self.seed}"


def split_pretrain_name(name: str) -> tuple[str, int]:
    """A pre-training run's name -> (its variant, its pre-training seed offset):
    ``moco`` -> (moco, 0), ``upreid-p2`` -> (upreid, 2)."""
    m = _SEEDED_NAME.match(name)
    variant, offset = (m["variant"], int(m["offset"])) if m else (name, 0)
    if variant not in PRETRAIN_VARIANTS or (offset and variant not in SEEDED_VARIANTS):
        raise ValueError(
            f"unknown pre-training variant {name!r}; valid are {list(PRETRAIN_VARIANTS)}, "
            f"and {list(SEEDED_VARIANTS)} with a pre-training seed offset (moco-p1)"
        )
    return variant, offset


def pretrain_name(variant: str, offset: int) -> str:
    """The inverse of :func:`split_pretrain_name`."""
    return f"{variant}-p{offset}" if offset else variant


def pretrain_variant(params: PretrainParams, variant: str) -> PretrainParams:
    """``params`` with the overrides of ``variant`` (a variant or a seeded run's name)."""
    return dataclasses.replace(params, **PRETRAIN_VARIANTS[split_pretrain_name(variant)[0]])


def init_kind(init: str) -> str:
    """The library init (scratch, insup, moco, upreid, file) behind a pipeline init name;
    ``file:PATH`` is any file of ResNet trunk weights (the project's backbone.pt or best.pt, a
    public MoCo/LUPerson checkpoint, a torchvision state dict)."""
    if init.startswith(FILE_PREFIX):
        return "file"
    if init in ("scratch", "insup"):
        return init
    try:
        variant, _ = split_pretrain_name(init)
    except ValueError:
        raise ValueError(
            f"unknown init {init!r}; valid are scratch, insup, {list(PRETRAIN_VARIANTS)}, "
            "moco-p1 (a pre-training seed of moco or upreid) or file:PATH"
        ) from None
    return "moco" if variant == "moco" else "upreid"


def finetune_datasets(method: str) -> list[str]:
    """The datasets ``method`` is fine-tuned on, in order."""
    if method not in METHODS:
        raise ValueError(f"unknown fine-tuning method {method!r}; valid are {list(METHODS)}")
    return [d for m, d in FINETUNE_CELLS if m == method]


def drawn(params: Params, run: FinetuneRun) -> bool:
    """Whether a figure draws ``run``'s mAP against the epoch (:data:`CURVES`)."""
    return run.seed == params.seed and any(
        run.method == m and run.dataset in ds and run.init in inits
        for m, ds, inits in CURVES.values()
    )


def eval_every(params: Params, run: FinetuneRun) -> int:
    """How often ``run`` evaluates: once, after the last epoch, when it is a run of the
    pipeline's plan that no figure draws and ``pipeline.curves`` is ``figures``; else (a drawn
    run, a run outside the plan such as a weights file or another seed) its method's
    ``eval_every``."""
    mp = getattr(params.finetune, run.method)
    planned = (run.method, run.dataset) in FINETUNE_CELLS and run in finetune_runs(
        params, run.method, run.dataset
    )
    if params.pipeline.curves == "figures" and planned and not drawn(params, run):
        return int(mp.epochs)
    return int(mp.eval_every)


def finetune_runs(params: Params, method: str, dataset: str) -> list[FinetuneRun]:
    """Every run of one fine-tuning cell, in order."""
    if (method, dataset) not in FINETUNE_CELLS:
        raise ValueError(
            f"unknown fine-tuning cell {method}/{dataset}; valid are "
            f"{['/'.join(s) for s in FINETUNE_CELLS]}"
        )
    headline = (method, dataset) in HEADLINE
    runs = [
        FinetuneRun(method, dataset, init, params.seed + s)
        for s in range(params.pipeline.headline_seeds if headline else 1)
        for init in params.pipeline.inits
        if s == 0 or init not in ("scratch", "insup")
    ]
    if headline:  # the other pre-training seeds, each fine-tuned with the first fine-tune seed
        runs += [
            FinetuneRun(method, dataset, name, params.seed)
            for name in seeded_runs(params)
            if split_pretrain_name(name)[1] > 0
        ]
    if (method, dataset) == ABLATION_STAGE:
        runs += [FinetuneRun(method, dataset, v, params.seed) for v in ABLATION_VARIANTS]
    return runs


def seeded_runs(params: Params) -> list[str]:
    """The pre-training runs of the compared methods the profile fine-tunes from, every
    pre-training seed: ``moco, upreid, moco-p1, upreid-p1, ...``."""
    return [
        pretrain_name(v, p)
        for p in range(params.pipeline.pretrain_seeds)
        for v in SEEDED_VARIANTS
        if v in params.pipeline.inits
    ]


def needed_variants(params: Params) -> list[str]:
    """Pre-training runs some fine-tuning run starts from: each variant once, and the compared
    methods once per further pre-training seed."""
    inits = set(params.pipeline.inits) | set(ABLATION_VARIANTS)
    once = [v for v in PRETRAIN_VARIANTS if v in inits]
    return once + [n for n in seeded_runs(params) if n not in once]
