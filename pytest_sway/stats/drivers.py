"""Drivers: the items behind a failed or inconclusive verdict (pure; numpy imported when used).

A gate judges the mean of per-item values; when it fails, the user's next
question is *which* items pulled the interval to the wrong side. The drivers
of a gate side are the items on its wrong side, furthest first: for ``above=x``
the items whose value is below ``x``, lowest first; for ``below=x`` those above
``x``, highest first. A two-sided gate names the drivers of each side that
failed. The drivers of a regression against a baseline are the items whose
value moved in the bad direction since the saved run (current − saved below
zero when higher is better, above zero when lower is better), worst first.
Ties keep the items' order, so the same values give the same drivers.

Drivers are plain dicts (``item``, ``value``, and ``side`` or
``baseline_value``): they travel on the report to xdist's controller and are
written to the JSON as they are. The functions ending in ``_text`` render the
lines a failure message gets; the reports render the same dicts.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import numpy as np

#: Per-item values: a list (a JSON row's) or a probe result's numpy array.
Values = Union[Sequence[float], "np.ndarray"]

#: How many drivers a failed gate names unless ``--sway-drivers`` says otherwise.
DEFAULT_DRIVERS = 5

#: Characters of an item a message line shows before cutting it with an ellipsis.
ITEM_CHARS = 80

_VISIBLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

#: Unicode categories no report writes raw: controls (NUL, ESC, BEL, DEL, C1), format characters
#: (bidirectional overrides and isolates, zero-width marks), line and paragraph separators, and
#: lone surrogates (which no UTF-8 file can hold).
_HIDDEN = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))


def _shown(ch: str) -> bool:
    """Whether ``ch`` may be written as it is: not hidden, and not a noncharacter (U+FDD0..U+FDEF,
    U+xFFFE, U+xFFFF), which HTML and XML reject."""
    code = ord(ch)
    if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:
        return False
    return unicodedata.category(ch) not in _HIDDEN


def visible(text: str, keep: str = "") -> str:
    """``text`` with every character a page would hide or reject written as an escape: ``\\n``,
    ``\\t``, ``\\r`` and ``\\u001b`` (``\\U0001xxxx`` beyond the BMP); the characters in
    ``keep`` (say a newline, in a block that shows lines) stay as they are. Every report shows
    an item's text through it, so what the terminal shows is what each file shows."""
    if all(_shown(ch) or ch in keep for ch in text):  # the common case: nothing to do
        return text
    out = []
    for ch in text:
        if _shown(ch) or ch in keep:
            out.append(ch)
        elif ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return "".join(out)


def show_item(text: str, limit: int = ITEM_CHARS) -> str:
    """``text`` on one line: newlines, tabs and other control characters made visible
    (``\\n``, :func:`visible`), cut to ``limit`` characters with an ellipsis."""
    line = visible(str(text))
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def failing_sides(above: float | None, below: float | None, ci_low: float | None, ci_high: float | None) -> list[str]:
    """The sides of a gate its interval does not clear: ``above`` iff ``ci_low < above``,
    ``below`` iff ``ci_high > below`` (what ``Gate.judge`` fails on). A bound of None is
    unbounded (the JSON's form of an infinite bound)."""
    low = -math.inf if ci_low is None else ci_low
    high = math.inf if ci_high is None else ci_high
    sides = []
    if above is not None and not low >= above:
        sides.append("above")
    if below is not None and not high <= below:
        sides.append("below")
    return sides


def gate_drivers(
    values: Values,
    items: Sequence[str],
    *,
    above: float | None,
    below: float | None,
    ci_low: float,
    ci_high: float,
    k: int = DEFAULT_DRIVERS,
) -> list[dict]:
    """Up to ``k`` drivers per failing side: ``{"item", "value", "side"}``, furthest
    on the wrong side first. Empty when the gate passes or ``k`` is 0."""
    if k <= 0:
        return []
    import numpy as np  # here, not at import: the plugin loads this module before any sway test runs

    array = np.asarray(values, dtype=np.float64)
    out = []
    for side in failing_sides(above, below, ci_low, ci_high):
        threshold = above if side == "above" else below
        assert threshold is not None
        wrong = np.flatnonzero(array < threshold if side == "above" else array > threshold)
        # Lowest first for `above`, highest first for `below`; ties in item order (lexsort's last key leads).
        key = array[wrong] if side == "above" else -array[wrong]
        for i in wrong[np.lexsort((wrong, key))][:k].tolist():
            out.append({"item": str(items[i]), "value": float(array[i]), "side": side})
    return out


def regression_drivers(
    items: Sequence[str],
    values: Values,
    saved: Sequence[float],
    *,
    direction: str,
    k: int = DEFAULT_DRIVERS,
) -> tuple[list[dict], int]:
    """The ``k`` items that regressed most since the baseline, and how many regressed.

    ``saved`` pairs with ``items`` (the baseline's value of each item); ``direction``
    is ``higher`` or ``lower`` (which way is better). A driver is
    ``{"item", "value", "baseline_value"}``.
    """
    import numpy as np

    now, then = np.asarray(values, dtype=np.float64), np.asarray(saved, dtype=np.float64)
    # Loss in the bad direction: positive for an item that got worse.
    loss = then - now if direction == "higher" else now - then
    worse = np.flatnonzero(loss > 0)
    ranked = worse[np.lexsort((worse, -loss[worse]))][: max(k, 0)].tolist()
    drivers = [{"item": str(items[i]), "value": float(now[i]), "baseline_value": float(then[i])} for i in ranked]
    return drivers, int(worse.size)


# -- words: headings and message lines -----------------------------------------------


def gate_heading(side: str, threshold: float, values: Values, shown: int, slices: Sequence[str] = ()) -> str:
    """``9 of 12 items lie below 0.3; the 5 lowest:`` for the drivers of one gate side
    (``in slice 'billing': ...`` when the drivers come from the failing slices only)."""
    where_from = ""
    if slices:
        where_from = f"in slice{'s' if len(slices) > 1 else ''} {', '.join(map(repr, slices))}: "
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    where = "below" if side == "above" else "above"
    wrong = int(np.count_nonzero(array < threshold if side == "above" else array > threshold))
    n = array.size
    if wrong == 0:
        return (
            f"{where_from}no item lies {where} {threshold:g} (of {n}): the interval reaches past it through its "
            "width alone; more items would narrow it"
        )
    extreme = "lowest" if side == "above" else "highest"
    head = f"{where_from}{wrong} of {n} items {'lies' if wrong == 1 else 'lie'} {where} {threshold:g}"
    if shown < wrong:
        return f"{head}; the {shown} {extreme}:"
    return f"{head}:" if wrong == 1 else f"{head}, {extreme} first:"


def regression_heading(direction: str, regressed: int, n: int, shown: int) -> str:
    """``7 of 12 items fell since the baseline; the 5 that fell most:``."""
    verb = "fell" if direction == "higher" else "rose"
    if regressed == 0:
        return (
            f"no item {verb} since the baseline (of {n}): the interval reaches past the bound through its width alone"
        )
    head = f"{regressed} of {n} items {verb} since the baseline"
    if shown < regressed:
        return f"{head}; the {shown} that {verb} most:"
    return f"{head}:" if regressed == 1 else f"{head}, most first:"


def _num(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


def gate_sections(
    drivers: Sequence[dict],
    values: Values,
    *,
    above: float | None,
    below: float | None,
    ci_low: float | None,
    ci_high: float | None,
    slices: Sequence[str] = (),
) -> list[tuple[str, list[dict]]]:
    """``(heading, drivers)`` per failing side of a gate, for messages and reports alike;
    ``slices`` names the failing slices the drivers come from, when only slices failed."""
    out = []
    for side in failing_sides(above, below, ci_low, ci_high):
        threshold = above if side == "above" else below
        assert threshold is not None
        mine = [d for d in drivers if d.get("side") == side]
        out.append((gate_heading(side, threshold, values, len(mine), slices), mine))
    return out


def row_sections(row: dict, values: Values, finite=lambda x: x) -> list[tuple[str, list[dict]]]:
    """:func:`gate_sections` for a result row: over its ``drivers_scope`` (the failing slices'
    items and intervals) when it has one, else over all its ``values`` and its interval.
    ``finite`` cleans the bounds a report reads back."""
    scope = row.get("drivers_scope")
    drivers = [d for d in row.get("drivers") or () if isinstance(d, dict)]
    common = dict(above=finite(row.get("above")), below=finite(row.get("below")))
    if isinstance(scope, dict):
        return gate_sections(drivers, scope.get("values") or [], **common, ci_low=finite(scope.get("ci_low")),
                             ci_high=finite(scope.get("ci_high")), slices=tuple(scope.get("slices") or ()))  # fmt: skip
    return gate_sections(
        drivers, values, **common, ci_low=finite(row.get("ci_low")), ci_high=finite(row.get("ci_high"))
    )


def gate_text(sections: Sequence[tuple[str, Sequence[dict]]]) -> str:
    """The lines a failure message gets: per failing side (from :func:`gate_sections`) its
    heading, then one line per driver, value first."""
    lines = []
    for heading, mine in sections:
        lines.append("Drivers: " + heading)
        if mine:
            width = max(len(_num(d["value"])) for d in mine)
            lines += [f"  {_num(d['value']).rjust(width)}  {show_item(d['item'])}" for d in mine]
    return "\n".join(lines)


def regression_text(drivers: Sequence[dict], *, direction: str, regressed: int, n: int) -> str:
    """The lines a regression's failure message gets: a heading, then per item its value,
    the saved value and the change."""
    cells = [
        f"{_num(d['value'])} (baseline {_num(d['baseline_value'])}, {d['value'] - d['baseline_value']:+.4g})"
        for d in drivers
    ]
    width = max(map(len, cells), default=0)
    lines = ["Drivers: " + regression_heading(direction, regressed, n, len(drivers))]
    lines += [f"  {cell.ljust(width)}  {show_item(d['item'])}" for cell, d in zip(cells, drivers)]
    return "\n".join(lines)
