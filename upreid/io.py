"""Atomic writes: a file is either its old content or its complete new content, never half."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import torch


def _atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    If anything fails (disk full, kill), ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (see :func:`_atomic_write`)."""
    _atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


class _ErrorKeepingWriter:
    """A file's ``write`` that remembers the OS error it raised: ``torch.save`` reports a failed
    write (e.g. a full disk) as a bare ``RuntimeError``."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.fh.flush()


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save`` atomically, streamed to the temp file (no in-memory copy of a large
    checkpoint); a failed write raises its ``OSError``."""

    def write(fh: BinaryIO) -> None:
        writer = _ErrorKeepingWriter(fh)
        try:
            torch.save(obj, cast(IO[bytes], writer))  # it only writes and flushes
        except RuntimeError as err:
            if writer.error is not None:
                raise writer.error from err
            raise

    _atomic_write(path, write)


def git_commit(cwd: str | Path | None = None) -> str:
    """The current commit (``-dirty`` appended if the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
