"""Probe items that are not Python literals: conversations, and eval sets in JSONL files.

Pure: no pytest, no numpy. Probes' parameter checks use it.

* A :class:`Conversation` is a multi-turn chat prompt, a list of
  ``{"role", "content"}`` messages, rendered by the HF backend with the
  tokenizer's chat template and the generation prompt. It is a ``str`` (its
  JSON), so it hashes, labels reports and travels wherever a prompt does.
* :func:`load_jsonl` reads a probe's items from a JSONL file, one object per
  line, so a suite's eval sets live outside Python. A line that is not what
  the probe needs is a ``ValueError`` naming the file and the line.
  :func:`read_object` reads one such object, a line's or an item's given
  inline as the same dict: an item has one shape wherever it is given.
* :func:`label` is the one rule for slice and group labels; :func:`distinct`
  the one repeat check; :meth:`ItemList.locate` names an item where it was
  given (``file:line``) in every refusal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import is_whole, short_repr

#: The fields of one JSONL line for each kind of item, and what they become.
SHAPES = {
    "prompt": ("prompt",),
    "case": ("prompt", "completion"),
    "triple": ("prompt", "chosen", "rejected"),
    "pair": ("prompt", "response"),
    "question": ("question", "choices", "answer"),
    "text": ("text",),
}
#: Optional fields any line may carry: the item's group and slice (see ``pytest_sway.stats.slices``).
OPTIONAL = ("group", "slice")


class Conversation(str):
    """A multi-turn chat prompt. Its string value is the messages as JSON."""

    _messages: tuple[tuple[str, str], ...]

    def __new__(cls, messages):
        checked = tuple(_check_messages(messages))
        self = super().__new__(cls, json.dumps([{"role": r, "content": c} for r, c in checked], ensure_ascii=False))
        self._messages = checked
        return self

    @property
    def messages(self) -> list[dict[str, str]]:
        """The messages, as ``apply_chat_template`` takes them."""
        return [{"role": role, "content": content} for role, content in self._messages]

    def __getnewargs__(self):  # pickling rebuilds from the messages, not from the JSON text
        return (self.messages,)

    def __repr__(self) -> str:
        return f"Conversation({self.messages!r})"


def is_messages(value) -> bool:
    """Whether ``value`` looks like a conversation (a list of message dicts), right or wrong."""
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, dict) for m in value)


def encodable(value: str, where: str) -> str:
    """``value`` if it can be encoded (a lone surrogate cannot), or ValueError: the one check of
    every text an item holds."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{where} holds {short_repr(value[exc.start : exc.end], 40)} at position {exc.start}, a lone surrogate that no "
            "tokenizer can encode (text decoded with errors='surrogateescape'?); fix the text"
        ) from None
    return value


def _check_messages(messages):
    if not is_messages(messages):
        raise ValueError(
            f"a conversation must be a non-empty list of {{'role', 'content'}} dicts, got {short_repr(messages)}"
        )
    for i, message in enumerate(messages):
        if set(message) != {"role", "content"}:
            raise ValueError(f"message {i} must have exactly the keys 'role' and 'content', got {sorted(message)}")
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or not role:
            raise ValueError(f"message {i}: role must be a non-empty string, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be a string, got {short_repr(content)}")
        yield encodable(role, f"message {i}: role"), encodable(content, f"message {i}: content")


def label(value, kind: str, where: str) -> str:
    """A slice or group label in its one form, text; ``kind`` is "slice" or "group", ``where``
    names the label in a refusal (``'"slice"'``, ``"slice name"``, ``"groups: label 3"``).

    The one rule for every path (a file's ``"slice"``/``"group"`` fields, a mapping's slice names,
    ``groups=``): an integer (not a bool) becomes its decimal text, so ``1`` and ``"1"`` are one
    label for the intervals, the Bonferroni count and the reports alike; a string is kept as
    written. Refused: any other type, a blank or whitespace-only string, a string with leading or
    trailing whitespace (``"billing "`` beside ``"billing"`` would be a second slice that looks
    like the first), and a lone surrogate (no report could be written with it).
    """
    if is_whole(value):
        return str(int(value))
    if not isinstance(value, str):
        raise ValueError(f"{where} is {short_repr(value, 40)}; a {kind} label is a string or an integer")
    if not value.strip():
        raise ValueError(f"{where} is {value!r}; a {kind} label must not be blank")
    if value != value.strip():
        raise ValueError(
            f"{where} {short_repr(value, 40)} has leading or trailing whitespace; write {short_repr(value.strip(), 40)}"
        )
    return str(encodable(value, where))


def labels(values, kind: str) -> tuple:
    """Each of ``values`` as :func:`label` makes it (None stays None: no label)."""
    return tuple(None if v is None else label(v, kind, f"{kind} label {i}") for i, v in enumerate(values))


class ItemList(tuple):
    """Items with a layout: a tuple, plus where they came from (``source``, the items file as
    given; ``file`` and ``lines``, the file as read and each item's line) and their optional group
    and slice labels (``None`` where an item has none), each in the one form :func:`label` gives."""

    source: str | None = None
    file: str | None = None
    lines: tuple = ()
    groups: tuple = ()
    slices: tuple = ()

    def __new__(cls, items, *, source=None, file=None, lines=(), groups=(), slices=()):
        self = super().__new__(cls, items)
        self.source, self.file, self.lines = source, file, tuple(lines)
        self.groups, self.slices = labels(groups, "group"), labels(slices, "slice")
        return self

    def replace(self, items=None, **layout) -> ItemList:
        """A copy with other items (the same count) or another part of the layout."""
        now = {"source": self.source, "file": self.file, "lines": self.lines, "groups": self.groups}
        return ItemList(self if items is None else items, **{**now, "slices": self.slices, **layout})

    @property
    def slice_names(self) -> tuple[str, ...]:
        """The slices' names, in order of first appearance: what is judged, counted and shown."""
        return tuple(dict.fromkeys(s for s in self.slices if s is not None))

    def place(self, i: int) -> str:
        """Where item ``i`` was given: ``file:line`` for a file, ``slice 'name' item k`` in a dict of
        slices, else ``item i``."""
        if self.file is not None and i < len(self.lines):
            return f"{self.file}:{self.lines[i]}"
        if i < len(self.slices) and self.slices[i] is not None:
            name = self.slices[i]
            return f"slice {name!r} item {sum(s == name for s in self.slices[:i])}"
        return f"item {i}"

    def locate(self, message: str) -> str:
        """A refusal's ``item N`` (0-based positions, as the checks name items) made
        :meth:`place`; a refusal about a file that names no item names the file."""
        named = False

        def place(found) -> str:
            nonlocal named
            i = int(found.group(1))
            if i >= len(self):
                return found.group(0)
            named = True
            return self.place(i)

        out = _ITEM.sub(place, message)
        return out if named or self.file is None else f"{self.file}: {out}"

    def __reduce__(self):
        return (_rebuild_item_list, (tuple(self), self.source, self.file, self.lines, self.groups, self.slices))


_ITEM = re.compile(r"\bitem (\d+)\b")


def _rebuild_item_list(items, source, file, lines, groups, slices):
    return ItemList(items, source=source, file=file, lines=lines, groups=groups, slices=slices)


def item_key(shape: str | None, item):
    """What makes two items the same measurement: the item itself (lists compared as tuples); for
    a question, its text and its set of choices (the same question with its choices in another
    order, or with another answer, scores the same choices again)."""
    if shape == "question" and isinstance(item, tuple) and len(item) == 3 and isinstance(item[1], (tuple, list)):
        return (_frozen(item[0]), frozenset(_frozen(c) for c in item[1]))
    return _frozen(item)


def _frozen(value):
    if isinstance(value, (list, tuple)) and not isinstance(value, str):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((repr(k), _frozen(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def distinct(items, shape: str | None = None) -> None:
    """The one repeat check every probe's items pass (built-in probes and yours alike), or
    ValueError naming the repeats by position ("item 5 repeats item 1").

    A repeated item is the same measurement counted twice: the interval would narrow as if it were
    new evidence (6 prompts repeated 10 times is not n=60).
    """
    first: dict = {}
    repeats = []
    for i, item in enumerate(items):
        key = item_key(shape, item)
        if key in first:
            repeats.append((i, first[key]))
        else:
            first[key] = i
    if repeats:
        shown = "; ".join(f"item {i} repeats item {j} ({short_repr(items[i], 40)})" for i, j in repeats[:3])
        more = f"; and {len(repeats) - 3} more" if len(repeats) > 3 else ""
        same = " (a question with the same choices, in any order, is the same question)" if shape == "question" else ""
        raise ValueError(
            f"{len(repeats)} repeated item(s): {shown}{more}{same}. Each item must appear once: a repeat would count "
            "as independent evidence and narrow the interval; remove the repeats (e.g. list(dict.fromkeys(items)))"
        )


def resolve(path: str, base_dir=None) -> Path:
    """``path`` relative to ``base_dir`` (the test file's folder), unless absolute."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def load_jsonl(path: str, shape: str, *, base_dir=None) -> tuple[list, list[int], list, list]:
    """``(items, line numbers, groups, slices)`` from a JSONL file of ``shape`` items.

    A line is what ends in ``\n`` (or ``\r\n``), as JSON Lines defines it: the other characters
    Python's ``str.splitlines`` splits on (U+2028, U+2029, U+0085, form feed, ...) are characters
    JSON allows inside a string, and never end a line. Lines of JSON whitespace only are skipped.
    Every other line must be a JSON object with exactly the shape's fields, plus optionally
    ``group`` and ``slice``.
    """
    file = resolve(path, base_dir)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(
            f"no such items file {str(file)!r}: a string names a JSONL file of items, relative to the test file; "
            "to give items inline, pass a list"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read items file {str(file)!r}: {exc}") from None
    items, lines, groups, slices = [], [], [], []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip(" \t\r"):  # JSON's whitespace, not Python's
            continue
        where = f"{file}:{number}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc})") from None
        try:
            item, group, slice_ = read_object(obj, shape, f"each line of a {shape} file")
        except ValueError as exc:
            raise ValueError(f"{where}{'' if str(exc).startswith('is ') else ':'} {exc}") from None
        items.append(item)
        lines.append(number)
        groups.append(group)
        slices.append(slice_)
    if not items:
        raise ValueError(f"items file {str(file)!r} holds no items")
    return items, lines, groups, slices


def read_object(obj, shape: str, what: str) -> tuple:
    """``(item, group, slice)`` from one object of ``shape`` (``SHAPES``): a line of an items
    file, or an item given inline as the same dict (``what`` says which, in a refusal). The one
    reading of an item's fields, so an item has one shape wherever it is given."""
    fields = SHAPES[shape]
    want = ", ".join(f'"{f}"' for f in fields)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object with {want}, got {short_repr(obj)}")
    if shape == "prompt" and set(obj) == {"role", "content"}:
        raise ValueError(
            f"is a message ({short_repr(obj, 40)}), not a prompt: a conversation is a list of messages, and a "
            "prompt may be one; wrap the conversation in a list (prompts=[[message, ...], ...]), or give "
            '{"prompt": [message, ...]}'
        )
    missing = [f for f in fields if f not in obj]
    unknown = sorted(map(str, set(obj) - set(fields) - set(OPTIONAL)))
    if missing or unknown:
        problem = (f"missing {', '.join(map(repr, missing))}" if missing else "") + (
            ("; " if missing else "") + f"unknown field(s) {', '.join(map(repr, unknown))}" if unknown else ""
        )
        raise ValueError(
            f"{problem}; {what} is an object with {want} (and optionally {', '.join(map(repr, OPTIONAL))})"
        )
    item = tuple(_field(name, obj[name]) for name in fields)
    group, slice_ = (_optional(name, obj.get(name)) for name in OPTIONAL)
    return (item[0] if len(item) == 1 else item), group, slice_


def _field(name: str, value):
    if name in ("prompt", "question") and is_messages(value):
        return Conversation(value)
    if name == "choices":
        if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) and c for c in value):
            raise ValueError(f'"choices" must be a list of non-empty strings, got {short_repr(value)}')
        return tuple(value)
    if name == "answer":
        if not is_whole(value):
            raise ValueError(f'"answer" must be the index of the right choice (an integer), got {value!r}')
        return value
    if not isinstance(value, str) or not value:
        kind = " or a list of messages" if name in ("prompt", "question") else ""
        raise ValueError(f'"{name}" must be a non-empty string{kind}, got {short_repr(value)}')
    return value


def _optional(name: str, value):
    return None if value is None else label(value, name, f'"{name}"')
