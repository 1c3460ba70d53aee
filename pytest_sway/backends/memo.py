"""The session memo: finished answers per (question, variant, item), for any engine (pure).

A prompt asked by ten tests costs one computation per variant: a backend looks
its answer up here first. Items are token sequences (a tuple of ids) or
``(ids, start)`` pairs; they are kept packed, once for every question and
variant that answered them.
"""

from __future__ import annotations

from array import array
from typing import Any


class Memo:
    """Answers per (question, variant, item) — numbers, per-token arrays, token ids — and
    ``logits``, the engine's bounded store of the base's vocabulary rows (cleared with it).

    An item's token ids are kept packed, 4 bytes a token, and once for every question
    and variant that answered it: as tuples of Python ints, a 12-token prompt's keys
    cost about 500 bytes per answer, and each probe's own encoding of the same
    prompts stayed alive in the keys it added."""

    def __init__(self, logits: Any):
        self.answers: dict[tuple, dict] = {}  # (question, variant) -> {packed item: answer}
        self._items: dict = {}  # each packed item once
        self.logits = logits

    def __contains__(self, key) -> bool:
        op, variant, item = key
        return packed(item) in self.answers.get((op, variant), ())

    def __getitem__(self, key):
        op, variant, item = key
        return self.answers[(op, variant)][packed(item)]

    def __setitem__(self, key, value) -> None:
        op, variant, item = key
        key_item = packed(item)
        self.answers.setdefault((op, variant), {})[self._items.setdefault(key_item, key_item)] = value

    def get(self, key, default=None):
        op, variant, item = key
        return self.answers.get((op, variant), {}).get(packed(item), default)

    def clear(self) -> None:
        self.answers.clear()
        self._items.clear()
        self.logits.clear()


def packed(item):
    """A tuple of ints as their int32 bytes; a tuple holding one (``(ids, start)``) with it packed."""
    if not isinstance(item, tuple):
        return item
    if all(type(x) is int for x in item):
        try:
            return array("i", item).tobytes()
        except OverflowError:  # not token ids: kept as they are
            return item
    return tuple(packed(x) for x in item)


def item_length(item) -> int:
    """Tokens in a memo item: a token sequence, or a (sequence, number) pair."""
    return len(item[0]) if isinstance(item[0], tuple) else len(item)
