"""Divergences against independent float64 formulas, on numpy and on torch."""

import math

import numpy as np
import pytest
from scipy.special import rel_entr

from pytest_sway.backends.divergence import DIVERGENCES, divergence


def _random_logprobs(rng, rows, vocab, *, sharp):
    """Rows of log-probabilities; ``sharp`` rows put almost all mass on few tokens,
    leaving probabilities down to ~1e-30."""
    logits = rng.normal(0.0, 8.0 if sharp else 1.0, (rows, vocab))
    return (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )


def _reference(p, q, kind):
    """Straight from the definitions, with scipy's rel_entr for x log(x/y)."""
    if kind == "kl":
        return rel_entr(p, q).sum(-1)
    if kind == "reverse_kl":
        return rel_entr(q, p).sum(-1)
    if kind == "tv":
        return 0.5 * np.abs(p - q).sum(-1)
    m = (p + q) / 2
    return 0.5 * rel_entr(p, m).sum(-1) + 0.5 * rel_entr(q, m).sum(-1)


@pytest.fixture(params=[False, True], ids=["smooth", "sharp"])
def pair(request):
    rng = np.random.default_rng(3)
    return (
        _random_logprobs(rng, 20, 3000, sharp=request.param),
        _random_logprobs(rng, 20, 3000, sharp=request.param),
    )


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_matches_the_definition(pair, kind):
    base, ft = pair
    got = divergence(base, ft, kind, np)
    want = _reference(np.exp(ft), np.exp(base), kind)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_bounds_and_symmetry(pair):
    base, ft = pair
    js = divergence(base, ft, "js", np)
    tv = divergence(base, ft, "tv", np)
    assert np.all((js >= 0) & (js <= math.log(2)))
    assert np.all((tv >= 0) & (tv <= 1))
    np.testing.assert_allclose(js, divergence(ft, base, "js", np), rtol=1e-12)
    np.testing.assert_allclose(divergence(base, ft, "kl", np), divergence(ft, base, "reverse_kl", np), rtol=1e-12)


def test_disjoint_supports_reach_the_upper_bounds():
    with np.errstate(divide="ignore", invalid="ignore"):
        base = np.log(np.array([[0.5, 0.5, 0.0, 0.0]]))
        ft = np.log(np.array([[0.0, 0.0, 0.5, 0.5]]))
        assert divergence(base, ft, "js", np)[0] == pytest.approx(math.log(2))
        assert divergence(base, ft, "tv", np)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_identical_distributions_give_exactly_zero(pair, kind):
    base, _ = pair
    assert np.all(divergence(base, base.copy(), kind, np) == 0.0)


def test_full_vocabulary_not_top_k():
    # Two distributions that agree on their top tokens and differ only in a
    # long tail: a top-k comparison would call them identical.
    vocab = 50_000
    base = np.full(vocab, -20.0)
    base[:10] = 0.0
    ft = base.copy()
    ft[5000:] = -12.0
    norm = lambda x: x - np.log(np.exp(x).sum())  # noqa: E731
    js = divergence(norm(base)[None], norm(ft)[None], "js", np)[0]
    assert js == pytest.approx(_reference(np.exp(norm(ft)), np.exp(norm(base)), "js"), rel=1e-9)
    assert js > 1e-3


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_torch_gives_the_numpy_answer(pair, kind):
    torch = pytest.importorskip("torch")
    base, ft = pair
    got = divergence(torch.from_numpy(base), torch.from_numpy(ft), kind, torch).numpy()
    np.testing.assert_allclose(got, divergence(base, ft, kind, np), rtol=1e-12, atol=1e-15)


def test_all_divergences_at_once_are_bit_identical_to_each_alone(pair):
    torch = pytest.importorskip("torch")
    from pytest_sway.backends.divergence import all_divergences

    base, ft = pair
    for xp, a, b in ((np, base, ft), (torch, torch.from_numpy(base), torch.from_numpy(ft))):
        together = all_divergences(a, b, xp)
        assert list(together) == list(DIVERGENCES)
        for kind in DIVERGENCES:
            alone = divergence(a, b, kind, xp)
            assert np.array_equal(np.asarray(together[kind]), np.asarray(alone))
