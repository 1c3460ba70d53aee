"""bootstrap_ci: validation, determinism, agreement with independent implementations."""

import math
import os
import tracemalloc

import numpy as np
import pytest
import scipy.stats

from pytest_sway import bootstrap_ci
from pytest_sway.stats.bootstrap import METHODS, Bootstrap, batch_intervals


@pytest.fixture
def skewed():
    return np.random.default_rng(7).lognormal(0.0, 1.0, 25)


@pytest.mark.parametrize("method", METHODS)
def test_all_equal_values_give_the_exact_bound_never_a_zero_width_interval(method):
    # Without a support, n equal values say nothing about how far the mean may lie.
    assert bootstrap_ci([0.25] * 6, method=method) == (-math.inf, math.inf)
    # On [0, 1]: [0.25 q, 1 - 0.75 q] with q = 0.025 ** (1 / 6), whatever the bootstrap method.
    q = 0.025 ** (1 / 6)
    assert bootstrap_ci([0.25] * 6, method=method, support=(0, 1)) == pytest.approx((0.25 * q, 1 - 0.75 * q))
    assert bootstrap_ci(np.zeros(40), method=method, support=(0, 1)) == pytest.approx((0.0, 1 - 0.025 ** (1 / 40)))


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(values=[]), "values"),
        (dict(values=[1.0]), "values"),
        (dict(values=[1.0, float("nan"), 2.0]), "values"),
        (dict(values=[1.0, float("inf")]), "values"),
        (dict(values=[[1.0, 2.0], [3.0, 4.0]]), "values"),
        (dict(values=["a", "b"]), "values"),
        (dict(confidence=0.0), "confidence"),
        (dict(confidence=1.0), "confidence"),
        (dict(confidence=1.5), "confidence"),
        (dict(confidence="high"), "confidence"),
        (dict(resamples=0), "resamples"),
        (dict(resamples=-3), "resamples"),
        (dict(resamples=2.5), "resamples"),
        (dict(method="bootstrap-z"), "method"),
        (dict(seed=-1), "seed"),
        (dict(support=(1.0, 0.0)), "support"),
        (dict(support=(0.0, 1.5)), "values"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_argument(kwargs, argument):
    kwargs = {"values": [0.5, 1.0, 1.7], **kwargs}
    values = kwargs.pop("values")
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        bootstrap_ci(values, **kwargs)


def test_empty_and_single_values_say_how_many_are_needed():
    with pytest.raises(ValueError, match="at least 2 values"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="only 1 value"):
        bootstrap_ci([3.0])


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_interval_other_seed_other_interval(skewed, method):
    a = bootstrap_ci(skewed, method=method, seed=11)
    b = bootstrap_ci(skewed, method=method, seed=11)
    c = bootstrap_ci(skewed, method=method, seed=12)
    assert a == b
    assert a != c
    # Different seeds differ only by Monte Carlo noise.
    assert c.low == pytest.approx(a.low, abs=0.05 * a.width)
    assert c.high == pytest.approx(a.high, abs=0.05 * a.width)


def test_does_not_touch_numpy_global_random_state(skewed):
    state = np.random.get_state()[1].copy()
    bootstrap_ci(skewed)
    assert np.array_equal(np.random.get_state()[1], state)


@pytest.mark.parametrize("ours, theirs", [("percentile", "percentile"), ("bca", "BCa")])
def test_percentile_and_bca_agree_with_scipy(skewed, ours, theirs):
    mine = bootstrap_ci(skewed, method=ours, resamples=20000, seed=1)
    ref = scipy.stats.bootstrap(
        (skewed,), np.mean, method=theirs, n_resamples=20000, random_state=np.random.default_rng(2)
    ).confidence_interval
    assert mine.low == pytest.approx(ref.low, abs=0.03 * mine.width)
    assert mine.high == pytest.approx(ref.high, abs=0.03 * mine.width)


def _reference_bootstrap_t(x, confidence, resamples, rng):
    """Textbook bootstrap-t, one resample at a time."""
    n = len(x)
    mean, se = x.mean(), x.std(ddof=1) / math.sqrt(n)
    ts = []
    for _ in range(resamples):
        r = x[rng.integers(0, n, n)]
        ts.append((r.mean() - mean) / (r.std(ddof=1) / math.sqrt(n)))
    lo_q, hi_q = np.quantile(ts, [(1 - confidence) / 2, (1 + confidence) / 2])
    return mean - hi_q * se, mean - lo_q * se


def test_studentized_agrees_with_a_textbook_loop(skewed):
    mine = bootstrap_ci(skewed, method="studentized", resamples=20000, seed=3)
    low, high = _reference_bootstrap_t(skewed, 0.95, 20000, np.random.default_rng(4))
    assert mine.low == pytest.approx(low, abs=0.03 * mine.width)
    assert mine.high == pytest.approx(high, abs=0.03 * mine.width)


@pytest.mark.parametrize("method", METHODS)
def test_higher_confidence_gives_a_wider_interval_containing_the_mean(skewed, method):
    narrow = bootstrap_ci(skewed, method=method, confidence=0.8)
    wide = bootstrap_ci(skewed, method=method, confidence=0.99)
    assert wide.low < narrow.low <= skewed.mean() <= narrow.high < wide.high


def test_support_clips_the_interval_to_where_the_mean_can_be():
    values = [0.0, 0.01, 0.02, 0.3]  # at n=4 bootstrap-t runs below 0 and far above ln 2
    free = bootstrap_ci(values)
    clipped = bootstrap_ci(values, support=(0.0, math.log(2)))
    assert free.low < 0.0
    assert clipped.low == 0.0
    assert clipped.high == min(free.high, math.log(2))


def test_default_covers_skewed_data_far_better_than_percentile_at_8_items():
    # A small version of benchmarks/coverage.py: 600 datasets of 8 lognormal draws.
    data = np.random.default_rng(5).lognormal(0.0, 1.0, (600, 8))
    bounds = batch_intervals(data, confidence=0.95, resamples=999, methods=("studentized", "percentile"), seed=6)
    truth = math.exp(0.5)
    cover = {m: np.mean((b[:, 0] <= truth) & (truth <= b[:, 1])) for m, b in bounds.items()}
    assert cover["percentile"] < 0.83
    assert cover["studentized"] > 0.87


def test_large_inputs_are_resampled_in_bounded_batches():
    values = np.random.default_rng(0).exponential(size=100_000)
    tracemalloc.start()
    try:
        ci = bootstrap_ci(values, resamples=10_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One 10,000 x 100,000 float64 matrix would be 8 GB; the batches stay near 100 MB.
    assert peak < 300e6
    assert ci.low < values.mean() < ci.high
    assert ci.width < 0.05


@pytest.mark.parametrize("method", ["studentized", "bca"])
@pytest.mark.parametrize("cores", [2, 64])
def test_the_bootstrap_peak_does_not_grow_with_the_number_of_values(method, cores, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)

    def peak(n):
        values = np.random.default_rng(0).gamma(2.0, size=n)
        tracemalloc.start()
        try:
            bootstrap_ci(values, method=method, seed=1)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # The gathers are bounded by elements, not resamples: 16 times the values, not 16 times
    # the memory (with gathers of 2**22 elements the peak grew by over 100 MB here). And the
    # chunks in flight are bounded too, whatever the cores: with a thread per core a 16-core
    # GPU machine peaked at 68 MB at 4,096 values. How many of the (at most four) chunks
    # overlap depends on the threads' timing, so with many cores only the bound is checked.
    small, large = peak(256), peak(4096)
    assert max(small, large) < 30e6, (small, large)
    if cores == 2:
        assert large - small < 8e6, (small, large)


def test_bootstrap_settings_validate_once_and_fill_in_defaults():
    b = Bootstrap()
    assert (b.confidence, b.resamples, b.method, b.seed) == (0.95, 9999, "studentized", 0)
    with pytest.raises(ValueError, match="^method:"):
        Bootstrap(method="nope")


# -- resamples: never an interval narrower than its level -----------------------------------


@pytest.mark.parametrize(
    "confidence, resamples, needed", [(0.95, 1, 39), (0.95, 2, 39), (0.9999, 9999, 19999), (0.999, 99, 1999)]
)
def test_too_few_resamples_for_the_level_raise_saying_how_many(confidence, resamples, needed):
    with pytest.raises(ValueError, match=f"need at least {needed} resamples"):
        bootstrap_ci(np.arange(8.0), confidence=confidence, resamples=resamples)
    bootstrap_ci(np.arange(8.0), confidence=confidence, resamples=needed)  # just enough


def test_default_resamples_rise_with_the_level():
    from pytest_sway.stats.methods import auto_resamples, bonferroni

    assert auto_resamples(0.95) == 9999
    assert auto_resamples(bonferroni(0.95, 100)) == 39999  # 10 resamples beyond each bound
    assert Bootstrap(confidence=bonferroni(0.95, 1000)).resamples == 399999
    with pytest.raises(ValueError, match="needs 39999999 bootstrap resamples, more than the 1000000 allowed"):
        Bootstrap(confidence=1 - 0.05 / 1_000_000)


def test_bounds_are_order_statistics_rounded_outwards():
    # B = 99 at 95%: ranks (B + 1) * 0.025 = 2.5 and 97.5, taken as the 2nd and the 98th.
    values = np.random.default_rng(0).lognormal(size=12)
    b = Bootstrap(confidence=0.95, resamples=99, method="percentile", seed=4)
    from pytest_sway.stats.bootstrap import _resampled_moments

    means, _ = _resampled_moments(values[None, :], 99, 4, need_sd=False)
    ordered = np.sort(means[0])
    assert tuple(b.interval(values)) == (ordered[1], ordered[97])


def test_different_levels_never_share_a_clipped_interval():
    values = np.random.default_rng(1).normal(size=10)
    intervals = {
        c: bootstrap_ci(values, confidence=c, resamples=1999, method="percentile") for c in (0.99, 0.995, 0.999)
    }
    assert intervals[0.99].width < intervals[0.995].width < intervals[0.999].width
    with pytest.raises(ValueError, match="cannot resolve"):
        bootstrap_ci(values, confidence=0.9995, resamples=1999)
