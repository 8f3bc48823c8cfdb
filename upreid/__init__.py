"""upreid: UP-ReID pre-training, re-ID fine-tuning, evaluation and reports.

``from upreid import load_model, extract_features, evaluate`` gives the library in three calls
(:mod:`upreid.api`); they are imported on first use, so ``import upreid`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["evaluate", "extract_features", "load_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from upreid import api

        return getattr(api, name)
    raise AttributeError(f"module 'upreid' has no attribute {name!r}")
