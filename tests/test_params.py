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
    del data["finetune"]["bot"]["margin"]
    with pytest.raises(ParamsError, match="margin"):
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


@pytest.mark.parametrize("key,value,message", [
    ("checkpoint_every", 0, r"finetune\.checkpoint_every must be > 0"),
    ("image_cache_mb", -1, r"finetune\.image_cache_mb must be >= 0"),
])
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
