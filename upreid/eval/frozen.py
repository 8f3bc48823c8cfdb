"""Frozen-feature retrieval: what pre-training taught, measured without fine-tuning.

The pre-trained trunk's feature map, global-average pooled, is the embedding; each labeled
set's query and gallery are ranked under the standard protocol (:func:`evaluate`, same-camera
matches of the query's identity left out). A network that learned nothing about people scores
what its random initialisation scores; pre-training that helps re-ID scores above it.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Mapping

from torch import Tensor, nn

from upreid.data.images import ImageCache
from upreid.data.records import ReIDData
from upreid.eval.evaluate import evaluate
from upreid.params import EvalParams
from upreid.runtime import Runtime

Probe = Callable[[nn.Module], dict[str, float]]


def pooled(fmap: Tensor) -> Tensor:
    """(B, C, H, W) feature map -> (B, C), the spatial mean."""
    return fmap.mean(dim=(2, 3))


def frozen_retrieval(
    trunk: nn.Module,
    sets: Mapping[str, ReIDData],
    params: EvalParams,
    height: int,
    width: int,
    runtime: Runtime,
    cache: ImageCache | None = None,
    workers: int = 0,
) -> dict[str, float]:
    """``frozen_mAP_<set>`` and ``frozen_rank1_<set>`` (percent) of ``trunk``'s pooled features
    on each set, and ``frozen_mAP``, their mean. Plain distances (no re-ranking), so the numbers
    say what the features hold. ``trunk`` is left in eval mode."""
    plain = dataclasses.replace(params, rerank=False)
    embed = runtime.embedder(trunk, pooled)
    out: dict[str, float] = {}
    for name, data in sets.items():
        metrics = evaluate(
            embed, data, plain, height, width, workers, cache=cache, device=runtime.device
        )
        out[f"frozen_mAP_{name}"] = float(metrics["mAP"])
        out[f"frozen_rank1_{name}"] = float(metrics["rank1"])
    if sets:
        out["frozen_mAP"] = statistics.fmean(out[f"frozen_mAP_{n}"] for n in sets)
    return out


def frozen_probe(
    sets: Mapping[str, ReIDData],
    params: EvalParams,
    height: int,
    width: int,
    runtime: Runtime,
    cache_mb: int = 256,
    workers: int = 0,
) -> Probe:
    """:func:`frozen_retrieval` on ``sets`` as a function of the trunk (what a pre-training run
    calls every few epochs): decoded images kept between calls in one process, or decoded by
    ``workers`` loader processes (then without the cache: each worker would hold a copy)."""
    cache = ImageCache(cache_mb) if cache_mb > 0 and workers == 0 else None

    def probe(trunk: nn.Module) -> dict[str, float]:
        return frozen_retrieval(trunk, sets, params, height, width, runtime, cache, workers)

    return probe
