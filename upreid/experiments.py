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

DATASETS = ("cuhk03", "market1501", "personx", "msmt17")
METHODS = ("bdb", "bot", "mgn", "pcb")
# Fine-tuning stages (method, dataset): Table 1 (BDB, BoT, MGN x 4) and Table 7 (PCB x 3).
FINETUNE_STAGES: tuple[tuple[str, str], ...] = (
    *((m, d) for m in ("bdb", "bot", "mgn") for d in DATASETS),
    *(("pcb", d) for d in ("cuhk03", "market1501", "personx")),
)
# Headline cells: several fine-tune seeds of each pre-trained init (the comparison the paper is
# about), for the spread the report quotes; scratch and insup run one seed.
HEADLINE = (("mgn", "cuhk03"), ("mgn", "market1501"))
# The ablations (Tables 4-6, Appendix D) fine-tune MGN on CUHK03, as the paper does.
ABLATION_STAGE = ("mgn", "cuhk03")
ABLATION_VARIANTS = ("cc", "icc", "nohm", "n4", "n12", "random", "online")
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


def pretrain_variant(params: PretrainParams, variant: str) -> PretrainParams:
    """``params`` with the overrides of ``variant``."""
    if variant not in PRETRAIN_VARIANTS:
        raise ValueError(
            f"unknown pre-training variant {variant!r}; valid are {list(PRETRAIN_VARIANTS)}"
        )
    return dataclasses.replace(params, **PRETRAIN_VARIANTS[variant])


def init_kind(init: str) -> str:
    """The library init (scratch, insup, moco, upreid, file) behind a pipeline init name;
    ``file:PATH`` is any file of ResNet trunk weights (the project's backbone.pt or best.pt, a
    public MoCo/LUPerson checkpoint, a torchvision state dict)."""
    if init.startswith(FILE_PREFIX):
        return "file"
    if init in ("scratch", "insup", "moco"):
        return init
    if init in PRETRAIN_VARIANTS:
        return "upreid"
    raise ValueError(
        f"unknown init {init!r}; valid are scratch, insup, {list(PRETRAIN_VARIANTS)} or file:PATH"
    )


def finetune_runs(params: Params, method: str, dataset: str) -> list[FinetuneRun]:
    """Every run of one fine-tuning stage, in order."""
    if (method, dataset) not in FINETUNE_STAGES:
        raise ValueError(
            f"unknown fine-tuning stage {method}/{dataset}; valid are "
            f"{['/'.join(s) for s in FINETUNE_STAGES]}"
        )
    headline = (method, dataset) in HEADLINE
    runs = [
        FinetuneRun(method, dataset, init, params.seed + s)
        for s in range(params.pipeline.headline_seeds if headline else 1)
        for init in params.pipeline.inits
        if s == 0 or init not in ("scratch", "insup")
    ]
    if (method, dataset) == ABLATION_STAGE:
        runs += [FinetuneRun(method, dataset, v, params.seed) for v in ABLATION_VARIANTS]
    return runs


def needed_variants(params: Params) -> list[str]:
    """Pre-training variants some fine-tuning run starts from."""
    inits = set(params.pipeline.inits) | set(ABLATION_VARIANTS)
    return [v for v in PRETRAIN_VARIANTS if v in inits]
