"""benchmarks/interval_shapes.py and its candidate intervals (benchmarks/interval_candidates.py):
the candidates' bounds against values computed by hand, and the benchmark at a tiny setting."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the benchmark imports its helper by name; dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shapes():
    # Not benchmarks/ on sys.path: its coverage.py would shadow the coverage package.
    try:
        _load("interval_candidates")
        yield _load("interval_shapes")
    finally:
        sys.modules.pop("interval_shapes", None)
        sys.modules.pop("interval_candidates", None)


@pytest.fixture(scope="module")
def candidates(shapes):
    return shapes.candidates


def test_twelve_equal_values_get_the_exact_bound_and_clopper_pearson_agrees(candidates):
    by_hand = -1 + 2 * 0.025 ** (1 / 12)  # P(12 values all >= c) <= ((mu + 1) / (c + 1))**12 = alpha / 2
    assert by_hand == pytest.approx(0.47070, abs=1e-5)
    low, high = candidates.constant_interval(1.0, 12, (-1.0, 1.0), confidence=0.95)
    assert low == pytest.approx(by_hand, abs=1e-15) and high == 1.0
    cp_low, cp_high = candidates.clopper_pearson(12, 12, confidence=0.95)
    assert -1 + 2 * cp_low == pytest.approx(by_hand, abs=1e-12) and cp_high == 1.0
    # An interior value: the two-point distributions on {a, c} and {c, b} give both sides.
    low, high = candidates.constant_interval(0.5, 8, (0.0, 1.0), confidence=0.9)
    assert (low, high) == pytest.approx((0.5 * 0.05 ** (1 / 8), 1 - 0.5 * 0.05 ** (1 / 8)))
    # An open side stays open: twelve zeros of a divergence on [0, inf) say nothing of how far up the mean lies.
    assert tuple(candidates.constant_interval(0.0, 12, (0.0, math.inf))) == (0.0, math.inf)


def test_clopper_pearson_matches_the_binomial_tails_it_inverts(candidates):
    from scipy.stats import binom

    low, high = candidates.clopper_pearson(3, 10, confidence=0.95)
    assert binom.sf(2, 10, low) == pytest.approx(0.025) and binom.cdf(3, 10, high) == pytest.approx(0.025)
    assert tuple(candidates.clopper_pearson(0, 10, confidence=0.95)) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))


@pytest.mark.parametrize(
    ("values", "support"),
    [
        ([0.12, 0.31, 0.08, 0.22, 0.41, 0.18, 0.27, 0.35], (0.0, 1.0)),
        ([1.0] * 9 + [33 / 35, 0.2, 1.0], (-1.0, 1.0)),
        ([5, 5, 4, 5, 3, 5, 5, 4, 5, 5, 2, 5], (1.0, 5.0)),
        ([0.25] * 10, (0.0, 1.0)),
    ],
)
def test_the_betting_interval_lies_in_the_support_and_holds_the_mean(candidates, values, support):
    low, high = candidates.betting_interval(values, support, confidence=0.95, seed=0)
    assert support[0] <= low < np.mean(values) < high <= support[1]
    assert candidates.betting_interval(values, support, confidence=0.95, seed=0) == (low, high)  # deterministic


def test_the_rule_picks_by_shape(candidates):
    choose = candidates.choose_method
    assert choose([1.0] * 12, (-1.0, 1.0)) == "constant"
    assert choose([0.0, 1.0, 1.0, 1.0], (0.0, 1.0)) == "binary"
    # A resample all at 1 has probability (10/12)**12 = 0.11, above alpha/8: such resamples make the tail.
    assert choose([1.0] * 10 + [0.4, 0.6], (-1.0, 1.0)) == "betting"
    assert choose(np.linspace(0.1, 0.9, 12), (0.0, 1.0)) == "studentized"  # no repeated value
    assert choose([1.0] * 10 + [0.4, 0.6], None) == "studentized"  # no support, no bounded candidate


def test_kish_and_bell_mccaffrey_by_hand(candidates):
    assert candidates.effective_groups([36, 1, 1, 1, 1]) == pytest.approx(1600 / 1300)
    assert candidates.effective_groups([4] * 10) == pytest.approx(10.0)
    assert candidates.bm_degrees_of_freedom([4] * 10) == pytest.approx(9.0)  # equal groups: G - 1
    # Unequal groups: tr(W)^2 / tr(W^2), W = C^(1/2) A C^(1/2), from the G x G matrices.
    m = np.array([12.0, 5, 1, 1, 3])
    n = m.sum()
    a = np.diag(m) - np.outer(m, m) / n
    c = np.diag(np.sqrt(1 / (1 - m / n)))
    w = c @ a @ c
    assert candidates.bm_degrees_of_freedom(m) == pytest.approx(np.trace(w) ** 2 / np.trace(w @ w))


def test_the_benchmark_runs_at_a_tiny_setting(shapes, capsys):
    families = "binary-0.97,all-equal,beta,lognormal"
    argv = ["--datasets", "20", "--sizes", "8", "--resamples", "399", "--families", families]
    cells = {cell.family: cell for cell in shapes.main(argv)}
    out = capsys.readouterr().out
    assert "command: python benchmarks/interval_shapes.py --datasets 20 --sizes 8 --resamples 399" in out
    assert "20 datasets per cell" in out and "399 resamples" in out
    assert "| 0/1, p = 0.97 | 8 |" in out and "exact coverage" in out
    for cell in cells.values():
        for stat in cell.stats.values():
            assert 0.0 <= stat.coverage <= 1.0 and stat.width >= 0.0
    # All equal: today's interval is [1, 1]; the rule's is the exact bound.
    today, rule = cells["all-equal"].stats["today: bootstrap-t"], cells["all-equal"].stats["rule"]
    assert today.width == 0.0 and today.zero_width == 1.0
    assert rule.width == pytest.approx(2 - 2 * 0.025 ** (1 / 8)) and cells["all-equal"].choices == {"constant": 1.0}
    # Continuous values have no ties: the rule keeps today's bootstrap-t, on the same resamples.
    for family in ("beta", "lognormal"):
        assert cells[family].stats["rule"] == cells[family].stats["today: bootstrap-t"]
        assert cells[family].choices == {"studentized": 1.0}
    assert "betting" not in cells["lognormal"].stats  # no support, no betting interval
    assert set(cells["binary-0.97"].stats) >= {"today: Wilson", "Clopper-Pearson"}


def test_on_rare_zeros_the_rule_covers_where_the_bootstrap_does_not(shapes, capsys):
    argv = ["--datasets", "200", "--sizes", "12", "--resamples", "999", "--families", "binary-0.97"]
    (cell,) = shapes.main(argv)
    capsys.readouterr()
    today, rule = cell.stats["today: bootstrap-t"], cell.stats["rule"]
    # Two in three samples of twelve are all 1s: today's interval is then [1, 1], which misses 0.97.
    assert today.zero_width > 0.5 and today.coverage < 0.6
    assert rule.coverage >= 0.95 and rule.coverage > today.coverage + 0.3
    assert rule.zero_width == 0.0


def test_the_clustered_tables_run_and_refuse_one_dominant_group(shapes, capsys):
    cells = shapes.main(["--clustered", "--datasets", "20", "--resamples", "399"])
    out = capsys.readouterr().out
    assert len(cells) == len(shapes.CLUSTER_MODELS) * len(shapes.DESIGNS)
    by_design = {cell.design: cell for cell in cells}
    assert by_design["one group of 90% + 4 singletons"].effective_groups == pytest.approx(40**2 / (36**2 + 4))
    assert by_design["10 groups of 4"].effective_groups == pytest.approx(10.0)
    assert by_design["10 groups of 4"].degrees_of_freedom == pytest.approx(9.0)
    for cell in cells:
        today, cr2, hull = (cell.stats[m] for m in shapes.CLUSTER_METHODS)
        assert hull.coverage >= max(today.coverage, cr2.coverage) and hull.width >= max(today.width, cr2.width)
    assert out.count("refused (G_eff < 1.5)") == len(shapes.CLUSTER_MODELS)  # only the 90% design
