"""benchmarks/coverage.py --shapes: the rule it measures is the library's default interval, and the
benchmark runs at a tiny setting. The library's bounds themselves are tested in test_interval_rule.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_sway.stats.bootstrap import Bootstrap, batch_intervals

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "coverage.py"
#: Not "coverage": that name is the coverage package's (and benchmarks/ is not put on sys.path for it).
NAME = "sway_benchmark_coverage"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(NAME, BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(NAME, None)


def _batched_rule(bench, data, support, *, groups=None, resamples=999, seed=3):
    boot = batch_intervals(
        data, confidence=0.95, resamples=resamples, methods=("studentized",), seed=seed, groups=groups
    )
    return bench.rule_bounds(
        data, support, boot["studentized"], confidence=0.95, resamples=resamples, seed=seed, groups=groups
    )


@pytest.mark.parametrize(
    "family", ["binary-0.9", "rank-correlation", "ordinal-3-top", "ordinal-5-spread", "all-equal", "beta", "lognormal"]
)
def test_the_benchmarks_rule_is_bootstrap_estimate(bench, family):
    spec = bench.FAMILIES[family]
    data = spec.sample(np.random.default_rng(5), (12, 12))
    library = Bootstrap(resamples=999, seed=3)
    # One row at a time the batched bootstrap-t draws estimate's resamples: every row is equal.
    for row in data[:6]:
        bounds, methods = _batched_rule(bench, row[None, :], spec.support)
        chosen = library.estimate(row, support=spec.support)
        assert tuple(bounds[0]) == tuple(chosen.ci) and methods[0] == chosen.method
    # In a batch, rows the rule takes from the bootstrap get other resamples; the rest are estimate's own.
    bounds, methods = _batched_rule(bench, data, spec.support)
    for row, got, method in zip(data, bounds, methods):
        chosen = library.estimate(row, support=spec.support)
        assert method == chosen.method
        if method != "studentized":
            assert tuple(got) == tuple(chosen.ci)


@pytest.mark.parametrize("design", ["one group of 60% + 16 singletons", "10 groups of 4"])
@pytest.mark.parametrize("model", ["skewed (exponential)", "0/1, p = 0.9"])
def test_in_groups_too(bench, model, design):
    draw, _, support = bench.UNEQUAL_MODELS[model]
    sizes = np.array(bench.DESIGNS[design])
    codes = np.repeat(np.arange(sizes.size), sizes)
    data = draw(np.random.default_rng(1), sizes.size, codes, 4)
    library = Bootstrap(resamples=999, seed=3)
    for row in data:
        bounds, methods = _batched_rule(bench, row[None, :], support, groups=codes)
        chosen = library.estimate(row, support=support, groups=codes)
        assert tuple(bounds[0]) == tuple(chosen.ci) and methods[0] == chosen.method


def test_wilson_is_scipys(bench):
    from scipy.stats import binomtest

    for k, n in [(0, 8), (3, 12), (12, 12), (31, 32)]:
        expected = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert tuple(bench.wilson(k, n, confidence=0.95)) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_the_shapes_tables_at_a_tiny_setting(bench, capsys):
    families = "binary-0.97,all-equal,beta,lognormal"
    argv = ["--shapes", "--datasets", "20", "--sizes", "8", "--resamples", "399", "--families", families]
    cells = {cell.family: cell for cell in bench.main(argv)}
    out = capsys.readouterr().out
    assert f"command: python benchmarks/coverage.py {' '.join(argv)}" in out
    assert "20 datasets per cell" in out and "399 resamples" in out
    assert "| 0/1, p = 0.97 | 8 |" in out and "exact coverage" in out and "Issue #22's goals" in out
    for cell in cells.values():
        for stat in cell.stats.values():
            assert 0.0 <= stat.coverage <= 1.0 and stat.width >= 0.0
    # All equal: the bootstrap-t's interval is [1, 1]; the rule's is the exact bound.
    before, rule = cells["all-equal"].stats["bootstrap-t"], cells["all-equal"].stats[bench.RULE]
    assert before.width == 0.0 and before.zero_width == 1.0
    assert rule.width == pytest.approx(2 - 2 * 0.025 ** (1 / 8)) and cells["all-equal"].choices == {"all-equal": 1.0}
    # Continuous values have no ties: the rule keeps the bootstrap-t, on the same resamples.
    for family in ("beta", "lognormal"):
        assert cells[family].stats[bench.RULE] == cells[family].stats["bootstrap-t"]
        assert cells[family].choices == {"studentized": 1.0}
    assert "betting" not in cells["lognormal"].stats  # no support, no betting interval
    assert set(cells["binary-0.97"].stats) >= {"Wilson", "Clopper-Pearson", "betting", "percentile"}


def test_on_rare_zeros_the_rule_covers_where_the_bootstrap_does_not(bench, capsys):
    argv = ["--shapes", "--datasets", "200", "--sizes", "12", "--resamples", "999", "--families", "binary-0.97"]
    (cell,) = bench.main(argv)
    capsys.readouterr()
    before, rule = cell.stats["bootstrap-t"], cell.stats[bench.RULE]
    # Two in three samples of twelve are all 1s: the bootstrap-t is then [1, 1], which misses 0.97.
    assert before.zero_width > 0.5 and before.coverage < 0.6
    assert rule.coverage >= 0.95 and rule.coverage > before.coverage + 0.3 and rule.zero_width == 0.0
    assert bench.shape_goal_misses([cell]) == []
    # A miss is named with its number.
    missed = bench.ShapeCell(cell.family, 12, {**cell.stats, bench.RULE: bench.Stat(0.91, 0.3, 0.0)}, {})
    assert bench.shape_goal_misses([missed]) == ["0/1, p = 0.97, n = 12: coverage 0.910 < 0.93"]


def test_the_unequal_groups_table_refuses_one_dominant_group(bench, capsys):
    cells = bench.main(["--shapes", "--clustered", "--datasets", "10", "--resamples", "399"])
    out = capsys.readouterr().out
    assert len(cells) == len(bench.UNEQUAL_MODELS) * len(bench.DESIGNS)
    refused = [c for c in cells if c.refused]
    assert {c.design for c in refused} == {"one group of 90% + 4 singletons"}
    assert all(bench.RULE not in c.stats and "1.23 effective groups" in c.refused for c in refused)
    assert out.count("refused (G_eff < 1.5)") == len(bench.UNEQUAL_MODELS)
    for c in cells:
        if c.refused:
            continue
        if c.model in ("normal", "skewed (exponential)"):
            assert c.choices == {"studentized": 1.0}
            if c.design.startswith("one group"):  # unequal groups: at least the CR2-BM t interval
                rule, cr2 = c.stats[bench.RULE], c.stats["CR2-BM t"]
                assert rule.coverage >= cr2.coverage and rule.width >= cr2.width
        else:
            # 0/1 values in groups: betting on group means where they pile up, else the cluster bootstrap
            assert set(c.choices) <= {"betting", "all-equal", "studentized"}
