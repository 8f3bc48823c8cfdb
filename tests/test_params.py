from pathlib import Path

import pytest
import yaml

from upreid.params import ParamsError, load_params, parse

ROOT = Path(__file__).resolve().parents[1]


def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("profile", ["default", "quick", "paper"])
def test_every_profile_loads(profile: str) -> None:
    params = load_params(ROOT / "params.yaml", profile)
    assert params.profile == profile
    assert params.pretrain.height > 0


def test_profiles_change_sizes() -> None:
    default, paper = (load_params(ROOT / "params.yaml", p) for p in ("default", "paper"))
    assert paper.pretrain.arch == "resnet50" and paper.pretrain.batch_size == 800
    assert (paper.pretrain.height, paper.pretrain.width) == (256, 128)
    assert default.pretrain.arch != "resnet50"
    assert default.digest() != paper.digest()


def test_unknown_key_is_named() -> None:
    data = raw()
    data["pretrain"]["learning_rate"] = 0.1
    with pytest.raises(ParamsError, match="learning_rate"):
        parse(data)


def test_missing_key_is_named() -> None:
    data = raw()
    del data["finetune"]["bot"]["margin"]  # a params file older than the key, say
    with pytest.raises(ParamsError, match=r"missing key\(s\) \['margin'\]; add them"):
        parse(data)


def test_wrong_type_is_named() -> None:
    data = raw()
    data["pretrain"]["batch_size"] = "big"
    with pytest.raises(ParamsError, match=r"pretrain\.batch_size"):
        parse(data)


def test_negative_learning_rate() -> None:
    data = raw()
    data["pretrain"]["lr"] = -0.1
    with pytest.raises(ParamsError, match=r"lr must be > 0"):
        parse(data)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("checkpoint_every", 0, r"finetune\.checkpoint_every must be > 0"),
        ("image_cache_mb", -1, r"finetune\.image_cache_mb must be >= 0"),
    ],
)
def test_finetune_runtime_bounds(key: str, value: int, message: str) -> None:
    data = raw()
    data["finetune"][key] = value
    with pytest.raises(ParamsError, match=message):
        parse(data)


def test_unknown_profile_and_profile_key() -> None:
    with pytest.raises(ParamsError, match="unknown profile 'huge'"):
        parse(raw(), "huge")
    data = raw()
    data["profiles"]["quick"]["pretrain"]["epochz"] = 1
    with pytest.raises(ParamsError, match="epochz"):
        parse(data, "quick")


def test_bad_literal_lists_valid_values() -> None:
    data = raw()
    data["pretrain"]["method"] = "simclr"
    with pytest.raises(ParamsError, match="moco"):
        parse(data)


def test_unknown_init_and_missing_file(tmp_path: Path) -> None:
    data = raw()
    data["pipeline"]["inits"] = ["scratch", "dino"]
    with pytest.raises(ParamsError, match="dino"):
        parse(data)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_params_are_frozen() -> None:
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(AttributeError):
        params.pretrain.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "path,value,message",
    [
        (("seed",), -3, "seed must be >= 0"),
        (("eval", "batch_size"), 0, "eval.batch_size must be > 0"),
        (("eval", "chunk"), -1, "eval.chunk must be > 0"),
        (("pretrain", "lr"), float("inf"), "pretrain.lr: expected a finite number"),
        (("pretrain", "lr_floor"), 1.5, "pretrain.lr_floor must be in"),
        (("finetune", "bot", "lr"), float("nan"), "finetune.bot.lr: expected a finite number"),
        (("spcl", "memory_momentum"), 1.0, "spcl.memory_momentum must be in"),
        (("runtime", "device"), "gpu", "runtime.device"),
    ],
)
def test_out_of_range_values_are_refused(
    path: tuple[str, ...], value: object, message: str
) -> None:
    data = raw()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ParamsError, match=message.replace(".", r"\.")):
        parse(data, "default")


def test_a_base_value_the_profile_overrides_is_still_checked() -> None:
    data = raw()
    data["finetune"]["bot"]["epochs"] = 0  # the quick profile sets its own bot epochs
    assert "epochs" in data["profiles"]["quick"]["finetune"]["bot"]
    with pytest.raises(ParamsError, match="epochs must be > 0"):
        parse(data, "quick")


def test_overrides_set_single_values_and_are_validated() -> None:
    p = load_params(
        ROOT / "params.yaml", "quick", ["finetune.bot.lr=0.002", "seed=4", "pipeline.inits=[moco]"]
    )
    assert p.finetune.bot.lr == 0.002 and p.seed == 4 and p.pipeline.inits == ("moco",)
    with pytest.raises(ParamsError, match="has no key 'lrr'"):
        load_params(ROOT / "params.yaml", None, ["finetune.bot.lrr=1"])
    with pytest.raises(ParamsError, match="finetune.bot.lr: expected a finite number"):
        load_params(ROOT / "params.yaml", None, ["finetune.bot.lr=.inf"])
    with pytest.raises(ParamsError, match="expected key.path=value"):
        load_params(ROOT / "params.yaml", None, ["finetune.bot.lr"])


def test_pretrain_and_finetune_trunks_must_match() -> None:
    with pytest.raises(ParamsError, match="pretrain.arch resnet18 and finetune.arch resnet10"):
        parse(raw(), "default", ["pretrain.arch=resnet18", "finetune.arch=resnet10"])
    both = parse(raw(), "default", ["pretrain.arch=resnet18", "finetune.arch=resnet18"])
    assert both.pretrain.arch == both.finetune.arch == "resnet18"


def test_insup_needs_a_trunk_with_imagenet_weights() -> None:
    with pytest.raises(ParamsError, match="insup, but resnet10 has no ImageNet weights"):
        parse(
            raw(),
            "default",
            ["pretrain.arch=resnet10", "finetune.arch=resnet10", "pipeline.inits=[scratch, insup]"],
        )
    ok = parse(
        raw(),
        "default",
        ["pretrain.arch=resnet18", "finetune.arch=resnet18", "pipeline.inits=[scratch, insup]"],
    )
    assert "insup" in ok.pipeline.inits
