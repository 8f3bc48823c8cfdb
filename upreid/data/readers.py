"""Readers of the real on-disk layouts: Market-1501, CUHK03-NP, MSMT17, PersonX, LUPerson.

Each returns typed :class:`Record` s ``(path, pid, camid)`` with the standard conventions: junk
(pid -1) dropped, distractors (pid 0) kept in the gallery, cameras 0-based. A missing folder or a
file name that does not parse raises :class:`DatasetLayoutError` naming the path and the expected
layout; with ``problems`` given, bad names are collected there and skipped instead.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from upreid.data.images import LMDB_PREFIX
from upreid.data.records import DatasetLayoutError, Record, ReIDData

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)(?:s\d+)?_.*\.(?:jpg|jpeg|png)$", re.IGNORECASE)
MARKET_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
MARKET_LAYOUT = (
    "{root}/bounding_box_train/, {root}/query/, {root}/bounding_box_test/ with "
    "names like 0002_c1s1_000451_03.jpg (pid_c<camera>...)"
)
PERSONX_CAMERAS = (3, 4, 8, 10, 11, 12)
MSMT_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
MSMT_LAYOUT = (
    "{root}/train/, {root}/test/ and {root}/list_{{train,val,query,gallery}}.txt with "
    "lines 'relpath pid', names like 0000_000_01_0303morning_0015_0.jpg"
)
Problems = list[str] | None


def _require_dir(path: Path, layout: str) -> None:
    if not path.is_dir():
        raise DatasetLayoutError(f"missing folder {path}; expected layout: {layout}")


def _bad(problems: Problems, message: str) -> None:
    if problems is None:
        raise DatasetLayoutError(message)
    problems.append(message)


def _market_folder(
    folder: Path,
    camera_index: Callable[[int], int],
    layout: str,
    problems: Problems,
    keep_distractors: bool,
) -> list[Record]:
    _require_dir(folder, layout)
    records = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTS:
            continue
        match = MARKET_NAME.match(path.name)
        if match is None:
            _bad(problems, f"{path}: file name does not parse; expected layout: {layout}")
            continue
        pid, cam = int(match.group(1)), int(match.group(2))
        if pid == -1 or (pid == 0 and not keep_distractors):
            continue  # junk; distractors only count in the gallery
        try:
            camid = camera_index(cam)
        except KeyError:
            _bad(problems, f"{path}: unknown camera c{cam}; expected layout: {layout}")
            continue
        records.append(Record(str(path), pid, camid))
    return records


def read_market_style(
    name: str, root: str | Path, camera_index: Callable[[int], int], problems: Problems = None
) -> ReIDData:
    """Any Market-1501-style folder triple (Market-1501, CUHK03-NP, PersonX)."""
    root = Path(root)
    layout = MARKET_LAYOUT.format(root=root)
    _require_dir(root, layout)
    train, query, gallery = (
        _market_folder(root / sub, camera_index, layout, problems, keep_distractors=sub == gal)
        for sub, gal in zip(MARKET_FOLDERS, ("", "", "bounding_box_test"), strict=True)
    )
    return ReIDData(name, tuple(train), tuple(query), tuple(gallery))


def read_market1501(root: str | Path, problems: Problems = None) -> ReIDData:
    """Market-1501: cameras c1..c6 -> 0..5."""
    return read_market_style("market1501", root, lambda c: c - 1, problems)


def read_cuhk03(root: str | Path, problems: Problems = None, mode: str = "labeled") -> ReIDData:
    """CUHK03-NP: ``root/labeled/`` or ``root/detected/``, each a Market-style folder triple
    (the new protocol of Zhong et al.); cameras c1, c2 -> 0, 1."""
    if mode not in ("labeled", "detected"):
        raise ValueError(f"CUHK03-NP mode must be 'labeled' or 'detected', got {mode!r}")
    root = Path(root)
    _require_dir(
        root / mode,
        f"{root}/labeled/ and {root}/detected/, each " + MARKET_LAYOUT.format(root="<mode>"),
    )
    return read_market_style("cuhk03", root / mode, lambda c: c - 1, problems)


def read_personx(root: str | Path, problems: Problems = None) -> ReIDData:
    """PersonX: cameras {3, 4, 8, 10, 11, 12} -> 0..5."""
    index = {cam: i for i, cam in enumerate(PERSONX_CAMERAS)}
    return read_market_style("personx", root, index.__getitem__, problems)


def _msmt_list(root: Path, list_name: str, folder: str, problems: Problems) -> list[Record]:
    layout = MSMT_LAYOUT.format(root=root)
    list_file = root / list_name
    if not list_file.is_file():
        raise DatasetLayoutError(f"missing list file {list_file}; expected layout: {layout}")
    records = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        fields = Path(parts[0]).name.split("_")
        if (
            len(parts) != 2
            or len(fields) < 3
            or not parts[1].lstrip("-").isdigit()
            or not fields[2].isdigit()
        ):
            _bad(
                problems,
                f"{list_file}:{lineno}: {line!r} does not parse; expected layout: {layout}",
            )
            continue
        records.append(Record(str(root / folder / parts[0]), int(parts[1]), int(fields[2]) - 1))
    return records


def read_msmt17(root: str | Path, problems: Problems = None) -> ReIDData:
    """MSMT17 from its list files; train = list_train + list_val; cameras 01..15 -> 0..14."""
    root = Path(root)
    layout = MSMT_LAYOUT.format(root=root)
    _require_dir(root, layout)
    for sub in ("train", "test"):
        _require_dir(root / sub, layout)
    train = _msmt_list(root, "list_train.txt", "train", problems) + _msmt_list(
        root, "list_val.txt", "train", problems
    )
    query = _msmt_list(root, "list_query.txt", "test", problems)
    gallery = _msmt_list(root, "list_gallery.txt", "test", problems)
    return ReIDData("msmt17", tuple(train), tuple(query), tuple(gallery))


READERS: dict[str, Callable[..., ReIDData]] = {
    "market1501": read_market1501,
    "cuhk03": read_cuhk03,
    "msmt17": read_msmt17,
    "personx": read_personx,
}
FORMATS = (*READERS, "luperson")


def read_dataset(fmt: str, root: str | Path, problems: Problems = None) -> ReIDData:
    """The labeled dataset of format ``fmt`` at ``root``."""
    if fmt not in READERS:
        raise ValueError(f"unknown dataset format {fmt!r}; valid are {list(READERS)}")
    return READERS[fmt](root, problems)


class _KeysUnpickler(pickle.Unpickler):
    """Unpickles plain data only: any class or function reference is refused, so a crafted
    ``keys.pkl`` cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise DatasetLayoutError(
            f"keys file refers to {module}.{name}: only a list of str or bytes keys is accepted"
        )


def read_keys(path: Path) -> list[str]:
    """LUPerson's ``keys.pkl``: a list (or tuple) of str / bytes keys, read as data."""
    with path.open("rb") as fh:
        try:
            keys = _KeysUnpickler(fh).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise DatasetLayoutError(f"{path}: not a pickled list of keys ({err})") from err
    if not isinstance(keys, list | tuple) or not all(isinstance(k, str | bytes) for k in keys):
        raise DatasetLayoutError(
            f"{path}: expected a list of str or bytes keys, got {type(keys).__name__}"
        )
    return [k.decode() if isinstance(k, bytes) else k for k in keys]


def read_pool(root: str | Path) -> list[Record]:
    """The unlabeled pre-training pool: an LMDB of JPEG bytes with ``keys.pkl`` (LUPerson's
    layout) or a folder of images (searched recursively). Records carry pid -1, camid 0."""
    root = Path(root)
    layout = f"{root}/data.mdb + {root}/keys.pkl (LMDB of JPEG bytes) or a folder of images"
    _require_dir(root, layout)
    keys_file = root / "keys.pkl"
    if keys_file.is_file():
        keys = read_keys(keys_file)
        if not (root / "data.mdb").is_file():
            raise DatasetLayoutError(
                f"{keys_file} found but no {root / 'data.mdb'}; expected layout: {layout}"
            )
        return [Record(f"{LMDB_PREFIX}{root}::{k}", -1, 0) for k in keys]
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise DatasetLayoutError(f"no images under {root}; expected layout: {layout}")
    return [Record(str(p), -1, 0) for p in files]


def check_dataset(fmt: str, root: str | Path, decode: bool = True) -> dict[str, Any]:
    """Counts of images, identities and cameras per split, and the problems found (names that
    do not parse; with ``decode``, images that cannot be decoded)."""
    from upreid.data.dataset import drop_bad_records

    problems: list[str] = []
    data = read_dataset(fmt, root, problems)
    report: dict[str, Any] = {"format": fmt, "root": str(root), **data.summary()}
    if decode:
        for split in (data.train, data.query, data.gallery):
            problems.extend(drop_bad_records(split)[1])
    q_pids = {r.pid for r in data.query}
    missing = q_pids - {r.pid for r in data.gallery}
    if missing:
        problems.append(f"{len(missing)} query identities have no gallery image")
    report["problems"] = problems
    return report
