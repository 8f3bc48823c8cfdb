"""The report's paired interval: Student's t against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from upreid.report.text import paired_interval, paired_text, t95


def test_t_quantiles() -> None:
    assert t95(1) == 12.706 and t95(2) == 4.303 and t95(30) == 2.042
    assert t95(60) == pytest.approx(2.000, abs=0.002)  # tables: 2.000
    assert t95(120) == pytest.approx(1.980, abs=0.002)  # tables: 1.980
    with pytest.raises(ValueError):
        t95(0)


def test_paired_interval_by_hand() -> None:
    # diffs 1, 2, 6: mean 3, sd sqrt(7), half-width 4.303 * sqrt(7) / sqrt(3)
    mean, lo, hi = paired_interval([1.0, 2.0, 6.0])  # type: ignore[misc]
    half = 4.303 * math.sqrt(7) / math.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((3.0, 3.0 - half, 3.0 + half))
    assert paired_interval([1.0]) is None


def test_the_ordering_is_called_only_when_the_interval_excludes_zero() -> None:
    assert "includes 0: no ordering" in paired_text("x", [1.0, 2.0, 6.0])
    assert "excludes 0: UP-ReID < MoCo" in paired_text("x", [-3.0, -2.0, -4.0])
    assert "one pre-training seed: no interval" in paired_text("x", [1.5])
    line = paired_text("x", [3.0, 2.0, 4.0], a="relative blur", b="absolute blur")
    assert "relative blur - absolute blur per pre-training seed" in line
    assert line.endswith("excludes 0: relative blur > absolute blur"), line
