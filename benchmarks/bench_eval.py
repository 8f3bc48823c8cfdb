"""Benchmark: vectorised `evaluate_ranking` vs the per-query NumPy reference at Market-1501 scale.

Random features with identity structure (per-identity centre + per-camera shift + noise). Ours:
torch `pairwise_distance` (cosine) + chunked `evaluate_ranking`. Reference: NumPy full distance
matrix + `reference_evaluate` (full stable argsort, Python loop over queries). The last line
printed is the speed ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from upreid.eval.metrics import evaluate_ranking, pairwise_distance, reference_evaluate

KEYS = ("mAP", "mINP", "rank1", "rank5", "rank10", "rank20")


def make_data(queries: int, gallery: int, dim: int, ids: int, cams: int,
              seed: int) -> tuple[torch.Tensor, ...]:
    """qf (Q, D), gf (G, D) float32; q_pids, g_pids, q_cams, g_cams int64. Every query pid
    (1..ids) also appears in the gallery; a tenth of the gallery are distractors (pid 0)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(ids + 1, dim, generator=gen)
    shifts = 0.8 * torch.randn(cams, dim, generator=gen)

    def draw(n: int, distractors: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pids = torch.randint(1, ids + 1, (n,), generator=gen)
        if distractors:
            pids[torch.rand(n, generator=gen) < 0.1] = 0
        cams_ = torch.randint(0, cams, (n,), generator=gen)
        feats = centres[pids] + shifts[cams_] + 2.5 * torch.randn(n, dim, generator=gen)
        return feats, pids, cams_

    qf, q_pids, q_cams = draw(queries, False)
    gf, g_pids, g_cams = draw(gallery, True)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def run_ours(qf: torch.Tensor, gf: torch.Tensor,
             *labels: torch.Tensor) -> tuple[dict[str, float | int], float]:
    """Metrics and the seconds spent after the distance matrix was computed."""
    distmat = pairwise_distance(qf, gf, "cosine")
    start = time.perf_counter()
    return evaluate_ranking(distmat, *labels), time.perf_counter() - start


def run_reference(qf: np.ndarray, gf: np.ndarray,
                  *labels: np.ndarray) -> tuple[dict[str, float | int], float]:
    """Metrics and the seconds spent after the distance matrix was computed."""
    q = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    g = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    distmat = np.maximum(1.0 - q @ g.T, 0.0)
    start = time.perf_counter()
    return reference_evaluate(distmat, *labels), time.perf_counter() - start


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float | int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("queries", 3368), ("gallery", 19732), ("dim", 2048), ("ids", 750),
                          ("cams", 6), ("seed", 0)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    data = make_data(args.queries, args.gallery, args.dim, args.ids, args.cams, args.seed)
    print(f"queries {args.queries}, gallery {args.gallery}, dim {args.dim}, ids {args.ids}, "
          f"cams {args.cams}, torch threads {torch.get_num_threads()}")
    (ours, ours_eval), ours_s = timed(run_ours, *data)
    print(f"ours:      {ours_s:6.2f} s (ranking {ours_eval:6.2f} s)  "
          + "  ".join(f"{k} {ours[k]:.4f}" for k in KEYS))
    (ref, ref_eval), ref_s = timed(run_reference, *(t.numpy() for t in data))
    print(f"reference: {ref_s:6.2f} s (ranking {ref_eval:6.2f} s)  "
          + "  ".join(f"{k} {ref[k]:.4f}" for k in KEYS))
    print(f"ranking only (distance matrix excluded): {ref_eval / ours_eval:.1f}x")
    # differences in fractions (percent / 100)
    diff = max(abs(ours[k] - ref[k]) / 100.0 for k in KEYS)
    print(f"max |ours - reference| over {', '.join(KEYS)}: {diff:.2e} (fraction, percent/100); "
          f"valid queries {ours['valid_queries']} vs {ref['valid_queries']}")
    if diff > 1e-6 or ours["valid_queries"] != ref["valid_queries"]:
        raise SystemExit(f"results differ: {diff:.2e} > 1e-6")
    result = {"ours_s": ours_s, "reference_s": ref_s, "speedup": ref_s / ours_s,
              "ours_ranking_s": ours_eval, "reference_ranking_s": ref_eval,
              "mAP": ours["mAP"], "rank1": ours["rank1"], "mINP": ours["mINP"],
              "queries": args.queries, "gallery": args.gallery, "dim": args.dim,
              "max_abs_diff": diff}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"speedup: {ref_s / ours_s:.1f}x (reference {ref_s:.1f} s / ours {ours_s:.1f} s)")
    return result


if __name__ == "__main__":
    main()
