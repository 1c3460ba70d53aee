"""Names, defaults and limits of the bootstrap interval methods.

Kept apart from ``bootstrap`` (which needs numpy) so that the plugin can validate
``--sway-ci-method`` and ``--sway-resamples`` without importing numpy in runs
that have no sway tests.
"""

from __future__ import annotations

import math

METHODS = ("studentized", "bca", "percentile")
#: Confidence level of an interval unless a test or option says otherwise.
DEFAULT_CONFIDENCE = 0.95
#: Chosen from ``benchmarks/coverage.py`` (table in docs/intervals.md): on skewed
#: data the bootstrap-t keeps coverage near nominal from 8 items, where the
#: percentile and BCa intervals fall to 0.78-0.87.
DEFAULT_METHOD = "studentized"
#: With 9999 resamples the 2.5% and 97.5% points fall on exact ranks.
DEFAULT_RESAMPLES = 9999
#: Most resamples one interval may use: bounded memory (about 50 MB at this size).
MAX_RESAMPLES = 1_000_000
#: When the number of resamples is left to pytest-sway, it is raised until at
#: least this many resamples lie beyond each bound, so that the bound is an
#: order statistic well inside the bootstrap distribution.
AUTO_TAIL = 10
#: Fewest groups a cluster bootstrap accepts (``groups=``): below it, resampling
#: whole groups cannot show how much they vary (``benchmarks/coverage.py --clustered``).
MIN_GROUPS = 5


def tail_count(resamples: int, confidence: float) -> float:
    """How many of ``resamples`` bootstrap values lie beyond each bound of a
    ``confidence`` interval: ``(B + 1) * (1 - confidence) / 2``."""
    return (resamples + 1) * (1.0 - confidence) / 2.0


def resamples_needed(confidence: float, tail: int = 1) -> int:
    """The fewest resamples that put ``tail`` resamples beyond each bound at ``confidence``.

    With fewer than one, the bound would be the smallest or largest resample
    (or beyond it): the interval would be narrower than its stated level.
    """
    exact = 2.0 * tail / (1.0 - confidence) - 1.0
    return max(1, math.ceil(round(exact, 6)))


def auto_resamples(confidence: float) -> int:
    """The default: 9999, or more where the level needs more (e.g. Bonferroni over many gates)."""
    return max(DEFAULT_RESAMPLES, min(MAX_RESAMPLES, resamples_needed(confidence, AUTO_TAIL)))


def check_resamples(resamples: int, confidence: float) -> None:
    """Raise ValueError when ``resamples`` cannot resolve ``confidence`` or exceeds the limit."""
    if resamples > MAX_RESAMPLES:
        raise ValueError(
            f"resamples: {resamples} is more than the {MAX_RESAMPLES} one interval may use (memory grows with it); "
            "leave it unset to let pytest-sway choose what the confidence level needs"
        )
    needed = resamples_needed(confidence)
    if needed > MAX_RESAMPLES:
        raise ValueError(
            f"confidence: a {confidence:.10g} interval needs {needed} bootstrap resamples, more than the "
            f"{MAX_RESAMPLES} allowed; lower the confidence level (with --sway-correction=bonferroni: gate fewer "
            "probes per run)"
        )
    if resamples < needed:
        raise ValueError(
            f"resamples: {resamples} resamples cannot resolve a {confidence:.6g} interval: its bounds are the "
            f"{(1 - confidence) / 2:.3g} and {1 - (1 - confidence) / 2:.6g} quantiles, which need at least {needed} "
            f"resamples (better {resamples_needed(confidence, AUTO_TAIL)}); raise resamples, or leave it unset to let "
            "pytest-sway choose"
        )


def bonferroni(confidence: float, m: int) -> float:
    """Per-gate confidence that keeps the family-wise error rate of ``m`` gates at ``1 - confidence``."""
    return 1.0 - (1.0 - confidence) / m if m > 1 else confidence


#: The betting interval averages the capital of this many fixed orders of the values (the first is
#: the given order, the others seeded permutations): less dependence on the order, same guarantee.
BETTING_ORDERS = 16

#: How reports name the intervals that are not a bootstrap (``resamples == 0``).
CLOSED_FORM_NAMES = {
    "all-equal": "exact bound for all-equal values",
    "clopper-pearson": "Clopper-Pearson interval",
    "tango": "Tango score interval for paired proportions",
}


def interval_how(method: str, resamples: int, seed: object) -> str:
    """How an interval was computed, in the words the reports use."""
    if method == "betting":
        return f"betting interval, {BETTING_ORDERS} orders, seed {seed}"
    if not resamples:
        return CLOSED_FORM_NAMES.get(method, f"{method} interval")
    return f"{method} bootstrap, {resamples} resamples, seed {seed}"


def groups_note(method: str, n_groups: int | None) -> str:
    """What ``interval_how`` adds for items in ``n_groups`` groups (empty without groups)."""
    if n_groups is None:
        return ""
    if method in METHODS:
        return f", resampling {n_groups} groups (unequal groups: at least the CR2 t interval)"
    return f", over {n_groups} groups"
