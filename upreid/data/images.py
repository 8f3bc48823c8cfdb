"""Image reading that survives bad files: a corrupt or empty image is skipped and counted."""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

LMDB_PREFIX = "lmdb:"
_envs: dict[str, object] = {}
_lock = threading.Lock()


class BadImage(Exception):
    """An image that cannot be decoded (truncated, empty, not an image)."""


def _lmdb_bytes(path: str) -> bytes:
    import lmdb  # imported lazily: only LMDB pools need it

    db, _, key = path[len(LMDB_PREFIX):].partition("::")
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
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # force the full decode so truncation shows here
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise BadImage(f"{path}: {err}") from err
