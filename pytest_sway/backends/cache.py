"""A disk cache of the base model's answers, shared across runs (``--sway-cache-dir``).

The base model rarely changes between runs while the fine-tune under test
does, so the base's per-prompt answers (next-token logits, per-token
log-probabilities, greedy continuations) are kept on disk and a rerun with a
new adapter computes only the fine-tuned side.

Entries live under a *namespace*: a hash of everything that determines the
base's numbers (its weights, config and tokenizer as one content hash, dtype,
device kind, and the torch/transformers versions). Each entry is one ``.npz``
file named by the hash of its operation and token ids, holding the array, the
full key and a checksum of the array: a truncated or foreign file, or one
whose key or checksum does not match, is a miss and gets rewritten. Files are
written to a temporary name and renamed, so concurrent xdist workers never
read half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..files import write_atomic

SCHEMA = 1


class ResultCache:
    def __init__(self, root: str | os.PathLike, identity: dict):
        self.identity = {"schema": SCHEMA, **identity}
        namespace = _digest(json.dumps(self.identity, sort_keys=True))[:24]
        self.folder = Path(root) / namespace
        self.folder.mkdir(parents=True, exist_ok=True)
        about = self.folder / "identity.json"
        if not about.is_file():
            write_atomic(about, json.dumps(self.identity, indent=2, sort_keys=True))
        self.hits = 0
        self.misses = 0
        self.rejected = 0  # corrupt or stale entries found (and recomputed)

    def get(self, key: tuple) -> np.ndarray | None:
        text = _key_text(key)
        path = self._path(text)
        try:
            with np.load(path, allow_pickle=False) as entry:
                value, stored_key, checksum = entry["value"], str(entry["key"]), str(entry["sha256"])
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            self.rejected += 1
            return None
        if stored_key != text or checksum != _array_digest(value):
            self.rejected += 1
            return None
        self.hits += 1
        return value

    def put(self, key: tuple, value: np.ndarray) -> None:
        text = _key_text(key)
        value = np.ascontiguousarray(value)
        with tempfile.TemporaryFile() as buffer:
            np.savez(buffer, value=value, key=np.array(text), sha256=np.array(_array_digest(value)))
            buffer.seek(0)
            data = buffer.read()
        try:
            write_atomic(self._path(text), data, durable=False)
        except OSError:
            pass  # a full or read-only disk costs recomputation, not the run

    def _path(self, key_text: str) -> Path:
        digest = _digest(key_text)
        return self.folder / digest[:2] / f"{digest}.npz"

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*.npz"))


def _key_text(key: tuple) -> str:
    return json.dumps(key, separators=(",", ":"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _array_digest(value: np.ndarray) -> str:
    return hashlib.sha256(str(value.dtype).encode() + str(value.shape).encode() + value.tobytes()).hexdigest()
