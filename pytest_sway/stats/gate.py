"""The gate: an interval estimate in, a verdict (passed / failed / inconclusive) out.

Pure: no pytest, no models. ``Gate.judge`` takes an
:class:`IntervalEstimate` (a mean, its interval, n and how it was computed), so
a probe's result, a comparison with a baseline and a slice are judged alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import is_number
from .bootstrap import Interval
from .outcome import Outcome


@dataclass(frozen=True)
class IntervalEstimate:
    """What a gate judges: a mean over ``n`` items, its interval, and how it was computed."""

    label: str
    estimate: float
    ci: Interval
    confidence: float
    n: int
    #: How the interval was computed, e.g. ``studentized bootstrap, 9999 resamples, seed 0``.
    how: str
    #: ``needed(threshold, side)``: the items at which the same method's interval would clear
    #: ``threshold`` on ``side`` ("above"/"below") with the values' distribution held (None: no
    #: number would). Without it, the gate assumes half-widths shrink as 1 / sqrt(n).
    needed: Callable[[float, str], int | None] | None = field(default=None, compare=False, repr=False)
    #: Why the interval's high end is infinite, where the values themselves say so (a bounded result
    #: whose upper ends are unbounded) rather than an open support: a ``below=`` gate it cannot clear
    #: says this instead. Empty: the generic explanation.
    unbounded_high: str = ""

    def describe(self) -> str:
        """Estimate, CI and everything needed to reproduce them."""
        return (
            f"estimate {self.estimate:.4g}, {self.confidence * 100:.4g}% CI [{self.ci.low:.4g}, {self.ci.high:.4g}] "
            f"(n={self.n}, {self.how})"
        )


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    message: str = ""
    #: For an inconclusive verdict, the item count at which, if the estimate
    #: and spread held, the interval would clear the threshold.
    items_needed: int | None = None
    #: For a sliced result: each slice's own verdict, ``(name, verdict)`` in the slices' order.
    slices: tuple[tuple[str, Verdict], ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome.ok


@dataclass(frozen=True)
class Gate:
    """``above=x`` passes iff ``ci.low >= x``; ``below=x`` iff ``ci.high <= x``."""

    above: float | None = None
    below: float | None = None

    def __post_init__(self):
        for name in ("above", "below"):
            value = getattr(self, name)
            if value is not None and not is_number(value):
                raise ValueError(f"{name}: expected a number, got {value!r}")
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if self.above is not None and self.below is not None and self.above >= self.below:
            raise ValueError(
                f"above={self.above!r} and below={self.below!r}: no interval can lie above "
                "the first and below the second; `above` must be smaller than `below`"
            )

    @property
    def active(self) -> bool:
        return self.above is not None or self.below is not None

    @property
    def direction(self) -> str | None:
        """Which way is better: ``higher`` (``above=`` only), ``lower`` (``below=`` only), or None."""
        if self.above is not None and self.below is None:
            return "higher"
        if self.below is not None and self.above is None:
            return "lower"
        return None

    def judge(self, result: IntervalEstimate) -> Verdict:
        if not self.active:
            return Verdict(Outcome.REPORTED)
        verdicts = []
        if self.above is not None:
            verdicts.append(_judge_side(result, self.above, side="above"))
        if self.below is not None:
            verdicts.append(_judge_side(result, self.below, side="below"))
        bad = [v for v in verdicts if not v.ok]
        if not bad:
            return Verdict(Outcome.PASSED)
        # A clear failure on either side outranks an inconclusive one.
        bad.sort(key=lambda v: v.outcome != Outcome.FAILED)
        message = "\n".join(v.message for v in bad)
        return Verdict(bad[0].outcome, message, bad[0].items_needed)


def _judge_side(result: IntervalEstimate, threshold: float, *, side: str) -> Verdict:
    """The verdict of one side of a gate; its message starts with the verdict (pytest's
    short summary shows the first line) and then says how to reproduce the numbers."""
    low, high = result.ci
    est = result.estimate
    if side == "above":
        if low >= threshold:
            return Verdict(Outcome.PASSED)
        wholly_wrong = high < threshold
        need = f"CI low >= {threshold:g}"
        margin, spread = est - threshold, est - low
    else:
        if high <= threshold:
            return Verdict(Outcome.PASSED)
        wholly_wrong = low > threshold
        need = f"CI high <= {threshold:g}"
        margin, spread = threshold - est, high - est
    ci = f"{result.confidence * 100:.4g}% CI [{low:.4g}, {high:.4g}]"
    how = f"{result.label}: {result.describe()}; gate needs {need}."
    if side == "below" and result.unbounded_high and not wholly_wrong and not math.isfinite(high):
        return Verdict(
            Outcome.INCONCLUSIVE,
            f"INCONCLUSIVE: {result.label} {ci}: its upper end is unbounded, so no number of items would bring "
            f"the CI high down to {threshold:g}: {result.unbounded_high}.\n{how}",
        )
    if wholly_wrong:
        where = "below" if side == "above" else "above"
        return Verdict(Outcome.FAILED, f"FAILED: {result.label} {ci} lies wholly {where} {threshold:g}.\n{how}")
    if margin > 0 and not math.isfinite(spread):
        return Verdict(
            Outcome.INCONCLUSIVE,
            f"INCONCLUSIVE: {result.label} {ci} is unbounded on this side: the values' support is open there and "
            f"they show no spread to bound it with (n equal values cannot bound an unbounded mean), so no number "
            f"of items like these would resolve it; declare a bounded support for the values, or gate a probe whose "
            f"values are bounded.\n{how}",
        )
    if margin <= 0 or spread <= 0:
        return Verdict(
            Outcome.INCONCLUSIVE,
            f"INCONCLUSIVE: {result.label} {ci} straddles {threshold:g}, and the estimate itself is on the wrong "
            f"side of it; more items would most likely confirm a failure.\n{how}",
        )
    if result.needed is not None:
        needed = result.needed(threshold, side)
    else:
        # Half-widths shrink as 1/sqrt(n): n' = n * (spread / margin)^2.
        needed = math.ceil(round(result.n * (spread / margin) ** 2, 6))
    bound, towards = ("CI low", "up to") if side == "above" else ("CI high", "down to")
    if needed is None:
        return Verdict(
            Outcome.INCONCLUSIVE,
            f"INCONCLUSIVE: {result.label} {ci} straddles {threshold:g}, and no number of items with values like "
            f"these would bring the {bound} {towards} {threshold:g}.\n{how}",
        )
    return Verdict(
        Outcome.INCONCLUSIVE,
        f"INCONCLUSIVE: {result.label} {ci} straddles {threshold:g}. If the values held as they are, about "
        f"{needed} items (now {result.n}) would bring the {bound} {towards} {threshold:g} and pass.\n{how}",
        needed,
    )
