"""What a probe is: its parameters, how they are checked, and how it measures.

A probe is data (a :class:`Probe`), not a class hierarchy: a name, a tuple of
:class:`Param`, and a ``measure(backend, params, bootstrap)`` function that
returns one value per item. Third parties build probes the same way and add
them to a :class:`ProbeRegistry` (in pytest, through the
``pytest_sway_register_probes`` hook).

Nothing here imports numpy at module level: building the registry happens
when pytest starts, and must stay cheap for runs without sway tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, ItemsView, KeysView, Mapping, ValuesView
from collections.abc import Set as AbcSet
from dataclasses import dataclass, field
from typing import Any

from ..backends.topk import DivergenceBounds
from ..errors import ProbeParamError, is_number, is_whole, short_repr
from ..items import encodable

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One probe parameter: ``check(value)`` returns the normalised value or
    raises ``ValueError`` with a message that does not repeat the name."""

    name: str
    check: Callable[[Any], Any]
    default: Any = REQUIRED
    doc: str = ""
    #: The parameter holds the probe's items, which may also come from a JSONL
    #: file: a string value is a path, read as items of this shape (a key of
    #: ``pytest_sway.items.SHAPES``: "prompt", "case", "triple", "pair", "question", "text").
    items: str | None = None

    def __post_init__(self):
        shape = getattr(self.check, "items_shape", None)  # text_list, prompt_list, ...
        if self.items is None and shape:
            object.__setattr__(self, "items", shape)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Measurement:
    """What ``measure`` returns: one value per item, in the order given."""

    values: Any  # 1-d numpy array
    items: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)
    #: The range a value can take, e.g. (0, ln 2) for Jensen-Shannon, (-inf, inf) for a log-ratio:
    #: the interval lies inside it, and values piled at one level of a finite support get an
    #: interval that stays honest for them (see ``pytest_sway.stats.shapes``). None: not declared
    #: (the bootstrap, as for unbounded values; a result with few distinct values then carries a
    #: note saying how to declare it).
    support: tuple[float, float] | None = None
    #: Values are 0/1 outcomes: the same as ``support=(0, 1)``, and values other than 0 and 1 are
    #: an error. Their interval is Clopper-Pearson's.
    binary: bool = False
    #: A closed-form interval instead of the bootstrap, for values a bootstrap
    #: cannot treat honestly (few distinct values, many ties):
    #: ``interval(values, confidence=c) -> Interval``. ``interval_method``
    #: names it in reports (e.g. ``"tango"``).
    interval: Callable | None = None
    interval_method: str = ""
    #: Per item, an interval that contains the exact value instead of the value itself (an engine that
    #: returned only the top-k log-probabilities, ``pytest_sway.backends.topk``): ``values`` then holds the
    #: lower ends (``bounds.low``), ``bounds.high`` the upper ends (``inf`` where unbounded). The result gets
    #: one interval for the mean of the lower ends and one for the upper ends; an ``above=`` gate judges
    #: the first, a ``below=`` gate the second. None: the values are exact.
    bounds: DivergenceBounds | None = None


@dataclass(frozen=True)
class Probe:
    kind: str
    doc: str
    params: tuple[Param, ...]
    measure: Callable  # (backend, params: dict, bootstrap: Bootstrap) -> Measurement
    #: Main option shown next to the kind in the summary, e.g. "divergence".
    label_param: str | None = None
    #: Checks that involve several parameters: ``check(params)`` raises ValueError.
    check: Callable[[dict], None] | None = None
    #: Whether its interval can resample whole groups of items (``groups=``): a bootstrap can;
    #: a closed-form interval that assumes independent items (Tango) cannot.
    clusters: bool = True

    def __post_init__(self):
        from ..stats.slices import GROUPS

        if any(p.name == GROUPS for p in self.params):
            raise ValueError(
                f"probe {self.kind!r}: {GROUPS!r} is the parameter every probe takes for its items' groups; "
                "name your parameter otherwise"
            )

    def validate(self, params: dict[str, Any], *, base_dir=None) -> dict[str, Any]:
        """Check ``params`` and fill in defaults; raise ``ProbeParamError``.

        An items parameter given as a string is a JSONL file, relative to
        ``base_dir`` (the test file's folder; else the current folder); given
        as a mapping, its values are named slices of the items. ``groups``
        labels each item's group (see :mod:`pytest_sway.stats.slices`)."""
        from ..stats.slices import GROUPS, apply_layout, check_items, locate

        params = dict(params)
        groups = params.pop(GROUPS, None)
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ProbeParamError(
                f"{self.kind}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                f"{self.kind} takes {self.signature()}"
            )
        out = {}
        for p in self.params:
            if p.name not in params:
                if p.required:
                    raise ProbeParamError(
                        f"{self.kind}: missing required parameter {p.name!r}; {self.kind} takes {self.signature()}"
                    )
                out[p.name] = p.default
                continue
            try:
                value = params[p.name]
                if p.items is not None and value is not None:
                    out[p.name] = check_items(p, value, base_dir=base_dir)
                else:
                    out[p.name] = p.check(value)
            except ValueError as exc:
                raise ProbeParamError(f"{self.kind}: parameter {p.name!r}: {exc}") from None
        if self.check is not None:
            try:
                self.check(out)
            except ValueError as exc:
                raise ProbeParamError(f"{self.kind}: {locate(self, out, str(exc))}") from None
        try:
            return apply_layout(self, out, groups)
        except ValueError as exc:
            raise ProbeParamError(f"{self.kind}: {exc}") from None

    def label(self, params: dict[str, Any]) -> str:
        if self.label_param is None:
            return self.kind
        return f"{self.kind}({params[self.label_param]})"

    def signature(self) -> str:
        parts = [p.name if p.required else f"{p.name}={p.default!r}" for p in self.params]
        if any(p.items is not None for p in self.params):
            parts.append("groups=None")
        return f"{self.kind}({', '.join(parts)})"


# -- parameter checks: each returns a normalised value or raises ValueError ---


#: A confidence interval needs at least two items.
MIN_ITEMS = 2


def _items(value, what: str, minimum: int = MIN_ITEMS) -> tuple:
    """``value`` as a tuple of at least ``minimum`` items, or ValueError."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"expected a list of {what}, got a single string {short_repr(value, 40)}; wrap it in a list")
    if isinstance(value, (AbcSet, Mapping, KeysView, ValuesView, ItemsView)):
        # The order of a set depends on PYTHONHASHSEED: so would the verdict.
        raise ValueError(
            f"expected a list of {what}, got an unordered {type(value).__name__}; its order (and with it the "
            "bootstrap's resamples) would change from run to run: pass a list, e.g. sorted(...)"
        )
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"expected a list of {what}, got {type(value).__name__}") from None
    if len(items) < minimum:
        raise ValueError(
            f"got {len(items)} item(s); a confidence interval needs at least {MIN_ITEMS} (and a useful one about 8 or more)"
            if minimum == MIN_ITEMS
            else f"expected at least {minimum} {what}, got {len(items)}"
        )
    return items


def items_of(shape: str):
    """Marks a check as one that checks items of ``shape``: a :class:`Param` with this check and no
    ``items=`` holds items of that shape (read from files, sliced, grouped, refused when repeated),
    so a probe of yours built on ``text_list`` gets what the built-in probes get."""

    def mark(check):
        setattr(check, "items_shape", shape)  # noqa: B010 (a function's attribute; mypy cannot see it)
        return check

    return mark


def _text(value, where: str) -> str:
    """A non-empty string that can be encoded (a lone surrogate cannot), or ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"{where} is {type(value).__name__} {short_repr(value, 40)}, expected a string")
    if not value:
        raise ValueError(f"{where} is an empty string")
    return encodable(value, where)


@items_of("text")
def text_list(value) -> tuple[str, ...]:
    """A list of at least two non-empty strings (repeats are refused for every items parameter,
    by ``Probe.validate``)."""
    items = _items(value, "strings")
    for i, item in enumerate(items):
        _text(item, f"item {i}")
    return items


def tuple_list(*fields: str):
    """A list of at least two tuples of non-empty strings, e.g. ``(prompt, completion)``.
    A ``prompt`` field may also be a conversation (a list of messages; it needs chat=True)."""
    from ..items import SHAPES

    shape = "(" + ", ".join(fields) + ")"

    @items_of(next((name for name, names in SHAPES.items() if names == fields), ""))
    def check(value) -> tuple[tuple[str, ...], ...]:
        out = []
        for i, item in enumerate(_items(value, f"{shape} tuples")):
            if isinstance(item, str) or not hasattr(item, "__len__") or len(item) != len(fields):
                raise ValueError(f"item {i} is {short_repr(item, 40)}, expected a {shape} tuple")
            parts = []
            for name, part in zip(fields, item):
                if name == "prompt":
                    part = _prompt(part, i)
                else:
                    _text(part, f"item {i}: {name}")
                parts.append(part)
            out.append(tuple(parts))
        return tuple(out)

    return check


def _prompt(value, i: int) -> str:
    """A non-empty string, or a list of messages made a ``Conversation``."""
    from ..items import Conversation, is_messages

    if isinstance(value, (list, tuple)) and not isinstance(value, str) and (is_messages(value) or not value):
        try:
            return Conversation(value)
        except ValueError as exc:
            raise ValueError(f"item {i}: {exc}") from None
    if not isinstance(value, str):
        raise ValueError(
            f"item {i} is {type(value).__name__} {short_repr(value, 40)}, expected a string "
            "(or, with chat=True, a list of {'role', 'content'} messages)"
        )
    return _text(value, f"item {i}")


def is_prompt(value) -> bool:
    """A non-empty string (a ``Conversation`` is one)."""
    return isinstance(value, str) and bool(value)


@items_of("prompt")
def prompt_list(value) -> tuple[str, ...]:
    """A list of at least two prompts: non-empty strings, or conversations
    (lists of ``{"role", "content"}`` messages, for chat=True)."""
    return tuple(_prompt(item, i) for i, item in enumerate(_items(value, "prompts")))


def check_chat_prompts(name: str):
    """A probe check: conversations in parameter ``name`` need ``chat=True``."""

    def check(params) -> None:
        from ..items import Conversation

        if params.get("chat") or params.get(name) is None:
            return
        for i, item in enumerate(params[name]):
            prompt = item if isinstance(item, str) else item[0]
            if isinstance(prompt, Conversation):
                raise ValueError(
                    f"{name}: item {i} is a conversation (a list of messages); conversations are rendered with the "
                    "chat template, so they need chat=True"
                )

    return check


def choice(*options: str):
    def check(value) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(map(repr, options))}, got {value!r}")
        return value

    return check


def boolean(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected True or False, got {value!r}")
    return value


def integer(minimum: int):
    def check(value) -> int:
        if not is_whole(value):
            raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
        if value < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value}")
        return value

    return check


def optional(check):
    """``None`` or whatever ``check`` accepts."""

    def optional_check(value):
        return None if value is None else check(value)

    shape = getattr(check, "items_shape", None)
    return items_of(shape)(optional_check) if shape else optional_check


def number_list(*, min_len: int):
    """A list of at least ``min_len`` distinct finite numbers."""

    def check(value) -> tuple[float, ...]:
        items = _items(value, "numbers", min_len)
        for i, item in enumerate(items):
            if not is_number(item) or not math.isfinite(item):
                raise ValueError(f"item {i} is {item!r}, expected a finite number")
        if len(set(items)) != len(items):
            raise ValueError(f"values must be distinct, got {list(items)}")
        return tuple(float(x) for x in items)

    return check


# -- parameters several probes share ----------------------------------------------

CHAT = Param(
    "chat",
    boolean,
    False,
    doc="format each prompt with the tokenizer's chat template "
    "(a string as a user turn; a list of messages as the conversation)",
)


def divergence_param():
    from ..backends.divergence import DIVERGENCES

    return Param("divergence", choice(*DIVERGENCES), "js", doc="js (default), kl, reverse_kl or tv")
