from pathlib import Path

import pytest

from upreid.experiments import (
    ABLATION_VARIANTS,
    CURVES,
    FINETUNE_CELLS,
    PRETRAIN_VARIANTS,
    FinetuneRun,
    drawn,
    eval_every,
    finetune_runs,
    init_kind,
    needed_variants,
    pretrain_name,
    pretrain_variant,
    seeded_runs,
    split_pretrain_name,
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
    assert init_kind("moco-p2") == "moco" and init_kind("upreid-p1") == "upreid"
    for wrong in ("nohm-p1", "moco-p0", "moco-p", "upreid-p01"):
        with pytest.raises(ValueError, match="moco-p1"):
            init_kind(wrong)


def test_pretraining_seeds_of_the_compared_methods() -> None:
    params = load_params(ROOT / "params.yaml")
    n = params.pipeline.pretrain_seeds
    assert n >= 3  # the default profile's spread over pre-training seeds
    assert seeded_runs(params) == [
        pretrain_name(v, p) for p in range(n) for v in ("moco", "upreid")
    ]
    assert split_pretrain_name("upreid-p2") == ("upreid", 2)
    assert split_pretrain_name("n12") == ("n12", 0)
    assert pretrain_name("moco", 0) == "moco"
    needed = needed_variants(params)
    assert len(needed) == len(set(needed)) == len(PRETRAIN_VARIANTS) + 2 * (n - 1)
    assert pretrain_variant(params.pretrain, "moco-p1") == pretrain_variant(params.pretrain, "moco")
    # the headline cells fine-tune every pre-training seed with the first fine-tune seed
    runs = finetune_runs(params, "mgn", "market1501")
    seeded = sorted(r.key for r in runs if "-p" in r.init)
    assert seeded == sorted(
        f"finetune/mgn/market1501/{v}-p{p}/s{params.seed}"
        for v in ("moco", "upreid")
        for p in range(1, n)
    )
    assert not any("-p" in r.init for r in finetune_runs(params, "bot", "market1501"))
    # the quick profile keeps one
    quick = load_params(ROOT / "params.yaml", "quick")
    assert needed_variants(quick) == [v for v in PRETRAIN_VARIANTS]


def test_only_the_runs_a_figure_draws_evaluate_every_epoch() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.pipeline.curves == "figures"
    runs = [r for m, d in FINETUNE_CELLS for r in finetune_runs(params, m, d)]
    curve = [r for r in runs if drawn(params, r)]
    # every line of every figure is a run of the plan, at the first fine-tune seed
    want = {(m, d, i) for m, ds, inits in CURVES.values() for d in ds for i in inits}
    planned = {(r.method, r.dataset, r.init) for r in runs}
    assert {(r.method, r.dataset, r.init) for r in curve} == want & planned
    # BDB and MGN on 3 sets x (scratch, moco, upreid), and MGN's cc and icc on CUHK03
    assert len(curve) == 3 * 3 * 2 + 2
    assert all(r.seed == params.seed for r in curve)
    for r in runs:
        mp = getattr(params.finetune, r.method)
        assert eval_every(params, r) == (mp.eval_every if r in curve else mp.epochs), r
    mgn = [r for r in runs if r.method == "mgn" and r.dataset == "cuhk03"]
    assert {r.init for r in mgn if r.seed == params.seed + 1} and not any(
        drawn(params, r) for r in mgn if r.seed != params.seed
    )  # the headline's other seeds are not drawn
    # runs outside the plan (a weights file, another seed) keep their method's curve
    bot = params.finetune.bot
    for outside in (
        FinetuneRun("bot", "market1501", "file:w.pt", params.seed),
        FinetuneRun("bot", "market1501", "scratch", params.seed + 7),
        FinetuneRun("pcb", "msmt17", "scratch", params.seed),  # no such cell
    ):
        assert eval_every(params, outside) == getattr(params.finetune, outside.method).eval_every
    assert (
        eval_every(params, FinetuneRun("bot", "market1501", "scratch", params.seed)) == bot.epochs
    )
    everything = load_params(ROOT / "params.yaml", overrides=["pipeline.curves=all"])
    assert all(
        eval_every(everything, r) == getattr(everything.finetune, r.method).eval_every for r in runs
    )
