"""What every stage script shares: logging, the resolved params, the torchrun relaunch."""

from __future__ import annotations

import sys
from collections.abc import Callable

from upreid.params import Params, load_params
from upreid.progress import setup_logging


def start(distributed: bool = False) -> Params:
    """Logging and the resolved ``params.yaml``; with ``distributed`` the process is replaced by
    ``torchrun`` over the same script when ``launch`` asks for several processes."""
    setup_logging()
    params = load_params("params.yaml")
    if distributed:
        from upreid.pipeline import relaunch_distributed

        relaunch_distributed(params, sys.argv)
    return params


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a failure exits with its traceback and status 1."""
    main()
