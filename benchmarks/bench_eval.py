"""Benchmark: vectorised `evaluate_ranking` vs the per-query NumPy reference at Market-1501 scale;
with ``--msmt``, evaluation with and without k-reciprocal re-ranking at MSMT17 scale.

Random features with identity structure (per-identity centre + per-camera shift + noise).

Default (Market-1501, 3,368 x 19,732): ours is torch `pairwise_distance` (cosine) + chunked
`evaluate_ranking`; the reference is a NumPy full distance matrix + `reference_evaluate` (full
stable argsort, Python loop over queries). The last line printed is the speed ratio.

``--msmt [--scale S]`` (MSMT17: 11,659 x 82,161 x 2048-d, 3,060 identities, 15 cameras; S scales
the query, gallery and identity counts): each in a fresh process, cosine distances +
`evaluate_ranking` without and with re-ranking (`re_rank_features`, k1 20, k2 6,
lambda 0.3), printing seconds and peak RSS (getrusage ru_maxrss, which Linux carries over from the
parent at the fork, and a /proc/self/status VmRSS sampler during the evaluation); then re-ranking
from features against the dense NumPy oracle of tests/eval/test_rerank.py on a 500 x 3,000 split.
Measured at full scale on 2 threads of an Intel Xeon (AVX-512, AMX): without re-ranking 86 s, peak
RSS 9.1 GiB (pairwise_distance holds q @ g.T and 1 - q @ g.T at once); with re-ranking 225 s,
peak RSS 6.3 GiB; max |sparse - oracle| 3.6e-07 on the split. About 5.5 min in all.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from upreid.eval.metrics import evaluate_ranking, pairwise_distance, reference_evaluate
from upreid.eval.rerank import re_rank_features

KEYS = ("mAP", "mINP", "rank1", "rank5", "rank10", "rank20")
ROOT = Path(__file__).resolve().parents[1]
MSMT = {"queries": 11659, "gallery": 82161, "ids": 3060, "cams": 15}
RERANK = {"k1": 20, "k2": 6, "lambda_value": 0.3}
GiB = 2**30


def make_data(
    queries: int, gallery: int, dim: int, ids: int, cams: int, seed: int, normalise: bool = False
) -> tuple[torch.Tensor, ...]:
    """qf (Q, D), gf (G, D) float32; q_pids, g_pids, q_cams, g_cams int64. Every query pid
    (1..ids) also appears in the gallery; a tenth of the gallery are distractors (pid 0).
    Features are drawn a chunk of rows at a time (no full-size temporaries), L2-normalised in
    place with ``normalise``."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(ids + 1, dim, generator=gen)
    shifts = 0.8 * torch.randn(cams, dim, generator=gen)

    def draw(n: int, distractors: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pids = torch.randint(1, ids + 1, (n,), generator=gen)
        if distractors:
            pids[torch.rand(n, generator=gen) < 0.1] = 0
        cams_ = torch.randint(0, cams, (n,), generator=gen)
        feats = torch.empty(n, dim)
        for lo in range(0, n, 4096):
            rows = slice(lo, lo + 4096)
            chunk = torch.randn(feats[rows].shape, generator=gen).mul_(2.5)
            chunk += centres[pids[rows]] + shifts[cams_[rows]]
            feats[rows] = torch.nn.functional.normalize(chunk, dim=1) if normalise else chunk
        return feats, pids, cams_

    qf, q_pids, q_cams = draw(queries, False)
    gf, g_pids, g_cams = draw(gallery, True)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def run_ours(
    qf: torch.Tensor, gf: torch.Tensor, *labels: torch.Tensor
) -> tuple[dict[str, float | int], float]:
    """Metrics and the seconds spent after the distance matrix was computed."""
    distmat = pairwise_distance(qf, gf, "cosine")
    start = time.perf_counter()
    return evaluate_ranking(distmat, *labels), time.perf_counter() - start


def run_reference(
    qf: np.ndarray, gf: np.ndarray, *labels: np.ndarray
) -> tuple[dict[str, float | int], float]:
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


def market(args: argparse.Namespace) -> dict[str, float | int]:
    """The Market-1501 case: ours vs the per-query reference, same metrics required."""
    data = make_data(args.queries, args.gallery, args.dim, args.ids, args.cams, args.seed)
    print(
        f"queries {args.queries}, gallery {args.gallery}, dim {args.dim}, ids {args.ids}, "
        f"cams {args.cams}, torch threads {torch.get_num_threads()}"
    )
    (ours, ours_eval), ours_s = timed(run_ours, *data)
    print(
        f"ours:      {ours_s:6.2f} s (ranking {ours_eval:6.2f} s)  "
        + "  ".join(f"{k} {ours[k]:.4f}" for k in KEYS)
    )
    (ref, ref_eval), ref_s = timed(run_reference, *(t.numpy() for t in data))
    print(
        f"reference: {ref_s:6.2f} s (ranking {ref_eval:6.2f} s)  "
        + "  ".join(f"{k} {ref[k]:.4f}" for k in KEYS)
    )
    print(f"ranking only (distance matrix excluded): {ref_eval / ours_eval:.1f}x")
    # differences in fractions (percent / 100)
    diff = max(abs(ours[k] - ref[k]) / 100.0 for k in KEYS)
    print(
        f"max |ours - reference| over {', '.join(KEYS)}: {diff:.2e} (fraction, percent/100); "
        f"valid queries {ours['valid_queries']} vs {ref['valid_queries']}"
    )
    if diff > 1e-6 or ours["valid_queries"] != ref["valid_queries"]:
        raise SystemExit(f"results differ: {diff:.2e} > 1e-6")
    print(f"speedup: {ref_s / ours_s:.1f}x (reference {ref_s:.1f} s / ours {ours_s:.1f} s)")
    return {
        "ours_s": ours_s,
        "reference_s": ref_s,
        "speedup": ref_s / ours_s,
        "ours_ranking_s": ours_eval,
        "reference_ranking_s": ref_eval,
        "mAP": ours["mAP"],
        "rank1": ours["rank1"],
        "mINP": ours["mINP"],
        "queries": args.queries,
        "gallery": args.gallery,
        "dim": args.dim,
        "max_abs_diff": diff,
    }


# ------------------------------------------------------------------------------ MSMT17 scale


class PeakRSS:
    """Samples VmRSS of /proc/self/status every ``every`` seconds in a thread; ``peak`` bytes."""

    def __init__(self, every: float = 0.05) -> None:
        self.peak, self.every = 0, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.every)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def _msmt_sizes(scale: float) -> dict[str, int]:
    return {k: max(1, round(v * scale)) if k != "cams" else v for k, v in MSMT.items()}


def _evaluate_case(rerank: bool, scale: float, dim: int, seed: int, out: Any) -> None:
    """Child process: one evaluation (distances + ranking) at MSMT scale; puts a result dict."""
    torch.set_num_threads(2)
    size = _msmt_sizes(scale)
    qf, gf, *labels = make_data(
        size["queries"], size["gallery"], dim, size["ids"], size["cams"], seed, normalise=True
    )
    before = PeakRSS.current()
    with PeakRSS() as sampler:
        start = time.perf_counter()
        if rerank:
            distmat = torch.from_numpy(re_rank_features(qf, gf, metric="cosine", **RERANK))
        else:
            distmat = pairwise_distance(qf, gf, "cosine")
        dist_s = time.perf_counter() - start
        metrics = evaluate_ranking(distmat, *labels, chunk=512)
        total_s = time.perf_counter() - start
    out.put(
        {
            "rerank": rerank,
            "distances_s": dist_s,
            "ranking_s": total_s - dist_s,
            "total_s": total_s,
            "ru_maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB,
            "vmrss_peak_gib": sampler.peak / GiB,
            "vmrss_after_data_gib": before / GiB,
            **{k: metrics[k] for k in ("mAP", "rank1", "mINP")},
        }
    )


def _oracle() -> Callable[..., np.ndarray]:
    """The dense NumPy re-ranking oracle of the tests (the widely used implementation)."""
    path = ROOT / "tests" / "eval" / "test_rerank.py"
    spec = importlib.util.spec_from_file_location("rerank_oracle", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.naive_re_ranking


def equality_check(dim: int, seed: int, queries: int = 500, gallery: int = 3000) -> float:
    """Max |re_rank_features - dense oracle| on a small split (raises above 1e-5)."""
    ids = max(1, round(MSMT["ids"] * gallery / MSMT["gallery"]))
    qf, gf, *_ = make_data(queries, gallery, dim, ids, MSMT["cams"], seed, normalise=True)
    (got, got_s) = timed(
        re_rank_features, qf, gf, RERANK["k1"], RERANK["k2"], RERANK["lambda_value"]
    )
    mats = [pairwise_distance(a, b).numpy() for a, b in ((qf, gf), (qf, qf), (gf, gf))]
    want, want_s = timed(_oracle(), *mats, RERANK["k1"], RERANK["k2"], RERANK["lambda_value"])
    diff = float(np.abs(got - want).max())
    print(
        f"re-ranking {queries} x {gallery}: sparse {got_s:.2f} s, dense oracle {want_s:.2f} s, "
        f"max |sparse - oracle| {diff:.2e}"
    )
    if diff > 1e-5:
        raise SystemExit(f"re-ranking differs from the oracle: {diff:.2e} > 1e-5")
    return diff


def msmt(args: argparse.Namespace) -> dict[str, Any]:
    """The MSMT17 case: both evaluations in fresh processes, then equality on a subset."""
    size = _msmt_sizes(args.scale)
    print(
        f"MSMT17 scale {args.scale}: queries {size['queries']}, gallery {size['gallery']}, "
        f"dim {args.dim}, ids {size['ids']}, cams {size['cams']}, torch threads 2"
    )
    result: dict[str, Any] = {"scale": args.scale, **size, "dim": args.dim}
    ctx = mp.get_context("spawn")  # before the check: a child's ru_maxrss starts at the parent's
    for rerank in (False, True):
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_evaluate_case, args=(rerank, args.scale, args.dim, args.seed, queue)
        )
        proc.start()
        case = queue.get()
        proc.join()
        name = "rerank" if rerank else "plain"
        print(
            f"{name:6s}: {case['total_s']:7.1f} s (distances {case['distances_s']:.1f} s, "
            f"ranking {case['ranking_s']:.1f} s), peak RSS {case['ru_maxrss_gib']:.2f} GiB "
            f"(sampled {case['vmrss_peak_gib']:.2f} GiB, after data "
            f"{case['vmrss_after_data_gib']:.2f} GiB), mAP {case['mAP']:.2f} "
            f"rank1 {case['rank1']:.2f}"
        )
        result[name] = case
    result["max_abs_diff_subset"] = equality_check(args.dim, args.seed)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (
        ("queries", 3368),
        ("gallery", 19732),
        ("dim", 2048),
        ("ids", 750),
        ("cams", 6),
        ("seed", 0),
    ):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--msmt", action="store_true", help="the MSMT17-scale re-ranking case")
    parser.add_argument("--scale", type=float, default=1.0, help="MSMT17 size multiplier")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.msmt:
        torch.set_num_threads(2)
    result = msmt(args) if args.msmt else market(args)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
