"""Progress for long loops: a line every ``every`` seconds with rate and ETA, never a flood."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("upreid")


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Reports ``done/total``, items per second and ETA at most once per ``every`` seconds."""

    def __init__(self, total: int, desc: str, unit: str = "it", every: float = 10.0) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.every = every
        self.done = 0
        self.start = time.perf_counter()
        self._last = self.start

    def update(self, n: int = 1, **info: float | str) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.every or self.done == self.total:
            self._last = now
            log.info(self.line(now, info))

    def line(self, now: float, info: dict[str, float | str] | None = None) -> str:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        extra = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (info or {}).items()
        )
        eta_s = format_seconds(eta) if eta == eta else "?"
        pct = 100.0 * self.done / max(1, self.total)
        return (
            f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%) "
            f"{rate:.1f} {self.unit}/s elapsed {format_seconds(elapsed)} eta {eta_s} {extra}"
        ).rstrip()


def track(
    items: Iterable[T], total: int, desc: str, unit: str = "it", every: float = 10.0
) -> Iterator[T]:
    bar = Progress(total, desc, unit, every)
    for item in items:
        yield item
        bar.update()


def setup_logging(level: int = logging.INFO) -> None:
    """Plain timestamped lines on stderr (what DVC and CI logs keep)."""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
