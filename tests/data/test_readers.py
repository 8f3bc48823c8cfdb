"""Readers on fake directory trees: conventions, bad names, missing folders, corrupt images;
the decoded-image cache."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from PIL import Image

from upreid.data import transforms
from upreid.data.dataset import ImageDataset, drop_bad_records
from upreid.data.images import BadImage, ImageCache, read_image
from upreid.data.readers import (
    check_dataset,
    read_cuhk03,
    read_market1501,
    read_msmt17,
    read_personx,
    read_pool,
)
from upreid.data.records import DatasetLayoutError


def _jpg(path: Path, color: tuple[int, int, int] = (120, 30, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 32), color).save(path)


def _market(root: Path, names: dict[str, list[str]]) -> None:
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names.get(folder, []):
            _jpg(root / folder / name)


def test_market_conventions(tmp_path: Path) -> None:
    _market(
        tmp_path,
        {
            "bounding_box_train": [
                "0002_c1s1_000451_03.jpg",
                "0002_c3s1_000551_01.jpg",
                "0007_c2s3_070952_01.jpg",
            ],
            "query": ["0001_c1s1_001051_00.jpg"],
            "bounding_box_test": [
                "0001_c6s1_009601_01.jpg",
                "0000_c2s1_000000_01.jpg",
                "-1_c1s1_000401_03.jpg",
            ],
        },
    )
    data = read_market1501(tmp_path)
    assert sorted((r.pid, r.camid) for r in data.train) == [(2, 0), (2, 2), (7, 1)]
    assert [(r.pid, r.camid) for r in data.query] == [(1, 0)]
    # junk (-1) dropped, distractor (0) kept in the gallery, cameras 0-based
    assert sorted((r.pid, r.camid) for r in data.gallery) == [(0, 1), (1, 5)]


def test_bad_name_and_missing_folder_name_the_path(tmp_path: Path) -> None:
    _market(tmp_path, {"bounding_box_train": ["0002_c1s1_000451_03.jpg", "holiday.jpg"]})
    with pytest.raises(DatasetLayoutError, match="holiday.jpg.*expected layout"):
        read_market1501(tmp_path)
    report = check_dataset("market1501", tmp_path)
    assert any("holiday.jpg" in p for p in report["problems"])
    assert report["train"]["images"] == 1
    with pytest.raises(DatasetLayoutError, match="missing folder .*nowhere"):
        read_market1501(tmp_path / "nowhere")
    (tmp_path / "query").rmdir()
    with pytest.raises(DatasetLayoutError, match="query"):
        read_market1501(tmp_path)


def test_cuhk03_modes_and_personx_cameras(tmp_path: Path) -> None:
    for mode in ("labeled", "detected"):
        _market(tmp_path / "cuhk" / mode, {"bounding_box_train": ["0003_c2_01.png"]})
    assert read_cuhk03(tmp_path / "cuhk").train[0].camid == 1
    assert read_cuhk03(tmp_path / "cuhk", mode="detected").train[0].pid == 3
    with pytest.raises(DatasetLayoutError, match="labeled"):
        read_cuhk03(tmp_path / "nothing")
    _market(
        tmp_path / "px",
        {"bounding_box_train": ["0001_c3s1_000001_00.jpg", "0001_c12s1_000002_00.jpg"]},
    )
    assert sorted(r.camid for r in read_personx(tmp_path / "px").train) == [0, 5]
    _market(tmp_path / "px2", {"bounding_box_train": ["0001_c5s1_000001_00.jpg"]})
    with pytest.raises(DatasetLayoutError, match="unknown camera c5"):
        read_personx(tmp_path / "px2")


def test_msmt17_lists(tmp_path: Path) -> None:
    rel = "0003/0003_012_05_0303morning_0015_0.jpg"
    for sub in ("train", "test"):
        _jpg(tmp_path / sub / rel)
    (tmp_path / "list_train.txt").write_text(f"{rel} 3\n")
    (tmp_path / "list_val.txt").write_text(f"{rel} 3\n")
    (tmp_path / "list_query.txt").write_text(f"{rel} 3\n")
    (tmp_path / "list_gallery.txt").write_text(f"{rel} 3\nbroken-line\n")
    with pytest.raises(DatasetLayoutError, match="list_gallery.txt:2"):
        read_msmt17(tmp_path)
    (tmp_path / "list_gallery.txt").write_text(f"{rel} 3\n")
    data = read_msmt17(tmp_path)
    assert len(data.train) == 2 and data.query[0].camid == 4
    assert data.gallery[0].path == str(tmp_path / "test" / rel)
    (tmp_path / "list_val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="list_val.txt"):
        read_msmt17(tmp_path)


def test_pool_lmdb_and_folder(tmp_path: Path) -> None:
    import io

    import lmdb

    env = lmdb.open(str(tmp_path / "lmdb"), map_size=1 << 24)
    keys = ["a.jpg", "b.jpg"]
    with env.begin(write=True) as txn:
        for key in keys:
            buf = io.BytesIO()
            Image.new("RGB", (8, 16), (1, 2, 3)).save(buf, format="JPEG")
            txn.put(key.encode(), buf.getvalue())
    env.close()
    (tmp_path / "lmdb" / "keys.pkl").write_bytes(pickle.dumps(keys))
    pool = read_pool(tmp_path / "lmdb")
    assert len(pool) == 2 and pool[0].pid == -1
    assert drop_bad_records(pool)[1] == []
    _jpg(tmp_path / "folder" / "x" / "1.jpg")
    assert len(read_pool(tmp_path / "folder")) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no images"):
        read_pool(tmp_path / "empty")


def test_corrupt_and_empty_images_are_skipped_and_counted(tmp_path: Path) -> None:
    _market(
        tmp_path, {"bounding_box_train": ["0001_c1s1_000001_00.jpg", "0001_c2s1_000002_00.jpg"]}
    )
    good = tmp_path / "bounding_box_train" / "0001_c1s1_000001_00.jpg"
    truncated = tmp_path / "bounding_box_train" / "0002_c1s1_000003_00.jpg"
    truncated.write_bytes(good.read_bytes()[:40])
    (tmp_path / "bounding_box_train" / "0002_c2s1_000004_00.jpg").write_bytes(b"")
    data = read_market1501(tmp_path)
    assert len(data.train) == 4
    kept, bad = drop_bad_records(data.train)
    assert len(kept) == 2 and len(bad) == 2
    report = check_dataset("market1501", tmp_path)
    assert sum("0002_c" in p for p in report["problems"]) == 2
    ds = ImageDataset(data.train, transforms.test_transform(32, 16))
    items = [ds[i] for i in range(len(ds))]  # never raises mid-epoch
    assert len(items) == 4 and len(ds.bad) == 2


def test_image_cache_returns_the_decoded_image_within_its_budget(tmp_path: Path) -> None:
    paths = []
    for i, color in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (16, 32), color).save(paths[-1])
    one = 16 * 32 * 3
    cache = ImageCache(2.5 * one / 2**20)  # room for two of the three images
    for _ in range(3):
        for path in paths:
            img = cache.read(path)
            assert img.tobytes() == read_image(path).tobytes()
            img.paste((0, 0, 0), (0, 0, 16, 32))  # a caller's change never reaches the cache
    assert len(cache) == 2 and cache.used == 2 * one
    assert (cache.hits, cache.misses) == (4, 5)  # the third image is decoded every time
    Path(paths[0]).unlink()  # a cached image no longer touches the disk
    assert cache.read(paths[0]).getpixel((0, 0)) == (200, 10, 10)
    with pytest.raises(BadImage):  # nor is a bad file cached as good
        ImageCache(1).read(str(tmp_path / "missing.png"))
    # drop_bad_records fills the cache that the dataset then reads from
    _market(
        tmp_path / "m",
        {"bounding_box_train": ["0001_c1s1_000001_00.jpg", "0001_c2s1_000002_00.jpg"]},
    )
    records = read_market1501(tmp_path / "m").train
    shared = ImageCache(1)
    kept, _ = drop_bad_records(records, shared)
    ds = ImageDataset(kept, transforms.test_transform(32, 16), shared)
    assert [ds[i][0].shape for i in range(2)] == [(3, 32, 16)] * 2
    assert (shared.hits, shared.misses) == (2, 2)
    with pytest.raises(ValueError, match="max_mb"):
        ImageCache(-1)
