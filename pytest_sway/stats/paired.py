"""Intervals for paired 0/1 outcomes: the change in a proportion measured on the same items.

Pure numpy: nothing here knows about pytest, probes or models.

When the same questions are answered by two models, each question gives a
difference ``correct_ft - correct_base`` in {-1, 0, 1}. Most questions are
concordant (0), so the values are a few +1s and -1s among many ties: a
bootstrap of them collapses (no discordant pair in the sample gives a
zero-width interval at 0, a certainty that 20 questions cannot give) and
under-covers at small n. Tango's score interval inverts the score test for the
difference of paired proportions, using only the discordant counts; it keeps
coverage near nominal at small n (``benchmarks/coverage.py --paired`` measures
it, and docs/intervals.md has the table).

Reference: T. Tango, "Equivalence test and confidence interval for the
difference in proportions for the paired-sample design", Statistics in
Medicine 17 (1998) 891-908; recommended by Fagerland, Lydersen and Laake,
"Recommended tests and confidence intervals for paired binomial proportions",
Statistics in Medicine 33 (2014) 2850-2875.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from .bootstrap import Interval, check_arguments, check_values

#: Bisection steps: the bracket [-1, 1] shrinks to 2**-60 (below float64 resolution of the bound).
_STEPS = 60


def tango_score(d0: float, fixed: int, broken: int, n: int) -> float:
    """Tango's score statistic for H0: p(fixed) - p(broken) = ``d0``.

    ``fixed``: items where only the second model is right (+1);
    ``broken``: items where only the first is right (-1); ``n``: all items.
    Decreasing in ``d0``; ±inf where the null variance is 0 and the
    numerator is not.
    """
    a = 2.0 * n
    b = -fixed - broken + (2.0 * n - fixed + broken) * d0
    c = -broken * d0 * (1.0 - d0)
    # The constrained maximum-likelihood estimate of p(broken) under H0.
    q = (math.sqrt(max(b * b - 4.0 * a * c, 0.0)) - b) / (2.0 * a)
    variance = n * (2.0 * q + d0 * (1.0 - d0))
    numerator = fixed - broken - n * d0
    if variance <= 0.0:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def tango_interval_counts(fixed: int, broken: int, n: int, *, confidence: float = 0.95) -> Interval:
    """Tango's score interval for p(fixed) - p(broken) from the discordant counts of ``n`` pairs."""
    if not (fixed >= 0 and broken >= 0 and fixed + broken <= n and n >= 1):
        raise ValueError(f"counts: need 0 <= fixed, broken and fixed + broken <= n, got {fixed}, {broken}, {n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    estimate = (fixed - broken) / n

    def solve(lo: float, hi: float, target: float) -> float:
        """The d0 in [lo, hi] where the (decreasing) score crosses ``target``."""
        for _ in range(_STEPS):
            mid = 0.5 * (lo + hi)
            if tango_score(mid, fixed, broken, n) > target:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    low = -1.0 if tango_score(-1.0, fixed, broken, n) <= z else solve(-1.0, estimate, z)
    high = 1.0 if tango_score(1.0, fixed, broken, n) >= -z else solve(estimate, 1.0, -z)
    return Interval(max(-1.0, min(low, estimate)), min(1.0, max(high, estimate)))


def tango_interval(values, *, confidence: float = 0.95) -> Interval:
    """Tango's score interval for the mean of paired differences in {-1, 0, 1}.

    Each value is ``outcome_b - outcome_a`` for one item scored 0/1 under two
    conditions (e.g. ``correct_ft - correct_base``); the mean is the change in
    the proportion. Usable as ``Measurement(interval=tango_interval)``.
    """
    data = check_values(values)
    if not np.all((data == -1) | (data == 0) | (data == 1)):
        raise ValueError("values: the paired score interval needs differences of 0/1 outcomes (-1, 0 or 1)")
    confidence, _, _ = check_arguments(confidence, None, None)
    return tango_interval_counts(int((data == 1).sum()), int((data == -1).sum()), data.size, confidence=confidence)


def change_interval(current, saved, *, support, outcome_step: float | None, bootstrap, groups=None):
    """The interval for the mean change ``current - saved`` of values measured on the same items,
    as a ``Chosen`` (interval, method, resamples).

    ``support`` is the range of one value (None: not declared); a change lies in
    ``[low - high, high - low]``, and so does its interval. Changes of paired 0/1 outcomes get
    Tango's interval: ``outcome_step`` is what one outcome turning from 0 to 1 adds to a value
    (the support's width for 0/1 outcomes on its two ends; 1 for values that are themselves
    changes of 0/1 outcomes, as choice_accuracy's), None for values that are not outcomes.
    Everything else gets the rule of ``Bootstrap.estimate`` on the changes.
    """
    from .bootstrap import Chosen

    diffs = check_values(np.asarray(current, dtype=np.float64) - np.asarray(saved, dtype=np.float64))
    if outcome_step is not None and groups is None:
        steps = diffs / outcome_step
        if np.all(np.isin(steps, (-1.0, 0.0, 1.0))):
            ci = tango_interval(steps, confidence=bootstrap.confidence)
            return Chosen(Interval(ci.low * outcome_step, ci.high * outcome_step), "tango", 0)
    width = float(support[1]) - float(support[0]) if support is not None else math.inf
    return bootstrap.estimate(diffs, support=None if support is None else (-width, width), groups=groups)
