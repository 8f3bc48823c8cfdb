"""Name lookup for the supervised fine-tuning models."""

from __future__ import annotations

from upreid.models.bdb import BDB
from upreid.models.bot import BoT
from upreid.models.mgn import MGN
from upreid.models.pcb import PCB

ReIDModel = BoT | MGN | BDB | PCB  # each has a ``backbone`` trunk and ``init_branches()``
METHODS: dict[str, type[ReIDModel]] = {"bot": BoT, "mgn": MGN, "bdb": BDB, "pcb": PCB}


def build_reid_model(method: str, arch: str, num_classes: int) -> ReIDModel:
    """Build ``method``'s model on an ``arch`` trunk with ``num_classes`` identity classifiers."""
    if method not in METHODS:
        raise ValueError(f"unknown re-ID method {method!r}; valid are {sorted(METHODS)}")
    return METHODS[method](arch, num_classes)
