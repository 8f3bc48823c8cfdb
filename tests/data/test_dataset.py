"""``PersonPairs`` (``pretrain.positives: person``): x_k from another image of x_q's person."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image

from upreid.data.dataset import ImageDataset, PersonPairs, person_of
from upreid.data.records import Record
from upreid.data.transforms import PretrainViews

ROOT = Path(__file__).resolve().parents[2]


def test_the_person_is_the_folder_and_the_name_before_the_first_underscore() -> None:
    assert person_of(Record("lmdb:/pool/luperson::000123_04_01.jpg", -1, 0)) == (
        "/pool/luperson/000123"
    )
    assert person_of(Record("/pool/vidA/7_a_b.jpg", -1, 0)) == "/pool/vidA/7"
    assert person_of(Record("/pool/vidB/7_a.jpg", -1, 0)) == "/pool/vidB/7"  # another video
    assert person_of(Record("/pool/lone.jpg", -1, 0)) == "/pool/lone.jpg"


def _pool(root: Path, names_and_values: list[tuple[str, int]]) -> list[Record]:
    records = []
    for name, value in names_and_values:
        Image.new("RGB", (16, 32), (value,) * 3).save(root / name)
        records.append(Record(str(root / name), -1, 0))
    return records


def _level(x: torch.Tensor) -> torch.Tensor:
    """Per-channel medians: uniform images keep their level through crops, blur and grey, and
    random erasing (at most a third of a view) cannot move a median."""
    return x.flatten(1).median(1).values


def test_the_key_view_comes_from_another_image_of_the_person(tmp_path: Path) -> None:
    levels = {"1_a.jpg": 250, "1_b.jpg": 10, "1_c.jpg": 130, "2_a.jpg": 70}
    records = _pool(tmp_path, list(levels.items()))
    views = PretrainViews(32, 16)
    pairs = PersonPairs(records, views)
    own = [_level(views.original(Image.new("RGB", (16, 32), (v,) * 3))) for v in levels.values()]

    def which(x: torch.Tensor) -> int:  # the record whose level x has
        return min(range(len(own)), key=lambda i: float((own[i] - _level(x)).abs().max()))

    torch.manual_seed(0)
    drawn = set()
    for _ in range(30):
        (x_o, x_q, x_k), *_ = pairs[0]
        assert which(x_o) == 0 and which(x_q) == 0
        drawn.add(which(x_k))
        (_, x_q, x_k), *_ = pairs[3]  # alone: a second view of its own image
        assert which(x_q) == 3 and which(x_k) == 3
    assert drawn == {1, 2}  # each other image of the person, never its own


def test_an_unreadable_partner_is_skipped_and_counted(tmp_path: Path) -> None:
    records = _pool(tmp_path, [("1_a.jpg", 250), ("1_b.jpg", 10)])
    (tmp_path / "1_c.jpg").write_bytes(b"not a jpeg")
    records.append(Record(str(tmp_path / "1_c.jpg"), -1, 0))
    pairs = PersonPairs(records, PretrainViews(32, 16))
    torch.manual_seed(0)
    for _ in range(10):
        (_, _, x_k), *_ = pairs[0]
        assert float(_level(x_k).mean()) < -1  # always the readable partner, the dark one
    assert pairs.bad == {2}


def test_a_pool_without_repeated_people_is_refused(tmp_path: Path) -> None:
    records = _pool(tmp_path, [("a.jpg", 1), ("b.jpg", 2)])
    with pytest.raises(ValueError, match="positives: person needs pool images named"):
        PersonPairs(records, PretrainViews(32, 16))


def test_the_pretraining_dataset_pairs_people_when_asked(tmp_path: Path) -> None:
    from upreid.params import load_params
    from upreid.train.pretrain import pretrain_dataset

    pp = load_params(ROOT / "params.yaml", "quick").pretrain
    records = _pool(tmp_path, [(f"{i // 2}_{i % 2}.jpg", 8 * i) for i in range(16)])
    assert type(pretrain_dataset(pp, records)) is ImageDataset  # every profile: the paper's
    person = dataclasses.replace(pp, positives="person")
    assert type(pretrain_dataset(person, records)) is PersonPairs
