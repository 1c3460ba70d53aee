"""Slices and groups of a probe's items (pure: no pytest; numpy only where intervals are computed).

* **Slices** are named subsets of the items: ``prompts={"billing": [...],
  "refunds": [...]}``, or a ``"slice"`` field on the lines of a JSONL file.
  A result has an estimate and interval per slice as well as overall, and a
  gate judges every one of them: a slice that fails fails the test, by name.
* **Groups** are families of items that are not independent evidence
  (paraphrases of one question, turns of one conversation): ``groups=[...]``,
  one label per item, or a ``"group"`` field in a JSONL file. The bootstrap
  then resamples whole groups (``bootstrap.check_groups``).

Both ride on the validated items as an :class:`~pytest_sway.items.ItemList`
(``.slices``, ``.groups``: one label per item, None where an item has none),
so a marker's validated parameters validate again to the same layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import short_repr
from ..items import ItemList, distinct, label, load_jsonl, read_object, resolve
from .gate import Gate, IntervalEstimate, Verdict
from .methods import groups_note, interval_how
from .outcome import Outcome

#: The parameter every probe with items takes besides its own: one group label per item.
GROUPS = "groups"


# -- validation (at collection for markers) -------------------------------------------


def check_items(param, value, *, base_dir) -> Any:
    """An items parameter's value checked by ``param.check`` and the repeat check: a JSONL path, a
    mapping of slice names to lists of items, items already checked (an ``ItemList``), or a list.
    A refusal names the item where it was given: ``file:line``, ``slice 'name' item k``, ``item i``."""
    if isinstance(value, str):
        raw = _from_file(param, value, base_dir)
    elif isinstance(value, Mapping):
        raw = _sliced(value)
    elif isinstance(value, ItemList):
        raw = value
    elif isinstance(value, (list, tuple)) and any(isinstance(item, dict) for item in value):
        raw = ItemList(value)
    else:
        return checked_items(param, value)
    try:
        read = _read_dicts(raw, str(param.items))
        return read.replace(checked_items(param, tuple(read)))
    except ValueError as exc:
        raise ValueError(raw.locate(str(exc))) from None


def _read_dicts(items: ItemList, shape: str) -> ItemList:
    """Items given inline as the objects an items file holds, read as a file's lines are (the same
    fields and checks, and the same optional "group" and "slice"): one shape for an item."""
    if not any(isinstance(item, dict) for item in items):
        return items
    out, groups, slices = [], list(items.groups or [None] * len(items)), list(items.slices or [None] * len(items))
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            out.append(item)
            continue
        try:
            item, group, slice_ = read_object(item, shape, f"an item given as a dict of {shape} fields")
        except ValueError as exc:
            raise ValueError(f"item {i}{'' if str(exc).startswith('is ') else ':'} {exc}") from None
        if slice_ is not None and slices[i] is not None:
            raise ValueError(
                f'item {i}: a dict of slices and its items\' "slice" fields both give slices; give them once'
            )
        out.append(item)
        groups[i] = group if group is not None else groups[i]
        slices[i] = slice_ if slice_ is not None else slices[i]
    return items.replace(out, groups=groups, slices=slices)


def checked_items(param, items):
    """``param.check(items)``, then the one repeat check that every probe's items pass (a probe of
    yours included): a repeat would count twice as evidence and narrow the interval."""
    checked = param.check(items)
    try:
        if iter(checked) is checked:  # an iterator (a generator): read once, kept as a tuple
            checked = tuple(checked)
    except TypeError:
        raise ValueError(
            f"the check of an items parameter returned {short_repr(checked, 40)}, not a list of items"
        ) from None
    distinct(checked, param.items)
    return checked


def locate(probe, params: dict, message: str) -> str:
    """A refusal from a probe's own check (which sees validated items) naming items where they were
    given, as :func:`check_items` names them."""
    param = items_param(probe, params)
    items = params[param.name] if param is not None else None
    return items.locate(message) if isinstance(items, ItemList) else message


def _from_file(param, path: str, base_dir) -> ItemList:
    """The items of a JSONL file, unchecked, with their lines and labels."""
    items, lines, groups, slices = load_jsonl(path, str(param.items), base_dir=base_dir)
    file = str(resolve(path, base_dir))
    return ItemList(items, source=str(path), file=file, lines=lines, groups=groups, slices=slices)


def _sliced(mapping: Mapping) -> ItemList:
    """``{"billing": [...], "refunds": [...]}`` as one list of items, in the mapping's order,
    each labelled with its slice."""
    names, flat = [], []
    given: dict[str, Any] = {}
    for key, items in mapping.items():
        name = label(key, "slice", "slice name")
        if name in given:
            raise ValueError(
                f"slice names {given[name]!r} and {key!r} are the same label {name!r} (a label is text: an integer "
                "is read as its digits); give each slice one name"
            )
        given[name] = key
        if isinstance(items, (str, bytes, Mapping)) or not hasattr(items, "__iter__"):
            raise ValueError(
                f"slice {name!r} is {short_repr(items, 40)}; each slice is a list of items (a JSONL file of items "
                'takes a "slice" field per line instead)'
            )
        items = list(items)
        if len(items) < 2:
            raise ValueError(
                f"slice {name!r} has {len(items)} item(s); a slice's interval needs at least 2 (and a useful one "
                "about 8 or more): add items, or merge it into another slice"
            )
        names.extend([name] * len(items))
        flat.extend(items)
    if not names:
        raise ValueError("an empty mapping of slices; give {'slice name': [items], ...}")
    return ItemList(flat, slices=names)


def items_param(probe, params: dict):
    """The probe's items parameter that holds its items (the given one where it has several), or None."""
    given = [p for p in probe.params if p.items is not None and params.get(p.name) is not None]
    return given[0] if given else None


def apply_layout(probe, params: dict, groups) -> dict:
    """Attach ``groups=`` to the items and check the layout: slices of at least two items, enough
    groups overall and in every slice, a probe whose interval can resample groups."""
    param = items_param(probe, params)
    if groups is not None:
        if param is None:
            raise ValueError(f"groups= labels items, and {probe.kind} was given none")
        items = params[param.name]
        if isinstance(items, ItemList) and any(g is not None for g in items.groups):
            where = f"the items file {items.source!r}" if items.source else "the items"
            raise ValueError(
                f'groups= and {where} both give groups; give them once (a JSONL file: a "group" field per line)'
            )
        if isinstance(groups, (str, bytes, Mapping)) or not hasattr(groups, "__len__"):
            raise ValueError(f"groups: expected a list of group labels, one per item, got {short_repr(groups, 40)}")
        if len(groups) != len(items):
            order = " (slices concatenated in the mapping's order)" if _slices_of(items) else ""
            raise ValueError(
                f"groups: {len(groups)} label(s) for {len(items)} items; give one group label per item, in the "
                f"items' order{order}"
            )
        groups = tuple(None if g is None else label(g, "group", f"groups: label {i}") for i, g in enumerate(groups))
        params = dict(params)
        laid = items if isinstance(items, ItemList) else ItemList(items)
        params[param.name] = laid.replace(groups=groups, slices=_slices_of(items))
    layout = layout_of(probe, params)
    for name, indices in layout.slice_indices().items():
        if len(indices) < 2:
            raise ValueError(
                f"slice {name!r} has {len(indices)} item(s); a slice's interval needs at least 2 (and a useful one "
                "about 8 or more): add items, or merge it into another slice"
            )
    if layout.groups is not None:
        if not probe.clusters:
            raise ValueError(
                f"{probe.kind}'s interval is a closed form that assumes independent items, and has no cluster "
                "version: leave groups out (its items are then counted as independent), or measure fewer items per "
                "family"
            )
        _check_groups(layout.groups)
        for name, indices in layout.slice_indices().items():
            _check_groups([layout.groups[i] for i in indices], where=f"slice {name!r}: ")
    return params


def _check_groups(labels, where: str = "") -> None:
    from .bootstrap import check_groups  # numpy: only when groups are given

    try:
        check_groups(labels, len(labels))
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from None


def _slices_of(items) -> tuple:
    return items.slices if isinstance(items, ItemList) and any(s is not None for s in items.slices) else ()


# -- the layout of validated items -----------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """One group label and one slice name per item (None: its own group; in no slice);
    ``groups``/``slices`` are None when no item has one."""

    groups: tuple | None = None
    slices: tuple | None = None

    def slice_indices(self) -> dict[str, list[int]]:
        """Each slice's item positions, slices in order of first appearance."""
        out: dict[str, list[int]] = {}
        for i, name in enumerate(self.slices or ()):
            if name is not None:
                out.setdefault(name, []).append(i)
        return out


def layout_of(probe, params: dict) -> Layout:
    param = items_param(probe, params)
    items = params[param.name] if param is not None else None
    if not isinstance(items, ItemList):
        return Layout()
    groups = items.groups if any(g is not None for g in items.groups) else None
    slices = items.slices if _slices_of(items) else None
    return Layout(groups=groups, slices=slices)


def slice_count(params: dict) -> int:
    """How many slices a request's validated items have (0: not sliced): the Bonferroni count's
    slices, the same names as the intervals' (``ItemList.slice_names``)."""
    for value in params.values():
        if isinstance(value, ItemList) and value.slice_names:
            return len(value.slice_names)
    return 0


def count_groups(labels) -> int:
    """Distinct groups among ``labels`` (each None is a group of its own)."""
    return len({label for label in labels if label is not None}) + sum(label is None for label in labels)


# -- per-slice results -------------------------------------------------------------------


@dataclass(frozen=True)
class SliceResult:
    """One slice of a probe's items: its mean and interval."""

    name: str
    estimate: float
    ci: Any  # stats.Interval
    n: int
    #: Groups among the slice's items (None without groups=).
    n_groups: int | None
    method: str
    resamples: int
    seed: int

    def interval_estimate(self, label: str, confidence: float) -> IntervalEstimate:
        return IntervalEstimate(
            label=f"{label} slice {self.name!r}",
            estimate=self.estimate,
            ci=self.ci,
            confidence=confidence,
            n=self.n,
            how=interval_how(self.method, self.resamples, self.seed) + groups_note(self.method, self.n_groups),
        )


def slice_seed(seed: int, name: str) -> int:
    """A slice's bootstrap seed: a stable hash of the test's seed and the slice's name, so a slice
    gets the same interval whatever other slices the test has, and slices do not share resamples."""
    digest = hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=4, person=b"sway-slice").digest()
    return int.from_bytes(digest, "little")


def slice_results(values, layout: Layout, bootstrap, interval) -> dict[str, SliceResult]:
    """Each slice's estimate and interval; ``interval(values, bootstrap, groups)`` returns
    ``(ci, method, resamples)`` as for the whole result."""
    out = {}
    for name, indices in layout.slice_indices().items():
        part = values[indices]
        groups = None if layout.groups is None else [layout.groups[i] for i in indices]
        slice_bootstrap = replace(bootstrap, seed=slice_seed(bootstrap.seed, name))
        ci, method, resamples = interval(part, slice_bootstrap, groups)
        out[name] = SliceResult(
            name=name,
            estimate=float(part.mean()),
            ci=ci,
            n=len(indices),
            n_groups=None if groups is None else count_groups(groups),
            method=method,
            resamples=resamples,
            seed=slice_bootstrap.seed,
        )
    return out


# -- judging a sliced result ---------------------------------------------------------------

_WORST_FIRST = (Outcome.FAILED, Outcome.INCONCLUSIVE)


def judge(gate: Gate, overall: IntervalEstimate, slices: dict[str, IntervalEstimate]) -> Verdict:
    """The gate applied to the overall estimate and to every slice: the worst verdict wins, and
    its first line names the failing slices (pytest's short summary shows the first line)."""
    whole = gate.judge(overall)
    parts = tuple((name, gate.judge(estimate)) for name, estimate in slices.items())
    bad = [(name, v) for name, v in parts if not v.ok]
    if not bad:
        return replace(whole, slices=parts)
    verdicts = ([whole] if not whole.ok else []) + [v for _, v in bad]
    outcome = min((v.outcome for v in verdicts), key=_WORST_FIRST.index)
    named = ", ".join(f"{name!r} ({v.outcome.value})" for name, v in bad)
    head = (
        f"{outcome.value.upper()}: {overall.label} fails its gate on {len(bad)} of {len(parts)} slices: {named}"
        + (f"; and overall ({whole.outcome.value})" if not whole.ok else "")
        + "."
    )
    message = "\n".join([head] + [v.message for v in verdicts])
    return Verdict(outcome, message, whole.items_needed, slices=parts)
