"""Image reading that survives bad files: a corrupt or empty image is skipped and counted;
and a bounded in-memory cache of decoded images for the runs that read the same images every
epoch and every evaluation."""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

LMDB_PREFIX = "lmdb:"
_envs: dict[str, object] = {}
_lock = threading.Lock()


class BadImage(Exception):
    """An image that cannot be decoded (truncated, empty, not an image)."""


def split_lmdb(path: str) -> tuple[str, str] | None:
    """``(db folder, key)`` of an ``lmdb:<db folder>::<key>`` path; None for a file path."""
    if not path.startswith(LMDB_PREFIX):
        return None
    db, _, key = path[len(LMDB_PREFIX) :].partition("::")
    return db, key


def _lmdb_bytes(path: str) -> bytes:
    import lmdb  # imported lazily: only LMDB pools need it

    db, key = split_lmdb(path) or ("", "")
    with _lock:
        env = _envs.get(db)
        if env is None:
            env = lmdb.open(db, readonly=True, lock=False, readahead=False, meminit=False)
            _envs[db] = env
    with env.begin(write=False) as txn:  # type: ignore[attr-defined]
        data = txn.get(key.encode())
    if data is None:
        raise BadImage(f"{path}: key not found in LMDB")
    return bytes(data)


def read_bytes(path: str) -> bytes:
    if path.startswith(LMDB_PREFIX):
        return _lmdb_bytes(path)
    return Path(path).read_bytes()


def read_image(path: str) -> Image.Image:
    """Decode ``path`` fully into an RGB image, or raise :class:`BadImage`."""
    try:
        data = read_bytes(path)
        if not data:
            raise BadImage(f"{path}: empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img_file = Image.open(io.BytesIO(data))
        with img_file as img:
            img.load()  # force the full decode so truncation shows here
            return img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # huge: skip
        raise BadImage(f"{path}: too large to decode safely ({err})") from err
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise BadImage(f"{path}: {err}") from err


class ImageCache:
    """Decoded images of one run, kept in memory up to ``max_mb`` megabytes.

    A fine-tuning or SpCL run decodes its training images every epoch and its query and gallery
    images at every evaluation; at 64x32 the decode is most of the data loading. Images are kept
    in the order they are first read until the budget is spent, then read from disk as before
    (no eviction: for epochs that sweep the same set, keeping the first ones is as good as any
    policy). ``read`` returns a copy, so callers may change it. ``max_mb`` 0 turns it off.
    With loader worker processes each worker fills its own copy for one epoch: use it with
    ``workers: 0``.
    """

    def __init__(self, max_mb: float) -> None:
        if max_mb < 0:
            raise ValueError(f"ImageCache: max_mb must be >= 0, got {max_mb}")
        self.budget = int(max_mb * 2**20)
        self.used = 0
        self.hits = 0
        self.misses = 0
        self._images: dict[str, Image.Image] = {}

    def __len__(self) -> int:
        return len(self._images)

    def read(self, path: str) -> Image.Image:
        """:func:`read_image` of ``path``, from memory when it was read before."""
        img = self._images.get(path)
        if img is not None:
            self.hits += 1
            return img.copy()
        self.misses += 1
        img = read_image(path)
        size = img.width * img.height * len(img.getbands())
        if self.used + size <= self.budget:
            self._images[path] = img
            self.used += size
            return img.copy()
        return img


def reader(cache: ImageCache | None) -> Callable[[str], Image.Image]:
    """``cache.read``, or :func:`read_image` when there is no cache."""
    return read_image if cache is None else cache.read
