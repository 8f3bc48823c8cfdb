import logging

import pytest

from upreid.progress import Progress, format_seconds


def test_format_seconds() -> None:
    assert format_seconds(5) == "00:05"
    assert format_seconds(3725) == "1:02:05"


def test_progress_line_has_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 10.0])
    monkeypatch.setattr("upreid.progress.time.perf_counter", lambda: next(clock))
    bar = Progress(total=100, desc="epoch 1", unit="img")
    bar.done = 25
    line = bar.line(10.0, {"loss": 1.23456})
    assert "25/100 (25%)" in line and "2.5 img/s" in line and "eta 00:30" in line
    assert "loss=1.235" in line


def test_progress_does_not_flood(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="upreid")
    bar = Progress(total=10_000, desc="steps", every=3600)
    for _ in range(10_000):
        bar.update()
    assert len(caplog.records) == 1  # only the final line
