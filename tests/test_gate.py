"""The gate: passed, failed (CI wholly on the wrong side) or inconclusive (straddles)."""

import math

import numpy as np
import pytest

from pytest_sway import Gate
from pytest_sway.measure.result import ProbeResult
from pytest_sway.stats.bootstrap import Interval
from pytest_sway.stats.gate import IntervalEstimate
from pytest_sway.stats.outcome import Outcome

PASSED, FAILED, INCONCLUSIVE, REPORTED = Outcome.PASSED, Outcome.FAILED, Outcome.INCONCLUSIVE, Outcome.REPORTED


def result(estimate, low, high, n=16):
    return IntervalEstimate(
        label="delta_kl", estimate=estimate, ci=Interval(low, high), confidence=0.95, n=n, how="a test interval"
    )


def probe_result(estimate, low, high, n=16):
    return ProbeResult(
        kind="delta_kl",
        estimate=estimate,
        ci=Interval(low, high),
        confidence=0.95,
        n=n,
        values=np.zeros(n),
        method="studentized",
        resamples=9999,
        seed=3,
        params={},
    )


@pytest.mark.parametrize(
    "gate, ci, outcome",
    [
        (Gate(above=0.05), (0.07, 0.06, 0.08), PASSED),  # strictly above
        (Gate(above=0.05), (0.06, 0.05, 0.08), PASSED),  # low == threshold passes
        (Gate(below=0.01), (0.006, 0.002, 0.01), PASSED),  # high == threshold passes
        (Gate(above=0.05), (0.03, 0.02, 0.04), FAILED),
        (Gate(above=0.05), (0.06, 0.04, 0.08), INCONCLUSIVE),
        (Gate(below=0.01), (0.005, 0.002, 0.01), PASSED),
        (Gate(below=0.01), (0.02, 0.015, 0.03), FAILED),
        (Gate(below=0.01), (0.008, 0.004, 0.012), INCONCLUSIVE),
        (Gate(above=0.1, below=0.5), (0.3, 0.2, 0.4), PASSED),
        (Gate(above=0.1, below=0.5), (0.3, 0.05, 0.6), INCONCLUSIVE),
        (Gate(above=0.1, below=0.5), (0.45, 0.41, 0.6), INCONCLUSIVE),
        (Gate(above=0.1, below=0.5), (0.7, 0.6, 0.8), FAILED),
        (Gate(), (0.7, 0.6, 0.8), REPORTED),
    ],
)
def test_outcomes(gate, ci, outcome):
    assert gate.judge(result(*ci)).outcome == outcome


def test_inconclusive_estimates_the_items_that_would_resolve_it():
    # Lower half-width 0.03 must shrink to the 0.01 margin: (0.03 / 0.01)^2 = 9 times the items.
    verdict = Gate(above=0.05).judge(result(0.06, 0.03, 0.10, n=16))
    assert verdict.outcome == INCONCLUSIVE
    assert verdict.items_needed == math.ceil(16 * 9)
    assert "about 144 items (now 16)" in verdict.message
    # Upper side for `below`: spread 0.004, margin 0.002 -> 4x.
    assert Gate(below=0.01).judge(result(0.008, 0.004, 0.012, n=10)).items_needed == 40


def test_inconclusive_with_the_estimate_on_the_wrong_side_says_more_items_will_not_help():
    verdict = Gate(above=0.05).judge(result(0.04, 0.01, 0.07))
    assert verdict.outcome == INCONCLUSIVE and verdict.items_needed is None
    assert "most likely confirm a failure" in verdict.message


def test_failed_message_states_estimate_ci_and_threshold():
    message = Gate(above=0.05).judge(result(0.03, 0.02, 0.04)).message
    assert "estimate 0.03" in message and "[0.02, 0.04]" in message and "CI low >= 0.05" in message
    assert message.startswith("FAILED: delta_kl 95% CI [0.02, 0.04] lies wholly below 0.05.\n")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(above=0.5, below=0.5), "`above` must be smaller than `below`"),
        (dict(above=0.6, below=0.5), "`above` must be smaller than `below`"),
        (dict(above="0.5"), "above: expected a number"),
        (dict(below=float("nan")), "below: expected a finite number"),
    ],
)
def test_bad_gates(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("`", ".")):
        Gate(**kwargs)


def test_a_probe_result_is_judged_on_its_interval_estimate():
    r = probe_result(0.06, 0.03, 0.10)
    verdict = r.check(Gate(above=0.05))
    assert verdict == Gate(above=0.05).judge(r.interval_estimate)
    assert verdict.outcome == INCONCLUSIVE and r.checks == [(Gate(above=0.05), verdict)]
    assert "(n=16, studentized bootstrap, 9999 resamples, seed 3)" in verdict.message
