from pathlib import Path

import pytest

from upreid import tracking
from upreid.params import load_params
from upreid.report.runs import Runs, Value
from upreid.report.tables import _ordering, build_tables, write_reports

ROOT = Path(__file__).resolve().parents[2]


def _log(root: Path, key: str, curve: list[float], rank1: float) -> None:
    with tracking.stage_run(
        key, profile="default", params={}, tags={}, commit="c", root=root
    ) as run:
        for epoch, value in enumerate(curve, start=1):
            run.log_metrics({"mAP": value, "rank1": rank1, "rank5": rank1 + 5}, epoch)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for seed, final in enumerate((40.0, 42.0, 44.0)):
        _log(tmp_path, f"finetune/mgn/cuhk03/upreid/s{seed}", [10.0, final], 50.0 + seed)
    _log(tmp_path, "finetune/mgn/cuhk03/moco/s0", [12.0, 45.0], 55.0)
    _log(tmp_path, "finetune/mgn/cuhk03/cc/s0", [11.0, 30.0], 35.0)
    _log(tmp_path, "finetune/bdb/market1501/upreid/s0", [5.0, 20.0], 30.0)
    return tmp_path


def test_cells_orderings_and_absent_runs(store: Path) -> None:
    params = load_params(ROOT / "params.yaml")
    runs = Runs(tracking.latest_runs("default", store))
    tables = {t.name: t for t in build_tables(runs, params)}
    t1 = tables["table1"]
    mgn_up = next(r for r in t1.rows if r[:2] == ["MGN", "UP-ReID"])
    assert mgn_up[2].startswith("42.0±2.0 (n=3)/51.0±1.0 (n=3) | 85.3/87.6")
    assert mgn_up[3].startswith("absent")
    note = next(n for n in t1.notes if n.startswith("MGN CUHK03"))
    assert "does NOT hold" in note and "42.0 vs 45.0" in note and "paper +12.2" in note
    t4 = tables["table4"]
    assert t4.rows[1][1].startswith("30.0 | 79.1")
    cc_note = next(n for n in t4.notes if "w CC" in n)
    assert "holds" in cc_note and "NOT" not in cc_note
    assert "absent" in tables["table2"].rows[0][1]
    assert "profile default" in tables["table8"].rows[-1][0]


def test_write_reports_files(store: Path, tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml")
    out = tmp_path / "reports"
    summary = write_reports(params, out, tracking.latest_runs("default", store), root=store)
    assert summary["runs"] == 6 and summary["absent_cells"] > 0
    for name in ("table1", "table2", "table4", "table5", "table6", "table7", "table8"):
        md = (out / "tables" / f"{name}.md").read_text()
        assert md.startswith("# Table") and "Profile `default`, seed 0" in md
        table = [row for row in md.splitlines() if row.startswith("|")]
        columns = {row.replace("\\|", "").count("|") for row in table}
        assert len(columns) == 1, (name, columns)  # every row has the header's columns
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
    fig = out / "figures" / "curves" / "figure5_mgn_ablation.png"
    assert fig.read_bytes()[:4] == b"\x89PNG"
    index = (out / "README.md").read_text()
    assert "tables/table1.md" in index and "mgn/cuhk03/upreid: 42.0±2.0" in index


def test_ordering_says_when_the_gap_is_within_the_seed_spread() -> None:
    text, holds = _ordering("x", Value((40.0, 42.0, 44.0)), Value((41.0,)))
    assert holds and "within the seed spread: inconclusive" in text and "+1.0" in text
    text, holds = _ordering("x", Value((40.0, 42.0, 44.0)), Value((45.0,)))
    assert holds is False and "does NOT hold here" in text and "inconclusive" not in text
    text, holds = _ordering("x", Value((40.0,)), Value(()))
    assert holds is None and "not measured" in text


def test_headline_spread_over_pretraining_seeds_and_paired_difference(
    store: Path,
) -> None:
    """Pre-training seeds p1, p2 of each method (fine-tune seed 0) beside the fixture's p0:
    the headline cell gives both spreads, Table 1 and Table 4 the paired and the seed lines."""
    for p, (mo, up) in enumerate(((47.0, 41.0), (46.0, 43.0)), start=1):
        _log(store, f"finetune/mgn/cuhk03/moco-p{p}/s0", [1.0, mo], 50.0)
        _log(store, f"finetune/mgn/cuhk03/upreid-p{p}/s0", [1.0, up], 50.0)
    params = load_params(ROOT / "params.yaml")
    assert params.pipeline.pretrain_seeds == 3
    runs = Runs(tracking.latest_runs("default", store))
    tables = {t.name: t for t in build_tables(runs, params)}
    # UP-ReID - MoCo per pre-training seed: 40-45, 41-47, 43-46 = -5, -6, -3: mean -4.67,
    # sd 1.53, half-width 4.303 * 1.53 / sqrt(3) = 3.79 -> [-8.5, -0.9]
    paired = next(n for n in tables["table1"].notes if "per pre-training seed" in n)
    assert paired.startswith(
        "MGN CUHK03 mAP, UP-ReID - MoCo per pre-training seed: -5.0, -6.0, -3.0"
    )
    assert "mean -4.7, 95 % interval [-8.5, -0.9] (n=3)" in paired
    assert "excludes 0: UP-ReID < MoCo" in paired
    market = next(n for n in tables["table1"].notes if "Market1501 mAP, UP-ReID - MoCo" in n)
    assert "not measured" in market
    seeds = next(n for n in tables["table4"].notes if "Over pre-training seeds" in n)
    assert "(a) Baseline 46.0±1.0 (n=3)" in seeds and "full UP-ReID 41.3±1.5 (n=3)" in seeds
