"""The pre-training table: frozen-feature rows per variant and the untrained network, the
margin tally, the curve figure."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from upreid import tracking
from upreid.report.pretraining import COLUMNS, write_pretraining


def _pretrain_run(
    root: Path, variant: str, curve: dict[str, list[float]], bnest: float | None = None
) -> None:
    """A pre-training run whose frozen mAP per set went through ``curve`` (steps 0, 10, 20);
    ``bnest``: the untrained network with estimated BN statistics scores that much less."""
    with tracking.stage_run(
        f"pretrain/{variant}", profile="t", params={}, tags={}, commit="c", root=root
    ) as run:
        for i in range(3):
            run.log_metrics({f"frozen_mAP_{d}": v[i] for d, v in curve.items()}, 10 * i)
        final = {f"frozen_mAP_{d}": v[-1] for d, v in curve.items()}
        final |= {f"frozen_rank1_{d}": v[-1] + 10 for d, v in curve.items()}
        final |= {f"init_frozen_mAP_{d}": v[0] for d, v in curve.items()}
        final |= {f"init_frozen_rank1_{d}": v[0] + 10 for d, v in curve.items()}
        if bnest is not None:
            final |= {f"init_frozen_bnest_mAP_{d}": v[0] - bnest for d, v in curve.items()}
        run.log_metrics(final, 20)


def test_rows_margin_and_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _pretrain_run(tmp_path, "moco", {"market1501": [8.0, 10.0, 14.0], "cuhk03": [3.0, 4, 7.9]})
    _pretrain_run(tmp_path, "upreid", {"market1501": [8.0, 9.0, 12.0], "cuhk03": [3.0, 9, 8.0]})
    _pretrain_run(tmp_path, "random", {"market1501": [8.0, 8, 8], "cuhk03": [3.0, 3, 3]})
    records = tracking.latest_runs("t", tmp_path)
    out = tmp_path / "reports"
    written = write_pretraining(out, records, ["moco", "upreid", "random"], seed=0, root=tmp_path)
    assert written[0] == "tables/pretraining.md"
    with open(out / "tables" / "pretraining.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == COLUMNS
    got = {(r[0], r[2]): (float(r[3]), float(r[4])) for r in rows[1:]}
    assert got == {
        ("random", "cuhk03"): (3.0, 13.0),  # the untrained network: the step-0 measurement
        ("random", "market1501"): (8.0, 18.0),
        ("moco", "cuhk03"): (7.9, 17.9),
        ("moco", "market1501"): (14.0, 24.0),
        ("upreid", "cuhk03"): (8.0, 18.0),
        ("upreid", "market1501"): (12.0, 22.0),
        ("positive-random", "cuhk03"): (3.0, 13.0),  # the ablation of that name
        ("positive-random", "market1501"): (8.0, 18.0),
    }
    assert {r[1] for r in rows[1:]} == {"0"}
    md = (out / "tables" / "pretraining.md").read_text()
    # moco: +6.0 on Market, +4.9 on CUHK03 (below the 5-point margin); upreid: +4.0, +5.0
    assert "| moco | 7.9 | 14.0 | 1 of 2 |" in md
    assert "| upreid | 8.0 | 12.0 | 1 of 2 |" in md
    assert "| random | 3.0 | 8.0 | - |" in md
    assert (out / "figures" / "pretraining_frozen.png").stat().st_size > 10_000


def test_no_frozen_values_no_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking.stage_run(
        "pretrain/moco", profile="t", params={}, tags={}, commit="c", root=tmp_path
    ) as run:
        run.log_metrics({"loss": 1.0}, 1)
    records = tracking.latest_runs("t", tmp_path)
    assert write_pretraining(tmp_path / "r", records, ["moco"], 0, tmp_path) == []
    assert not (tmp_path / "r" / "tables" / "pretraining.csv").exists()


def test_pretraining_seeds_paired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three pre-training seeds of each method: rows per seed (the untrained network of each
    seed too), mean ± std per cell, and the paired UP-ReID - MoCo difference with its interval."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    moco = (10.0, 12.0, 11.0)
    upreid = (13.0, 14.0, 15.0)  # paired differences 3, 2, 4: mean 3, sd 1
    for p, (m, u) in enumerate(zip(moco, upreid, strict=True)):
        suffix = f"-p{p}" if p else ""
        _pretrain_run(tmp_path, f"moco{suffix}", {"market1501": [5.0 + p, 8, m]})
        _pretrain_run(tmp_path, f"upreid{suffix}", {"market1501": [5.0 + p, 9, u]})
    records = tracking.latest_runs("t", tmp_path)
    out = tmp_path / "reports"
    names = ["moco", "upreid", "moco-p1", "upreid-p1", "moco-p2", "upreid-p2"]
    write_pretraining(out, records, names, seed=4, root=tmp_path)
    with open(out / "tables" / "pretraining.csv") as fh:
        rows = list(csv.reader(fh))[1:]
    untrained = sorted((r[1], float(r[3])) for r in rows if r[0] == "random")
    assert untrained == [("4", 5.0), ("5", 6.0), ("6", 7.0)]  # each seed's own network
    assert sorted((r[1], float(r[3])) for r in rows if r[0] == "upreid") == [
        ("4", 13.0),
        ("5", 14.0),
        ("6", 15.0),
    ]
    md = (out / "tables" / "pretraining.md").read_text()
    assert "| upreid | 14.0 ± 1.0 (n=3) | 1 of 1 |" in md  # 14 >= mean untrained 6 + 5
    # t(2) = 4.303: 3 +- 4.303 / sqrt(3) = [0.5, 5.5]
    assert "+3.0, +2.0, +4.0; mean +3.0, 95 % interval [+0.5, +5.5] (n=3)" in md
    assert "excludes 0: UP-ReID > MoCo" in md


def test_both_untrained_baselines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The untrained network as initialised (``random``) and with estimated BN statistics
    (``random-bn``): one tally per baseline."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # untrained 10 (as initialised) and 6 (BN estimated); trained 13 and 12
    _pretrain_run(tmp_path, "moco", {"market1501": [10.0, 11, 13], "msmt17": [10.0, 11, 12]}, 4)
    records = tracking.latest_runs("t", tmp_path)
    out = tmp_path / "reports"
    write_pretraining(out, records, ["moco"], seed=0, root=tmp_path)
    with open(out / "tables" / "pretraining.csv") as fh:
        rows = {(r[0], r[2]): float(r[3]) for r in list(csv.reader(fh))[1:]}
    assert rows[("random", "market1501")] == 10.0 and rows[("random-bn", "market1501")] == 6.0
    md = (out / "tables" / "pretraining.md").read_text()
    assert "| variant | market1501 | msmt17 | sets > random + 5 | sets > random-bn + 5 |" in md
    assert "| moco | 13.0 | 12.0 | 0 of 2 | 2 of 2 |" in md
    assert "0 of 2 sets over `random` and 2 of 2 sets over `random-bn`" in md
