"""What every stage script shares: logging, the resolved params, the torchrun relaunch."""

from __future__ import annotations

import sys
from collections.abc import Callable

from upreid.params import Params, load_params
from upreid.progress import setup_logging


def start(distributed: bool = False) -> Params:
    """Logging, the resolved ``params.yaml`` and a reachable tracking store (an HTTP server
    that does not answer fails the stage in seconds); with ``distributed`` the process is
    replaced by ``torchrun`` over the same script when ``launch`` asks for several processes."""
    setup_logging()
    params = load_params("params.yaml")
    from upreid import tracking

    tracking.check_reachable(tracking.tracking_uri(params.root))  # seconds, before any work
    if distributed:
        from upreid.pipeline import relaunch_distributed

        relaunch_distributed(params, sys.argv)
    return params


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a failure exits with its traceback and status 1."""
    main()
