"""Plain-text table writers shared by the report's tables: Markdown and CSV cells."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; a cell's own ``|`` (ours | paper) is escaped, not a column break."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]
    return "\n".join(lines) + "\n"


def to_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t95(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` >= 1 degrees of freedom (beyond
    30, the normal quantile with its first-order correction)."""
    if df < 1:
        raise ValueError(f"t95 needs df >= 1, got {df}")
    if df <= len(_T95):
        return _T95[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df)


def paired_interval(diffs: Sequence[float]) -> tuple[float, float, float] | None:
    """Mean and 95 % t interval of paired differences; None with fewer than two."""
    if len(diffs) < 2:
        return None
    mean = statistics.fmean(diffs)
    half = t95(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def excludes_zero(lo: float, hi: float) -> bool:
    """Whether the interval ``[lo, hi]`` resolves an ordering: it lies on one side of 0."""
    return lo > 0 or hi < 0


def paired_text(label: str, diffs: Sequence[float], a: str = "UP-ReID", b: str = "MoCo") -> str:
    """One plain line on the differences ``a - b``: per seed, their mean and 95 % interval, and
    the ordering called only when the interval excludes 0."""
    what = f"{a} - {b}"
    each = ", ".join(f"{d:+.1f}" for d in diffs)
    ci = paired_interval(diffs)
    if ci is None:
        return f"{label}, {what}: {each or 'not measured'} (one pre-training seed: no interval)"
    mean, lo, hi = ci
    if excludes_zero(lo, hi):
        verdict = f"the interval excludes 0: {a} {'>' if lo > 0 else '<'} {b}"
    else:
        verdict = "the interval includes 0: no ordering"
    return (
        f"{label}, {what} per pre-training seed: {each}; mean {mean:+.1f}, 95 % interval "
        f"[{lo:+.1f}, {hi:+.1f}] (n={len(diffs)}): {verdict}"
    )
