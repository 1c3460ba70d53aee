"""``ProbeResult``: what every probe run returns, and the assertions a test makes on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .drivers import DEFAULT_DRIVERS, gate_drivers, gate_sections, gate_text
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
    #: How many items a failed gate names per side (``--sway-drivers``); 0: none.
    max_drivers: int = DEFAULT_DRIVERS

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.kind)

    @property
    def interval_estimate(self) -> IntervalEstimate:
        """The estimate, interval and n a gate judges."""
        return IntervalEstimate(
            label=self.label,
            estimate=self.estimate,
            ci=self.ci,
            confidence=self.confidence,
            n=self.n,
            how=interval_how(self.method, self.resamples, self.seed),
        )

    def describe(self) -> str:
        """Estimate, CI and everything needed to reproduce them."""
        return self.interval_estimate.describe()

    def check(self, gate: Gate) -> Verdict:
        """Judge this result against ``gate`` and remember the check."""
        verdict = gate.judge(self.interval_estimate)
        self.checks.append((gate, verdict))
        return verdict

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

    def drivers(self, gate: Gate) -> list[dict]:
        """The items that drive ``gate``'s verdict on this result: up to ``max_drivers`` per failing
        side, furthest on the wrong side of the threshold first (see ``pytest_sway.drivers``).
        Empty when the gate passes."""
        return gate_drivers(
            self.values,
            self.items,
            above=gate.above,
            below=gate.below,
            ci_low=self.ci.low,
            ci_high=self.ci.high,
            k=self.max_drivers,
        )

    def failure_message(self, gate: Gate, verdict: Verdict) -> str:
        """What a failed ``gate`` says: the verdict's message (its first line the verdict),
        the drivers, then the probe's own evidence (e.g. greedy_change's example pairs)."""
        text = verdict.message
        if self.max_drivers > 0:
            sections = gate_sections(
                self.drivers(gate),
                self.values,
                above=gate.above,
                below=gate.below,
                ci_low=self.ci.low,
                ci_high=self.ci.high,
            )
            drivers = gate_text(sections)
            text += "\n" + drivers if drivers else ""
        return text + self.failure_evidence()

    def failure_evidence(self) -> str:
        """Extra lines a probe wants shown when its gate fails (e.g. examples)."""
        lines = self.details.get("evidence")
        return "\n" + "\n".join(lines) if lines else ""

    def __repr__(self) -> str:
        return f"ProbeResult({self.label}: {self.describe()})"
