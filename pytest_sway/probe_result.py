"""``ProbeResult``: what every probe run returns, and the assertions a test makes on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .gate import Gate, IntervalEstimate, Verdict
from .stats import Interval

#: How reports name the intervals that are not a bootstrap (``resamples == 0``).
CLOSED_FORM_NAMES = {
    "wilson": "Wilson score interval",
    "tango": "Tango score interval for paired proportions",
}


def interval_how(method: str, resamples: int, seed: object) -> str:
    """How an interval was computed, in the words the reports use."""
    if not resamples:
        return CLOSED_FORM_NAMES.get(method, f"{method} interval")
    return f"{method} bootstrap, {resamples} resamples, seed {seed}"


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
    #: Each item's group label (None: a group of its own), when the items have groups
    #: (``groups=``): the bootstrap resampled whole groups. ``n_groups`` counts them.
    groups: tuple | None = None
    n_groups: int | None = None
    #: Per slice (items given as ``{"name": [...]}`` or a JSONL "slice" field), in order:
    #: its n, estimate and interval (``pytest_sway.slices.SliceResult``). A gate judges each.
    slices: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.kind)

    @property
    def interval_estimate(self) -> IntervalEstimate:
        """The estimate, interval and n a gate judges."""
        groups = f", resampling {self.n_groups} groups" if self.n_groups is not None else ""
        return IntervalEstimate(
            label=self.label,
            estimate=self.estimate,
            ci=self.ci,
            confidence=self.confidence,
            n=self.n,
            how=interval_how(self.method, self.resamples, self.seed) + groups,
        )

    def describe(self) -> str:
        """Estimate, CI and everything needed to reproduce them."""
        return self.interval_estimate.describe()

    def check(self, gate: Gate) -> Verdict:
        """Judge this result (overall, and every slice) against ``gate`` and remember the check."""
        if self.slices:
            from .slices import judge

            parts = {name: s.interval_estimate(self.label, self.confidence) for name, s in self.slices.items()}
            verdict = judge(gate, self.interval_estimate, parts)
        else:
            verdict = gate.judge(self.interval_estimate)
        self.checks.append((gate, verdict))
        return verdict

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
            raise AssertionError(verdict.message + self.failure_evidence())
        return self

    def failure_evidence(self) -> str:
        """Extra lines a probe wants shown when its gate fails (e.g. examples)."""
        lines = self.details.get("evidence")
        return "\n" + "\n".join(lines) if lines else ""

    def __repr__(self) -> str:
        return f"ProbeResult({self.label}: {self.describe()})"
