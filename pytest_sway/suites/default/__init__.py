"""The default retention battery's items, written for pytest-sway and shipped with it.

Four sets, each a JSONL file under ``data/`` with a ``slice`` (its domain) per item, read with
the same reader as a user's eval sets (``pytest_sway.items.load_jsonl``):

* ``prompts()``: general prompts for next-token and greedy-continuation checks, 8 domains;
* ``passages()``: general-text passages of 105-149 tokens (SmolLM2's tokenizer), 8 registers;
* ``questions()``: four-choice questions ``(question, choices, answer index)``, 6 domains, each
  domain's answer positions balanced; every key reviewed a second time by someone who did not
  write it (the logs under ``review/``);
* ``chats()``: short chat exchanges (a :class:`~pytest_sway.items.Conversation` each, ending with
  a user turn), 5 kinds.

Each function takes slice names to keep (none: every item), e.g.
``questions("arithmetic-units")``; ``slices(kind)`` lists a set's names.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from ...items import load_jsonl

DATA = Path(__file__).parent / "data"
#: Each set's files and item shape.
SETS = {
    "prompts": (("prompts.jsonl",), "prompt"),
    "passages": (("passages.jsonl",), "text"),
    "questions": (("questions-a.jsonl", "questions-b.jsonl", "questions-c.jsonl"), "question"),
    "chats": (("chats.jsonl",), "prompt"),
}


@cache
def _read(kind: str) -> tuple[tuple, tuple[str, ...]]:
    """``(items, slice per item)`` of set ``kind``, read once per process."""
    files, shape = SETS[kind]
    items: list = []
    names: list = []
    for name in files:
        found, _, _, slices = load_jsonl(str(DATA / name), shape)
        items.extend(found)
        names.extend(slices)
    return tuple(items), tuple(names)


def slices(kind: str) -> tuple[str, ...]:
    """The slice names of set ``kind`` ("prompts", "passages", "questions", "chats"), in file order."""
    if kind not in SETS:
        raise ValueError(f"unknown item set {kind!r}; the default battery has {', '.join(SETS)}")
    return tuple(dict.fromkeys(_read(kind)[1]))


def _pick(kind: str, wanted: tuple[str, ...]) -> list:
    items, names = _read(kind)
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ValueError(
            f"the default battery's {kind} have no slice {', '.join(map(repr, unknown))}; "
            f"its slices are {', '.join(slices(kind))}"
        )
    return [item for item, name in zip(items, names) if not wanted or name in wanted]


def prompts(*slices: str) -> list:
    """General prompts (str), of the given slices or all."""
    return _pick("prompts", slices)


def passages(*slices: str) -> list:
    """General-text passages (str), of the given registers or all."""
    return _pick("passages", slices)


def questions(*slices: str) -> list:
    """Four-choice questions ``(question, choices, answer index)``, of the given domains or all."""
    return _pick("questions", slices)


def chats(*slices: str) -> list:
    """Chat exchanges (``Conversation``), of the given kinds or all."""
    return _pick("chats", slices)
