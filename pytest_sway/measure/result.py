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


class DriverScope(NamedTuple):
    """The items a failed gate's drivers are drawn from, and the interval bounds that failed it."""

    values: np.ndarray
    items: tuple[str, ...]
    ci_low: float
    ci_high: float
    #: The failing slices the items come from; empty when the overall interval failed.
    slices: tuple[str, ...] = ()


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
            how=interval_how(self.method, self.resamples, self.seed) + groups,
            needed=self.needed_by(self.method, self.values, self.seed),
        )

    def needed_by(self, method: str, values: np.ndarray, seed: int):
        """The gate's n-needed by ``method`` for ``values`` (these items or a slice's), where it is
        not the bootstrap's 1 / sqrt(n) rule: ``needed(threshold, side)``, or None."""
        if self.groups is not None:
            return None
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
        return replace(
            part.interval_estimate(self.label, self.confidence), needed=self.needed_by(part.method, values, part.seed)
        )

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
        return gate_drivers(
            scope.values,
            scope.items,
            above=gate.above,
            below=gate.below,
            ci_low=scope.ci_low,
            ci_high=scope.ci_high,
            k=self.max_drivers,
        )

    def driver_scope(self, gate: Gate) -> DriverScope:
        """Where a failed ``gate``'s drivers come from: every item when the overall interval
        fails it; when only slices fail, the items of those slices, with the widest of their
        intervals (a side fails if any failing slice's interval crosses it)."""
        whole = DriverScope(self.values, self.items, self.ci.low, self.ci.high)
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
        )

    def failure_message(self, gate: Gate, verdict: Verdict) -> str:
        """What a failed ``gate`` says: the verdict's message (its first line the verdict),
        the drivers, then the probe's own evidence (e.g. greedy_change's example pairs)."""
        text = verdict.message
        if self.max_drivers > 0:
            scope = self.driver_scope(gate)
            sections = gate_sections(
                self.drivers(gate, scope),
                scope.values,
                above=gate.above,
                below=gate.below,
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
