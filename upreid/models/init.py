"""Backbone initialisations compared everywhere: scratch, ImageNet (insup), MoCo, UP-ReID."""

from __future__ import annotations

import logging
from pathlib import Path

from upreid.models.backbone import ResNetTrunk, build_backbone, load_backbone_file

log = logging.getLogger(__name__)

INITS = ("scratch", "insup", "moco", "upreid", "file")  # file: any trunk weights file


def check_init(init: str, weights: str | Path | None, arch: str | None = None) -> None:
    """Fail before any long work when ``init`` is unknown or its weights file is absent; with
    ``arch``, also when a file the user supplies (``file``, ``insup``) does not fit that trunk."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid inits are {list(INITS)}")
    if init == "scratch":
        return
    if weights is None:
        raise ValueError(f"init {init!r} needs a weights file")
    if not Path(weights).is_file():
        hint = (
            "it is neither a weights file nor a known init (scratch, insup, or a "
            "pre-training variant: moco, upreid, ...); give one of those, or file:PATH"
            if init == "file"
            else "put a torchvision ResNet ImageNet state dict there (e.g. the file "
            "torchvision downloads for resnet50(weights='IMAGENET1K_V1')) or change "
            "finetune.insup_weights in params.yaml"
            if init == "insup"
            else "run the pre-training stage first (dvc repro, or upreid pretrain)"
        )
        raise FileNotFoundError(f"init {init!r}: weights file not found: {weights}; {hint}")
    if arch is not None and init in ("file", "insup"):
        load_backbone_file(build_backbone(arch), weights)


def initialise_backbone(trunk: ResNetTrunk, init: str, weights: str | Path | None) -> None:
    """Load ``init``'s weights into ``trunk`` in place (``scratch`` keeps the random init)."""
    check_init(init, weights)
    if init == "scratch":
        return
    load_backbone_file(trunk, weights)  # type: ignore[arg-type]
    log.info("backbone initialised from %s (%s)", weights, init)
