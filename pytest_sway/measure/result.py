"""``ProbeResult``: what every probe run returns, and the assertions a test makes on it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from ..stats.bootstrap import Interval
from ..stats.drivers import DEFAULT_DRIVERS, gate_drivers, gate_sections, gate_text
from ..stats.gate import Gate, IntervalEstimate, Verdict
from ..stats.methods import groups_note, interval_how
from ..stats.shapes import needed_by


class BoundedEnds(NamedTuple):
    """A bounded result's two ends (each item's value lies between its low and high end): the
    means of each end, their intervals, and the upper ends per item (the lower ends are ``values``)."""

    #: Log-probabilities per side the bounds came from (the engine's top-k).
    k: int
    mean_low: float
    mean_high: float
    #: The interval of the mean of the lower ends: what an ``above=`` gate judges.
    ci_of_low: Interval
    #: The interval of the mean of the upper ends: what a ``below=`` gate judges (high ``inf`` when
    #: an upper end is unbounded).
    ci_of_high: Interval
    high: np.ndarray

    def judged(self, above: float | None, below: float | None) -> str | None:
        """Which ends a gate with these thresholds judged, in words (None: no gate)."""
        parts = (["low ends (above)"] if above is not None else []) + (
            ["high ends (below)"] if below is not None else []
        )
        return ", ".join(parts) or None

    def unbounded_why(self) -> str:
        """What a ``below=`` gate says when the upper ends' interval is open (empty when it is not)."""
        if np.isfinite(self.ci_of_high.high):
            return ""
        return (
            f"the engine returned only the top-{self.k} log-probabilities of each side, which bound this divergence "
            "from below only; exact divergences need the engine's full vocabulary (start the vLLM engine without a "
            "logprobs cap, --sway-vllm-args max_logprobs=-1), or gate a divergence bounded on both ends (js, tv)"
        )


class DriverScope(NamedTuple):
    """The items a failed gate's drivers are drawn from, and the interval bounds that failed it."""

    values: np.ndarray
    items: tuple[str, ...]
    ci_low: float
    ci_high: float
    #: The failing slices the items come from; empty when the overall interval failed.
    slices: tuple[str, ...] = ()
    #: A bounded result's upper ends of the same items: a ``below=`` side's drivers are drawn from
    #: them (``values`` then holds the lower ends, an ``above=`` side's). None: exact values.
    highs: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """One probe run: per-item values, their mean and its bootstrap CI."""

    kind: str
    estimate: float
    ci: Interval
    confidence: float
    n: int
    values: np.ndarray
    method: str
    resamples: int
    seed: int
    params: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    #: A short label per item (the prompt, the case), in the order given.
    items: tuple[str, ...] = ()
    #: What the summary calls this probe, e.g. ``delta_kl(js)``.
    label: str = ""
    #: Compute time of the probe and its bootstrap (model loading excluded).
    duration_s: float = 0.0
    #: Gates checked through ``assert_above``/``assert_below``, in order.
    checks: list[tuple[Gate, Verdict]] = field(default_factory=list, repr=False)
    #: How many items a failed gate names per side (``--sway-drivers``); 0: none.
    max_drivers: int = DEFAULT_DRIVERS
    #: Each item's group label (None: a group of its own), when the items have groups
    #: (``groups=``): the bootstrap resampled whole groups. ``n_groups`` counts them.
    groups: tuple | None = None
    n_groups: int | None = None
    #: Per slice (items given as ``{"name": [...]}`` or a JSONL "slice" field), in order:
    #: its n, estimate and interval (``pytest_sway.stats.slices.SliceResult``). A gate judges each.
    slices: dict[str, Any] = field(default_factory=dict)
    #: Each item's slice name, in the items' order (None without slices).
    item_slices: tuple | None = None
    #: The range the probe declared its values can take (None: not declared).
    support: tuple[float, float] | None = None
    #: What a reader of the result should know about its interval (e.g. an undeclared support).
    notes: tuple[str, ...] = ()
    #: A bounded result (each item's value known only to lie in an interval): its two ends. ``values``,
    #: ``estimate`` and every interval's low end are the lower ends'; every interval's high end is the
    #: upper ends', so ``above=`` judges the lower ends and ``below=`` the upper ends. None: exact values.
    bounds: BoundedEnds | None = None

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.kind)

    @property
    def interval_estimate(self) -> IntervalEstimate:
        """The estimate, interval and n a gate judges."""
        groups = groups_note(self.method, self.n_groups)
        return IntervalEstimate(
            label=self.label,
            estimate=self.estimate,
            ci=self.ci,
            confidence=self.confidence,
            n=self.n,
            how=interval_how(self.method, self.resamples, self.seed) + groups + self._bounded_how(),
            needed=self.needed_by(self.method, self.values, self.seed) if self.bounds is None else self._ends_needed(),
            unbounded_high=self.bounds.unbounded_why() if self.bounds is not None else "",
        )

    def _ends_needed(self, slice_name: str | None = None):
        """A bounded result's n-needed: the 1 / sqrt(n) rule on the judged end alone (its own mean and
        interval end), None where that end's mean is on the wrong side (more items would not pass)."""
        assert self.bounds is not None
        part = self.slices[slice_name] if slice_name is not None else None
        if part is None:
            n, ci, means = self.n, self.ci, (self.bounds.mean_low, self.bounds.mean_high)
        else:
            picked = [i for i, s in enumerate(self.item_slices or ()) if s == slice_name]
            n, ci, means = part.n, part.ci, (part.estimate, float(self.bounds.high[picked].mean()))

        def needed(threshold: float, side: str) -> int | None:
            mean, end = (means[0], ci.low) if side == "above" else (means[1], ci.high)
            margin, spread = (mean - threshold, mean - end) if side == "above" else (threshold - mean, end - mean)
            if margin <= 0 or not np.isfinite(spread):
                return None
            return int(np.ceil(round(n * (spread / margin) ** 2, 6)))

        return needed

    def _bounded_how(self) -> str:
        if self.bounds is None:
            return ""
        return (
            f"; bounded from the top-{self.bounds.k} log-probabilities: CI low from the items' low ends, "
            f"CI high from their high ends (mean {self.bounds.mean_high:.4g})"
        )

    def needed_by(self, method: str, values: np.ndarray, seed: int):
        """The gate's n-needed by ``method`` for ``values`` (these items or a slice's), where it is
        not the bootstrap's 1 / sqrt(n) rule: ``needed(threshold, side)``, or None."""
        if self.groups is not None or self.bounds is not None:
            return None  # a bounded result: how its ends would narrow with more items is not modelled
        return needed_by(method, values, self.support, confidence=self.confidence, seed=seed)

    def describe(self) -> str:
        """Estimate, CI and everything needed to reproduce them."""
        return self.interval_estimate.describe()

    def check(self, gate: Gate) -> Verdict:
        """Judge this result (overall, and every slice) against ``gate`` and remember the check."""
        if self.slices:
            from ..stats.slices import judge

            parts = {name: self.slice_estimate(name) for name in self.slices}
            verdict = judge(gate, self.interval_estimate, parts)
        else:
            verdict = gate.judge(self.interval_estimate)
        self.checks.append((gate, verdict))
        return verdict

    def slice_estimate(self, name: str) -> IntervalEstimate:
        """What a gate judges for slice ``name``."""
        part = self.slices[name]
        values = self.values[[i for i, s in enumerate(self.item_slices or ()) if s == name]]
        estimate = part.interval_estimate(self.label, self.confidence)
        if self.bounds is not None:
            why = self.bounds.unbounded_why() if not np.isfinite(part.ci.high) else ""
            return replace(
                estimate, how=estimate.how + self._bounded_how(), needed=self._ends_needed(name), unbounded_high=why
            )
        return replace(estimate, needed=self.needed_by(part.method, values, part.seed))

    @property
    def gates_per_check(self) -> int:
        """Intervals one active gate judges: the overall one and one per slice."""
        return 1 + len(self.slices)

    def assert_above(self, threshold: float) -> ProbeResult:
        """Fail unless the whole CI lies at or above ``threshold``."""
        __tracebackhide__ = True  # the failure is the test's line, not this module's
        return self._assert(Gate(above=threshold))

    def assert_below(self, threshold: float) -> ProbeResult:
        """Fail unless the whole CI lies at or below ``threshold``."""
        __tracebackhide__ = True
        return self._assert(Gate(below=threshold))

    def _assert(self, gate: Gate) -> ProbeResult:
        __tracebackhide__ = True
        verdict = self.check(gate)
        if not verdict.ok:
            raise AssertionError(self.failure_message(gate, verdict))
        return self

    def drivers(self, gate: Gate, scope: DriverScope | None = None) -> list[dict]:
        """The items that drive ``gate``'s verdict on this result: up to ``max_drivers`` per failing
        side, furthest on the wrong side of the threshold first (see ``pytest_sway.stats.drivers``).
        Empty when the gate passes. ``scope``: ``driver_scope(gate)``, when the caller has it."""
        scope = scope if scope is not None else self.driver_scope(gate)
        out = []
        for above, below, values in _sides(gate, scope):
            out += gate_drivers(
                values,
                scope.items,
                above=above,
                below=below,
                ci_low=scope.ci_low,
                ci_high=scope.ci_high,
                k=self.max_drivers,
            )
        return out

    def driver_scope(self, gate: Gate) -> DriverScope:
        """Where a failed ``gate``'s drivers come from: every item when the overall interval
        fails it; when only slices fail, the items of those slices, with the widest of their
        intervals (a side fails if any failing slice's interval crosses it)."""
        highs = self.bounds.high if self.bounds is not None else None
        whole = DriverScope(self.values, self.items, self.ci.low, self.ci.high, highs=highs)
        if not self.slices or self.item_slices is None or not gate.judge(self.interval_estimate).ok:
            return whole
        failing = [name for name in self.slices if not gate.judge(self.slice_estimate(name)).ok]
        if not failing:
            return whole
        picked = [i for i, name in enumerate(self.item_slices) if name in failing]
        return DriverScope(
            self.values[picked],
            tuple(self.items[i] for i in picked),
            min(self.slices[name].ci.low for name in failing),
            max(self.slices[name].ci.high for name in failing),
            tuple(failing),
            highs=None if highs is None else highs[picked],
        )

    def failure_message(self, gate: Gate, verdict: Verdict) -> str:
        """What a failed ``gate`` says: the verdict's message (its first line the verdict),
        the drivers, then the probe's own evidence (e.g. greedy_change's example pairs)."""
        text = verdict.message
        if self.max_drivers > 0:
            scope = self.driver_scope(gate)
            found = self.drivers(gate, scope)
            sections = []
            for above, below, values in _sides(gate, scope):
                sections += gate_sections(
                    found,
                    values,
                    above=above,
                    below=below,
                    ci_low=scope.ci_low,
                    ci_high=scope.ci_high,
                    slices=scope.slices,
                )
            drivers = gate_text(sections)
            text += "\n" + drivers if drivers else ""
        return text + self.failure_evidence()

    def failure_evidence(self) -> str:
        """Extra lines a probe wants shown when its gate fails (e.g. examples), as the message ends."""
        lines = self.evidence_lines()
        return "\n" + "\n".join(lines) if lines else ""

    def evidence_lines(self) -> list[str]:
        """The lines a failed gate's message ends with (the probe's ``details["evidence"]``):
        greedy_change's example pairs, delta_kl's tokens, choice_accuracy's forgotten questions."""
        return [str(line) for line in self.details.get("evidence") or ()]

    def __repr__(self) -> str:
        return f"ProbeResult({self.label}: {self.describe()})"


def _sides(gate: Gate, scope: DriverScope) -> list[tuple[float | None, float | None, np.ndarray]]:
    """``(above, below, values)`` to draw ``gate``'s drivers from: the gate and the scope's values at
    once for exact values; for a bounded result, the ``above=`` side over the lower ends and the
    ``below=`` side over the upper ends (the items that hold each judged end on the wrong side)."""
    if scope.highs is None:
        return [(gate.above, gate.below, scope.values)]
    sides: list[tuple[float | None, float | None, np.ndarray]] = []
    if gate.above is not None:
        sides.append((gate.above, None, scope.values))
    if gate.below is not None:
        sides.append((None, gate.below, scope.highs))
    return sides
