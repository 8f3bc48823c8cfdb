"""The generator: deterministic bytes, real layouts that round-trip through the readers."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from upreid.data.readers import check_dataset, read_dataset, read_pool
from upreid.data.synth import Identity, Shot, Writer, split_test, synthesize, write_contact_sheet
from upreid.params import load_params

ROOT = Path(__file__).resolve().parents[2]


def _tiny():
    data = load_params(ROOT / "params.yaml", "quick").data
    small = {"train_identities": 4, "test_identities": 3, "distractors": 2}
    return dataclasses.replace(
        data,
        pool=dataclasses.replace(data.pool, identities=6),
        **{
            n: dataclasses.replace(getattr(data, n), **small)
            for n in ("market1501", "cuhk03", "msmt17", "personx")
        },
    )


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "lock.mdb":
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(_tiny(), root / "a")
    return root


def test_same_seed_same_bytes(synth_root: Path) -> None:
    synthesize(_tiny(), synth_root / "b")
    assert _tree_digest(synth_root / "a") == _tree_digest(synth_root / "b")
    other = dataclasses.replace(_tiny(), seed=8)
    writer_a, writer_b = Writer("market1501", 7, other, 2), Writer("market1501", 8, other, 2)
    assert writer_a.image(Shot(1, 0, 0)) != writer_b.image(Shot(1, 0, 0))


def test_layouts_round_trip_through_readers(synth_root: Path) -> None:
    data = _tiny()
    for name in ("market1501", "cuhk03", "msmt17", "personx"):
        sp = getattr(data, name)
        ds = read_dataset(name, synth_root / "a" / name)
        assert len({r.pid for r in ds.train}) == sp.train_identities
        assert {r.pid for r in ds.query} <= {r.pid for r in ds.gallery}
        assert all(0 <= r.camid < sp.cameras for r in (*ds.train, *ds.query, *ds.gallery))
        assert check_dataset(name, synth_root / "a" / name)["problems"] == []
    gallery = read_dataset("market1501", synth_root / "a" / "market1501").gallery
    assert sum(r.pid == 0 for r in gallery) == data.market1501.distractors
    assert len(read_pool(synth_root / "a" / "luperson")) >= 2 * data.pool.identities


def test_every_query_has_a_cross_camera_match() -> None:
    shots = [Shot(1, c, i) for c in (0, 2, 5) for i in range(2)]
    query, gallery = split_test(shots)
    assert [s.cam for s in query] == [0, 2]
    assert all(any(g.cam != q.cam for g in gallery) for q in query)


def test_identities_vary_and_render_is_an_image(synth_root: Path) -> None:
    writer = Writer("market1501", 7, _tiny(), 3)
    people = [writer.identity(pid) for pid in range(1, 40)]
    assert len({p.upper for p in people}) > 30
    assert any(p.handbag for p in people) and any(p.backpack for p in people)
    assert isinstance(Identity.sample(np.random.default_rng(0)), Identity)
    sheet = write_contact_sheet(synth_root / "a" / "market1501", synth_root / "sheet.png")
    assert sheet.stat().st_size > 1000


def test_the_generator_clears_only_folders_it_wrote(tmp_path: Path) -> None:
    from upreid.data.synth import MARKER, prepare_root

    project = tmp_path / "project"
    user = project / "mine"
    user.mkdir(parents=True)
    (user / "thesis.txt").write_text("keep me")
    with pytest.raises(ValueError, match="was not written by the generator"):
        prepare_root(user, inside=project)
    assert (user / "thesis.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="outside the project folder"):
        prepare_root(tmp_path / "elsewhere", inside=project)
    with pytest.raises(ValueError, match="was not written by the generator"):
        prepare_root(project, inside=project)  # data.root: . must not wipe the project
    ours = project / "data" / "synth"
    prepare_root(ours, inside=project)
    (ours / "old.jpg").write_bytes(b"x")
    prepare_root(ours, inside=project)  # its own folder: cleared and marked again
    assert sorted(p.name for p in ours.iterdir()) == [MARKER]
