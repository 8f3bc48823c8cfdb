from pathlib import Path

import pytest

from upreid.experiments import (
    ABLATION_VARIANTS,
    PRETRAIN_VARIANTS,
    finetune_runs,
    init_kind,
    needed_variants,
    pretrain_variant,
)
from upreid.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def test_variants_switch_the_right_losses() -> None:
    base = load_params(ROOT / "params.yaml").pretrain
    assert pretrain_variant(base, "moco").method == "moco"
    assert not pretrain_variant(base, "icc").cc and pretrain_variant(base, "icc").icc
    assert not pretrain_variant(base, "cc").icc and pretrain_variant(base, "cc").cc
    assert not pretrain_variant(base, "nohm").hm
    assert pretrain_variant(base, "n4").patches == 4
    assert pretrain_variant(base, "online").positive == "online"
    with pytest.raises(ValueError, match="valid are"):
        pretrain_variant(base, "simclr")


def test_finetune_plan_shares_runs() -> None:
    params = load_params(ROOT / "params.yaml")
    mgn_cuhk = finetune_runs(params, "mgn", "cuhk03")
    keys = [r.key for r in mgn_cuhk]
    assert len(keys) == len(set(keys))
    seeds = {r.seed for r in mgn_cuhk if r.init == "upreid"}
    assert len(seeds) == params.pipeline.headline_seeds > 1
    assert [r.seed for r in mgn_cuhk if r.init == "scratch"] == [params.seed]  # one seed
    assert {r.init for r in mgn_cuhk} >= set(ABLATION_VARIANTS)
    assert len(finetune_runs(params, "bot", "personx")) == len(params.pipeline.inits)
    with pytest.raises(ValueError, match="pcb/msmt17"):
        finetune_runs(params, "pcb", "msmt17")


def test_init_kinds() -> None:
    assert init_kind("scratch") == "scratch"
    assert init_kind("moco") == "moco"
    assert init_kind("nohm") == "upreid"
    with pytest.raises(ValueError):
        init_kind("imagenet21k")
    params = load_params(ROOT / "params.yaml")
    assert set(needed_variants(params)) == set(PRETRAIN_VARIANTS)
