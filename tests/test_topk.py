"""Top-k divergence bounds: the interval contains the exact full-vocabulary value on thousands of random pairs."""

import math

import numpy as np
import pytest

from pytest_sway.backends.divergence import DIVERGENCES, all_divergences
from pytest_sway.backends.topk import DivergenceBounds, bounds_of, topk_bounds, width_cost

TOL = 1e-12
LN2 = math.log(2)


def _log_softmax(z):
    """Log-softmax in float64; ``-inf`` entries stay exact zeros."""
    z = np.asarray(z, dtype=np.float64)
    top = z[np.isfinite(z)].max()
    with np.errstate(divide="ignore"):
        return z - (top + np.log(np.exp(z - top).sum()))


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(x)


def _exact(base, ft, kinds=DIVERGENCES):
    """The exact full-vocabulary values (rows with -inf on both sides make harmless 0 * nan warnings)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return all_divergences(base, ft, np, kinds=kinds)


def _returned(logp, k, rng):
    """What an engine returns: the top ``k`` ids (ties at the k-th value broken at random), in a shuffled order."""
    order = np.lexsort((rng.random(len(logp)), -logp))[:k]
    order = rng.permutation(order)
    return order, logp[order]


def _pair(rng, vocab):
    """One (ft, base) pair of full log-probability rows, drawn from a mix of shapes."""
    shape = rng.integers(8)
    if shape == 0:  # Dirichlet, sparse (many probabilities underflow to exact zeros)
        alpha = 10 ** rng.uniform(-2.5, -0.5)
        return _log(rng.dirichlet(np.full(vocab, alpha))), _log(rng.dirichlet(np.full(vocab, alpha)))
    if shape == 1:  # Dirichlet, flat
        alpha = 10 ** rng.uniform(0, 2)
        return _log(rng.dirichlet(np.full(vocab, alpha))), _log(rng.dirichlet(np.full(vocab, alpha)))
    z = rng.normal(0.0, rng.uniform(0.5, 8.0), vocab)
    temp = 10 ** rng.uniform(-0.7, 0.5)
    if shape == 2:  # peaked softmax, independent fine-tune
        return _log_softmax(z / temp), _log_softmax(rng.normal(0.0, rng.uniform(0.5, 8.0), vocab) / temp)
    if shape == 3:  # near-identical, like a LoRA fine-tune
        eps = 10 ** rng.uniform(-4, -0.5)
        return _log_softmax(z / temp + eps * rng.normal(size=vocab)), _log_softmax(z / temp)
    if shape == 4:  # disjoint supports
        cut = rng.integers(1, vocab) if vocab > 1 else 1
        zp, zq = z.copy(), z.copy()
        zp[cut:], zq[:cut] = -np.inf, -np.inf
        return _log_softmax(zp), _log_softmax(zq)
    if shape == 5:  # exact zeros on each side, overlapping supports
        zp, zq = z / temp, z / temp + 0.3 * rng.normal(size=vocab)
        zp[rng.random(vocab) < 0.5] = -np.inf
        zq[rng.random(vocab) < 0.5] = -np.inf
        zp[0] = zq[0] = 0.0  # keep each side normalisable
        return _log_softmax(zp), _log_softmax(zq)
    if shape == 6:  # ties: integer logits, many tokens share the k-th value
        zi = np.round(z / 2)
        return _log_softmax(zi), _log_softmax(zi + rng.integers(-1, 2, vocab) * (rng.random(vocab) < 0.2))
    # a fine-tune that moves mass to tokens the base ranks low
    zq = z / temp
    zp = zq.copy()
    moved = rng.choice(vocab, size=max(1, vocab // 50), replace=False)
    zp[moved] += rng.uniform(2, 10)
    return _log_softmax(zp), _log_softmax(zq)


def _check(rng, vocab, ks, violations):
    ft, base = _pair(rng, vocab)
    exact = _exact(base, ft)
    for k_ft, k_base in ks:
        got = topk_bounds(*_returned(ft, k_ft, rng), *_returned(base, k_base, rng), vocab_size=vocab)
        for kind in DIVERGENCES:
            low, high = got[kind]
            want = float(exact[kind])
            if not (low <= want + TOL and (want <= high + TOL or high == math.inf)) or low > high:
                violations.append((vocab, k_ft, k_base, kind, low, want, high))


def _ks(rng, vocab, n):
    out = []
    for _ in range(n):
        k = int(np.exp(rng.uniform(0, np.log(vocab + 1)))) if rng.random() < 0.8 else vocab
        k = min(max(k, 1), vocab)
        other = k if rng.random() < 0.6 else int(rng.integers(1, vocab + 1))
        out.append((k, other))
    return out


def test_bounds_contain_the_exact_value_on_random_pairs():
    rng = np.random.default_rng(20261201)
    violations: list = []
    draws = 0
    for _ in range(1400):  # small and moderate vocabularies, four (k_ft, k_base) per pair
        vocab = int(np.exp(rng.uniform(np.log(5), np.log(3000))))
        ks = _ks(rng, vocab, 4)
        _check(rng, vocab, ks, violations)
        draws += len(ks)
    for vocab in (32000, 49152, 50000):  # real vocabulary sizes
        for _ in range(6):
            ks = [(1, 1), (20, 20), (100, 20), (1000, 1000), (5000, 7), (vocab, vocab)]
            _check(rng, vocab, ks, violations)
            draws += len(ks)
    assert draws >= 5000
    assert violations == [], f"{len(violations)} of {draws} draws outside their bounds, first: {violations[:3]}"


@pytest.mark.parametrize("seed", range(4))
def test_the_whole_vocabulary_gives_the_exact_value(seed):
    rng = np.random.default_rng(seed)
    for vocab in (5, 97, 4096):
        ft, base = _pair(rng, vocab)
        exact = _exact(base, ft)
        got = topk_bounds(*_returned(ft, vocab, rng), *_returned(base, vocab, rng), vocab_size=vocab)
        for kind in DIVERGENCES:
            assert got[kind] == (float(exact[kind]), float(exact[kind])), kind


def _realistic(rng, vocab, scale=0.3):
    z = rng.normal(0.0, 3.0, vocab)
    return _log_softmax(z / 0.8), _log_softmax(z / 0.8 + scale * rng.normal(size=vocab))


@pytest.mark.parametrize("kind", ["js", "tv"])
def test_the_interval_narrows_as_k_grows(kind):
    rng = np.random.default_rng(7)
    for vocab in (50, 2000, 49152):
        ft, base = _realistic(rng, vocab)
        ks = sorted({k for k in (1, 2, 5, 10, 20, 50, 100, 200, 1000, 5000, vocab) if k <= vocab})
        rows = [width_cost(ft, base, k, kind) for k in ks]  # top sets of a fixed pair are nested in k
        highs = [h for _, _, h in rows]
        widths = [h - lo for _, lo, h in rows]
        assert all(b <= a + TOL for a, b in zip(highs, highs[1:])), highs
        assert all(b <= a + TOL for a, b in zip(widths, widths[1:])), widths
        assert widths[-1] == 0.0


def test_the_upper_bound_is_the_formula_not_a_spread_tail():
    """k = 20 of 49152 on a near-identical pair: JS's high is the shared tokens' terms plus ln 2 / 2 times the
    mass outside them, and the low end sits at or under the exact value."""
    rng = np.random.default_rng(11)
    vocab = 49152
    ft, base = _realistic(rng, vocab, scale=0.05)
    ft_ids, ft_lp = _returned(ft, 20, rng)
    base_ids, base_lp = _returned(base, 20, rng)
    low, high = topk_bounds(ft_ids, ft_lp, base_ids, base_lp, vocab_size=vocab)["js"]
    shared = np.intersect1d(ft_ids, base_ids)
    p, q = np.exp(ft[shared]), np.exp(base[shared])
    m = (p + q) / 2
    known = 0.5 * np.sum(p * np.log(p / m) + q * np.log(q / m))
    formula = known + 0.5 * LN2 * ((1 - p.sum()) + (1 - q.sum()))
    exact = float(_exact(base, ft, ("js",))["js"])
    assert math.isfinite(high)
    assert high <= formula + TOL
    assert low <= exact + TOL <= high + 2 * TOL


def test_ties_at_the_kth_value_and_minus_inf():
    vocab = 6
    ft = _log(np.array([0.4, 0.2, 0.2, 0.2, 0.0, 0.0]))
    base = _log(np.array([0.25, 0.25, 0.25, 0.25, 0.0, 0.0]))
    exact = _exact(base, ft)
    for ft_ids in ([0, 1], [0, 3], [0, 2, 3, 1, 5]):
        for base_ids in ([2], [3, 1], [4, 0, 1, 2, 3]):
            got = topk_bounds(ft_ids, ft[ft_ids], base_ids, base[base_ids], vocab_size=vocab)
            for kind in DIVERGENCES:
                assert got[kind][0] <= exact[kind] + TOL <= got[kind][1] + 2 * TOL, (ft_ids, base_ids, kind)


def test_same_and_disjoint_sets():
    vocab = 10
    ft = _log(np.array([0.5, 0.3, 0.2] + [0.0] * 7))
    base = _log(np.array([0.0] * 7 + [0.2, 0.3, 0.5]))
    got = topk_bounds([0, 1, 2], ft[:3], [7, 8, 9], base[7:], vocab_size=vocab)
    assert got["tv"] == (1.0, 1.0)  # all of each side's mass sits where the other side has none
    assert got["js"] == (pytest.approx(LN2), pytest.approx(LN2))
    # The exact KL is inf, but a missing mass of 0 is known only to rounding (SLACK): the low end is large, finite.
    assert 20 < got["kl"][0] < math.inf
    same = topk_bounds([0, 1, 2], ft[:3], [2, 0, 1], ft[[2, 0, 1]], vocab_size=vocab)
    assert all(same[kind] == (0.0, 0.0) for kind in ("tv", "js"))
    assert same["kl"] == (0.0, math.inf)


def test_bounds_of_many_prompts():
    rng = np.random.default_rng(5)
    rows, singles = [], []
    for k in (3, 8, 5):
        ft, base = _realistic(rng, 100)
        row = (*_returned(ft, k, rng), *_returned(base, k + 1, rng))
        rows.append(row)
        singles.append(topk_bounds(*row, vocab_size=100, kinds=("tv",))["tv"])
    got = bounds_of(rows, kind="tv", vocab_size=100)
    assert isinstance(got, DivergenceBounds)
    assert got.k == 3
    assert got.low.dtype == np.float64
    np.testing.assert_array_equal(got.low, [s[0] for s in singles])
    np.testing.assert_array_equal(got.high, [s[1] for s in singles])
    assert bounds_of([], kind="js", vocab_size=100).k == 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([0, 1], [-1.0], [0], [-1.0]), "2 token ids but 1 log-probabilities"),
        (([0, 0], [-1.0, -1.0], [0], [-1.0]), "token id 0 is returned more than once"),
        (([0], [-1.0], [10], [-1.0]), r"token id 10 is outside \[0, 10\)"),
        (([-1], [-1.0], [0], [-1.0]), r"token id -1 is outside \[0, 10\)"),
        (([0], [-1.0], [1], [1e-3]), "log-probability 0.001 > 0"),
        (([0, 1], [-0.1, -0.1], [1], [-1.0]), "sum to .* > 1"),
        (([0], [float("nan")], [1], [-1.0]), "NaN"),
        (([0.5], [-1.0], [1], [-1.0]), "must be integers"),
        (([[0]], [[-1.0]], [1], [-1.0]), "must be 1-D"),
    ],
)
def test_invalid_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        topk_bounds(*args, vocab_size=10)


def test_invalid_kind_vocab_and_rows():
    with pytest.raises(ValueError, match="unknown divergence 'hellinger'"):
        topk_bounds([0], [0.0], [0], [0.0], vocab_size=1, kinds=("hellinger",))
    with pytest.raises(ValueError, match="vocab_size must be >= 1"):
        topk_bounds([], [], [], [], vocab_size=0)
    with pytest.raises(ValueError, match="row 1: base: token id 0 is returned more than once"):
        bounds_of([([0], [-1.0], [0], [-1.0]), ([0], [-1.0], [0, 0], [-1.0, -1.0])], kind="js", vocab_size=10)
    with pytest.raises(ValueError, match="row 0: expected"):
        bounds_of([([0], [-1.0])], kind="js", vocab_size=10)


def test_rounding_tolerated():
    """Returned mass a hair over 1 and a log-probability a hair over 0 are rounding, not errors."""
    got = topk_bounds([0, 1], [-1e-9, -30.0], [0], [2e-7], vocab_size=3)
    assert got["tv"][0] <= got["tv"][1]
