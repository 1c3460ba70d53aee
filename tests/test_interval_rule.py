"""The rule that picks an interval by the shape of the values (pytest_sway.stats.shapes), checked
against hand formulas and scipy: which method each shape gets, the bounds it gives, and the items
an inconclusive gate needs by the same method."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_sway import DummyBackend, bootstrap_ci, run_probe
from pytest_sway.errors import ProbeError
from pytest_sway.probes import Measurement, Param, Probe, ProbeRegistry, builtin_probes
from pytest_sway.probes.base import prompt_list
from pytest_sway.stats.bootstrap import Bootstrap
from pytest_sway.stats.gate import Gate
from pytest_sway.stats.paired import change_interval, tango_interval_counts
from pytest_sway.stats.shapes import (
    BETTING,
    betting_bounds01,
    clopper_pearson,
    effective_groups,
    items_needed,
)

ALPHA = 0.05


def test_twelve_values_at_one_give_the_hand_checkable_bound_not_zero_width():
    by_hand = -1 + 2 * (ALPHA / 2) ** (1 / 12)  # P(12 values all >= c) <= ((mu + 1) / (c + 1))**12 = alpha / 2
    assert by_hand == pytest.approx(0.47070, abs=1e-5)
    ci = bootstrap_ci(np.ones(12), support=(-1, 1))
    assert ci == pytest.approx((by_hand, 1.0), abs=1e-12)
    assert Bootstrap().estimate(np.ones(12), support=(-1, 1)).method == "all-equal"
    # An interior value: both sides move in; an open side of the support stays open.
    assert bootstrap_ci(np.full(8, 0.5), support=(0, 1), confidence=0.9) == pytest.approx(
        (0.5 * 0.05 ** (1 / 8), 1 - 0.5 * 0.05 ** (1 / 8))
    )
    assert tuple(bootstrap_ci(np.zeros(12), support=(0, math.inf))) == (0.0, math.inf)
    assert tuple(bootstrap_ci(np.zeros(12))) == (-math.inf, math.inf)


@pytest.mark.parametrize(
    "values, support, method",
    [
        (np.ones(12), (-1, 1), "all-equal"),
        (np.r_[np.ones(9), np.zeros(3)], (0, 1), "clopper-pearson"),
        (np.r_[np.ones(9), -np.ones(3)], (-1, 1), "clopper-pearson"),
        (np.r_[np.ones(10), [33 / 35, 0.2]], (-1, 1), "betting"),  # a rank correlation, mostly 1
        (np.r_[np.zeros(20), [0.1, -0.2, 0.3, -0.1]], (-2, 2), "betting"),  # paired changes, mostly tied
        (np.random.default_rng(0).lognormal(size=12), None, "studentized"),  # continuous: the bootstrap
        (np.random.default_rng(0).beta(2, 5, size=12), (0, 1), "studentized"),
        (np.r_[np.ones(9), np.zeros(3)], None, "studentized"),  # no support declared: nothing else applies
    ],
)
def test_each_shape_gets_its_method(values, support, method):
    assert Bootstrap().estimate(values, support=support).method == method


def test_clopper_pearson_is_scipys_exact_binomial_interval():
    from scipy.stats import binomtest

    # A value a rounding step below the upper end is at that end, for the count as for the rule.
    nearly = [1.0, 1.0, 1.0, 1.0 - 2**-52, 0.0, 0.0]
    assert bootstrap_ci(nearly, support=(0, 1)) == bootstrap_ci([1.0] * 4 + [0.0] * 2, support=(0, 1))

    for k, n in [(0, 10), (3, 10), (9, 12), (12, 12)]:
        exact = binomtest(k, n).proportion_ci(0.95, method="exact")
        assert tuple(clopper_pearson(k, n, confidence=0.95)) == pytest.approx((exact.low, exact.high), abs=1e-12)
        values = np.r_[np.ones(k), np.zeros(n - k)]
        if 0 < k < n:
            ci = bootstrap_ci(values, support=(0, 1))
            assert tuple(ci) == pytest.approx((exact.low, exact.high), abs=1e-12)
            # On [-1, 1] the same counts rescale.
            assert tuple(bootstrap_ci(2 * values - 1, support=(-1, 1))) == pytest.approx(
                (2 * exact.low - 1, 2 * exact.high - 1), abs=1e-12
            )


def test_the_betting_interval_covers_saturated_values_and_is_deterministic():
    rng = np.random.default_rng(7)
    n, true_mean = 12, 0.85 + 0.10 * 33 / 35 + 0.05 * 0.0
    u = rng.random((300, n))
    data = np.where(u < 0.85, 1.0, np.where(u < 0.95, 33 / 35, rng.uniform(-1, 1, size=u.shape)))
    true_mean = 0.85 + 0.10 * 33 / 35  # the uniform part has mean 0
    bounds = -1 + 2 * betting_bounds01((data + 1) / 2, confidence=0.95, seed=3)
    covered = np.mean((bounds[:, 0] <= true_mean) & (true_mean <= bounds[:, 1]))
    assert covered >= 0.93
    assert np.all(bounds[:, 1] > bounds[:, 0])  # never zero width
    again = -1 + 2 * betting_bounds01((data[:5] + 1) / 2, confidence=0.95, seed=3)
    np.testing.assert_array_equal(again, bounds[:5])  # rows do not influence each other; same seed, same bounds
    # The bootstrap-t on the same data covers far less (the reason for the rule).
    boot = np.array([bootstrap_ci(row, method="studentized", resamples=999, seed=1) for row in data[:100]])
    assert np.mean((boot[:, 0] <= true_mean) & (true_mean <= boot[:, 1])) < covered - 0.1


def test_betting_on_equal_groups_is_betting_on_their_means():
    rng = np.random.default_rng(1)
    means = rng.choice([0.0, 1.0], size=10, p=[0.1, 0.9])
    x = np.repeat(means, 3)  # ten groups of three equal items
    grouped = Bootstrap(seed=5).estimate(x, support=(0, 1), groups=np.repeat(np.arange(10), 3))
    assert grouped.method == BETTING
    direct = betting_bounds01(means[None, :], confidence=0.95, seed=5)[0]
    assert tuple(grouped.ci) == pytest.approx(tuple(direct), abs=1e-12)


def test_one_group_holding_most_items_is_refused_with_the_effective_number():
    groups = [0] * 36 + [1, 2, 3, 4]
    assert effective_groups(np.bincount(groups)) == pytest.approx(1600 / 1300)
    with pytest.raises(ValueError, match=r"one group holds 36 of the 40 items, which leaves 1\.23 effective groups"):
        bootstrap_ci(np.random.default_rng(0).random(40), groups=groups)


def test_unequal_groups_widen_the_cluster_bootstrap_to_cr2():
    from pytest_sway.stats.bootstrap import batch_intervals, check_groups
    from pytest_sway.stats.shapes import cr2_t_bounds

    values = np.random.default_rng(2).normal(size=40)
    groups = [0] * 30 + list(range(1, 11))
    codes = check_groups(groups, 40)
    boot = batch_intervals(
        values[None], confidence=0.95, resamples=9999, methods=("studentized",), seed=0, groups=codes
    )
    cr2 = cr2_t_bounds(values[None], codes, confidence=0.95)[0]
    ci = bootstrap_ci(values, groups=groups)
    assert ci.low == min(boot["studentized"][0, 0], cr2[0]) and ci.high == max(boot["studentized"][0, 1], cr2[1])


def test_items_needed_uses_the_same_method():
    # Twelve 1s on [-1, 1], gate above 0.6: -1 + 2 q >= 0.6 needs q = 0.025**(1/n) >= 0.8, n >= 16.53.
    ones = np.ones(12)
    assert items_needed("all-equal", ones, (-1, 1), confidence=0.95, threshold=0.6, side="above") == 17
    assert bootstrap_ci(np.ones(17), support=(-1, 1)).low >= 0.6 > bootstrap_ci(np.ones(16), support=(-1, 1)).low
    # Clopper-Pearson at a held rate: the smallest n whose bound clears it.
    values = np.r_[np.ones(9), np.zeros(3)]
    n = items_needed("clopper-pearson", values, (0, 1), confidence=0.95, threshold=0.5, side="above")
    assert (
        clopper_pearson(0.75 * n, n, confidence=0.95)[0]
        >= 0.5
        > clopper_pearson(0.75 * (n - 1), n - 1, confidence=0.95)[0]
    )
    # The estimate on the wrong side, or on a bound of the support: no number of items helps.
    assert items_needed("all-equal", ones, (-1, 1), confidence=0.95, threshold=1.0, side="above") is None
    # The gate's message carries it.
    verdict = Gate(above=0.6).judge(
        run_probe("adapter_ablation", DummyBackend(), prompts=[f"p{i}" for i in range(12)]).interval_estimate
    )
    assert verdict.items_needed == 17
    assert "about 17 items (now 12) would bring the CI low up to 0.6" in verdict.message


def _registry(measure, **probe) -> ProbeRegistry:
    registry = ProbeRegistry(builtin_probes())
    registry.add(
        Probe(
            kind="mine",
            doc="a user's probe",
            params=(Param("prompts", prompt_list, items="prompt"),),
            measure=measure,
            **probe,
        )
    )
    return registry


def test_a_user_probe_with_few_levels_and_no_support_gets_a_note_saying_how_to_declare_it():
    def measure(backend, params, bootstrap):
        return Measurement(values=np.r_[np.ones(10), np.zeros(2)], items=params["prompts"])

    result = run_probe("mine", DummyBackend(), registry=_registry(measure), prompts=[f"p{i}" for i in range(12)])
    assert result.method == "studentized"
    assert len(result.notes) == 1 and "support=(low, high)" in result.notes[0] and "2 distinct level" in result.notes[0]

    def declared(backend, params, bootstrap):
        return Measurement(values=np.r_[np.ones(10), np.zeros(2)], items=params["prompts"], support=(0, 1))

    result = run_probe("mine", DummyBackend(), registry=_registry(declared), prompts=[f"p{i}" for i in range(12)])
    assert (result.method, result.notes) == ("clopper-pearson", ())


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(binary=True, values=[0.0, 0.5, 1.0]), "declared binary values"),
        (dict(support=(1.0, 0.0)), "its low must be below its high"),
        (dict(support="wide"), "a support is a (low, high) pair of numbers"),
    ],
)
def test_a_user_probes_bad_declaration_is_a_clear_error(fields, message):
    def measure(backend, params, bootstrap):
        values = fields.get("values", [0.0, 1.0, 1.0])
        rest = {k: v for k, v in fields.items() if k != "values"}
        return Measurement(values=np.array(values), items=params["prompts"], **rest)

    with pytest.raises(ProbeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_probe("mine", DummyBackend(), registry=_registry(measure), prompts=["a", "b", "c"])


def test_a_change_of_paired_outcomes_gets_tango_and_every_change_interval_stays_in_range():
    # No answer changed among 40: not certainty (about +-0.09), by Tango's interval.
    same = np.r_[np.ones(30), np.zeros(10)]
    chosen = change_interval(same, same, support=(0, 1), outcome_step=1.0, bootstrap=Bootstrap())
    assert chosen.method == "tango" and tuple(chosen.ci) == tuple(tango_interval_counts(0, 0, 40))
    assert chosen.ci.high == pytest.approx(0.0876, abs=5e-4)
    # One lost question of 40 in choice_accuracy's paired changes (support [-1, 1]).
    now = np.r_[np.zeros(39), [-1.0]]
    chosen = change_interval(now, np.zeros(40), support=(-1, 1), outcome_step=1.0, bootstrap=Bootstrap())
    assert tuple(chosen.ci) == tuple(tango_interval_counts(0, 1, 40))
    # Continuous values on [0, ln 2], changes mostly tied: inside [-ln 2, ln 2], never an explosion.
    saved = np.random.default_rng(3).uniform(0, math.log(2), size=40)
    current = saved.copy()
    current[0] = 0.0
    chosen = change_interval(current, saved, support=(0, math.log(2)), outcome_step=None, bootstrap=Bootstrap())
    assert -math.log(2) <= chosen.ci.low < chosen.ci.high <= math.log(2)
    assert chosen.method == "betting" and chosen.ci.width > 0
