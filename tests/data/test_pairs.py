"""``pretrain.positives: person``: x_k from another image of x_q's person."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from upreid.data.dataset import PersonPairs, person_groups, person_of
from upreid.data.records import Record
from upreid.data.transforms import PretrainViews


def test_the_person_is_the_name_before_the_first_underscore() -> None:
    assert person_of(Record("lmdb:/pool/luperson::000123_04_01.jpg", -1, 0)) == "000123"
    assert person_of(Record("/pool/images/v7_a_b.jpg", -1, 0)) == "v7"
    assert person_of(Record("/pool/images/lone.jpg", -1, 0)) == "lone.jpg"
    recs = [Record(p, -1, 0) for p in ("/p/1_a.jpg", "/p/2_a.jpg", "/p/1_b.jpg", "/p/1_c.jpg")]
    assert person_groups(recs) == [[2, 3], [], [0, 3], [0, 2]]


def _pool(root: Path, names_and_values: list[tuple[str, int]]) -> list[Record]:
    records = []
    for name, value in names_and_values:
        Image.new("RGB", (16, 32), (value,) * 3).save(root / name)
        records.append(Record(str(root / name), -1, 0))
    return records


def test_the_key_view_comes_from_the_other_image_of_the_person(tmp_path: Path) -> None:
    # uniform images: crops, blur and grey keep each one's level; erasing leaves the median
    records = _pool(tmp_path, [("1_a.jpg", 255), ("1_b.jpg", 0), ("2_a.jpg", 128)])
    pairs = PersonPairs(records, PretrainViews(32, 16))
    torch.manual_seed(0)
    for _ in range(5):
        (x_o, x_q, x_k), *_ = pairs[0]
        assert x_o.median() > 1 and x_q.median() > 1 and x_k.median() < -1  # white; black
        (x_o, x_q, x_k), *_ = pairs[1]
        assert x_q.median() < -1 and x_k.median() > 1
        (_, x_q, x_k), *_ = pairs[2]  # alone: its own image
        assert abs(float(x_q.median() - x_k.median())) < 0.1


def test_a_pool_without_repeated_people_is_refused(tmp_path: Path) -> None:
    records = _pool(tmp_path, [("a.jpg", 1), ("b.jpg", 2)])
    with pytest.raises(ValueError, match="positives: person needs pool images named"):
        PersonPairs(records, PretrainViews(32, 16))


def test_the_pretraining_loader_pairs_people_when_asked(tmp_path: Path) -> None:
    import dataclasses

    from upreid.params import load_params
    from upreid.runtime import Runtime
    from upreid.train.pretrain import _loader

    pp = load_params(Path(__file__).resolve().parents[2] / "params.yaml", "quick").pretrain
    records = _pool(tmp_path, [(f"{i // 2}_{i % 2}.jpg", 8 * i) for i in range(16)])
    rt = Runtime(torch.device("cpu"))
    for positives, kind in (("image", "ImageDataset"), ("person", "PersonPairs")):
        pp = dataclasses.replace(pp, positives=positives, batch_size=4)
        assert type(_loader(pp, records, rt, 0)[0].dataset).__name__ == kind
