"""What every stage script shares: logging and the resolved params."""

from __future__ import annotations

from upreid.params import Params, load_params
from upreid.progress import setup_logging


def start() -> Params:
    setup_logging()
    return load_params("params.yaml")
