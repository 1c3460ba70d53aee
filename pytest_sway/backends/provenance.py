"""Where numbers came from: content hashes of model folders and package versions.

Hashing a large checkpoint takes seconds, so file hashes are remembered in the
user cache, keyed by path, size and modification time: a second run with the
same files costs a few stat calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from ..files import cache_root, file_sha256, write_atomic

_PACKAGES = ("pytest-sway", "torch", "transformers", "peft", "numpy", "scipy", "pytest")


def folder_sha256(folder: str | os.PathLike) -> str:
    """sha256 over the names and contents of every (non-hidden) file under ``folder``."""
    root = Path(folder)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    memo_path = cache_root() / "file-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    total = hashlib.sha256()
    changed = False
    for path in files:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        digest = memo.get(key)
        if digest is None:
            digest = file_sha256(path).hex()
            memo[key] = digest
            changed = True
        total.update(f"{path.relative_to(root).as_posix()}\0{digest}\n".encode())
    if changed:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(memo_path, json.dumps(memo))
        except OSError:
            pass  # a read-only cache only costs time
    return total.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def platform_summary() -> str:
    return f"{platform.system()} {platform.machine()}, Python {sys.version.split()[0]}"
