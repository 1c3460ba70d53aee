"""Files: written so that a reader sees the old file or the new one, never a partial one; hashed by
content; and where pytest-sway keeps its caches."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO


def write_atomic(
    path: str | os.PathLike, data: str | bytes | Iterable[str], *, durable: bool = True, mode: int | None = None
) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    ``data`` may be text in pieces (an iterable of str), written as they come: a
    large report never exists whole in memory.

    ``durable`` also flushes the file to disk before the rename (reports); a
    cache entry skips that, since a damaged entry is detected and recomputed.
    ``mode`` is the new file's permission bits (default: what a new file gets
    under the umask). If anything fails, ``path`` keeps its previous content
    and no temporary file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write_pieces(fh, data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # as an ordinary new file would be
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_pieces(fh: BinaryIO, data: str | bytes | Iterable[str]) -> None:
    """Write text (utf-8), bytes, or text in pieces to a binary file."""
    if isinstance(data, bytes):
        fh.write(data)
    elif isinstance(data, str):
        fh.write(data.encode("utf-8"))
    else:
        for piece in data:
            fh.write(piece.encode("utf-8"))


def file_sha256(path: str | os.PathLike) -> bytes:
    """The sha256 digest of a file's content, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.digest()


def cache_root() -> Path:
    """``$PYTEST_SWAY_CACHE``, else ``$XDG_CACHE_HOME/pytest-sway``, else ``~/.cache/pytest-sway``."""
    explicit = os.environ.get("PYTEST_SWAY_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pytest-sway"
