"""Every built-in probe on the dummy backend: real, prompt-dependent values, and exact zeros without an effect."""

import inspect
import math

import numpy as np
import pytest

from pytest_sway import DummyBackend, Sway, run_probe
from pytest_sway.probes import builtin_probes
from pytest_sway.probes.adapter_ablation import spearman
from pytest_sway.probes.greedy_change import edit_distance
from pytest_sway.stats.paired import tango_interval

PROMPTS = [f"Ticket {i}: my order arrived broken" for i in range(12)]
PARAMS = {
    "delta_kl": dict(prompts=PROMPTS),
    "completion_lift": dict(cases=[(p, f" refund {i}") for i, p in enumerate(PROMPTS)]),
    "perplexity_shift": dict(texts=[f"General sentence number {i} about the weather." for i in range(12)]),
    "preference_shift": dict(triples=[(p, " we are sorry", " too bad") for p in PROMPTS]),
    "adapter_ablation": dict(prompts=PROMPTS),
    "null_contrast": dict(prompts=PROMPTS),
    "greedy_change": dict(prompts=PROMPTS, max_new_tokens=2),
    "response_divergence": dict(prompts=PROMPTS, max_new_tokens=3),
    "choice_accuracy": dict(questions=[(p, [" refund", " replace", " ignore"], i % 3) for i, p in enumerate(PROMPTS)]),
}


def test_every_builtin_probe_is_covered():
    assert {p.kind for p in builtin_probes()} == set(PARAMS)


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_values_are_prompt_dependent_with_an_effect(kind):
    result = run_probe(kind, DummyBackend(), **PARAMS[kind])
    assert result.n == 12 and np.all(np.isfinite(result.values))
    if kind == "choice_accuracy":  # per-question values are -1, 0 or 1; the dummy's effect flips some answers
        assert set(result.values) <= {-1.0, 0.0, 1.0} and np.any(result.values != 0)
        assert result.ci.low <= result.estimate <= result.ci.high
    elif kind == "adapter_ablation":  # the dummy's divergence grows with scale for every prompt
        assert np.all(result.values == 1.0)
        curve = [p["mean"] for p in result.details["curve"]]
        assert curve[0] == 0.0 and all(a < b for a, b in zip(curve, curve[1:]))
    else:
        assert len(set(result.values.round(12))) > 1
        assert result.ci.low <= result.estimate <= result.ci.high


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_no_effect_gives_exactly_zero(kind):
    result = run_probe(kind, DummyBackend(effect=0), **PARAMS[kind])
    assert np.all(result.values == 0.0)
    assert result.estimate == 0.0
    assert result.support is not None  # every built-in probe declares the range of its values
    if kind == "choice_accuracy":  # Tango: no discordant question among 12 is not certainty
        assert result.ci.high == pytest.approx(-tango_interval(np.zeros(12)).low) and result.ci.low < 0
        return
    # Twelve equal values: the exact bound q = 0.025 ** (1 / 12) of the support's ends, by hand.
    assert result.method == "all-equal" and result.resamples == 0
    q = 0.025 ** (1 / result.n)
    low, high = result.support
    assert result.ci.low == (-math.inf if low == -math.inf else pytest.approx(low * (1 - q)))
    assert result.ci.high == (math.inf if high == math.inf else pytest.approx(high * (1 - q)))
    assert result.ci.high > 0  # never zero width


def test_ablation_endpoints_are_the_base_and_the_fine_tune():
    backend = DummyBackend()
    result = run_probe("adapter_ablation", backend, prompts=PROMPTS, scales=[0, 0.5, 1, 2])
    curves = np.array(result.details["divergences"])
    assert np.all(curves[:, 0] == 0.0)
    np.testing.assert_array_equal(curves[:, 2], run_probe("delta_kl", backend, prompts=PROMPTS).values)


def test_spearman_matches_scipy_and_treats_flat_curves_as_no_trend():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x = np.array([0, 0.25, 0.5, 0.75, 1.0, 1.25])
    rows = rng.normal(size=(20, 6))
    rows[3] = rows[3].round()  # ties
    want = [spearmanr(x, r).statistic for r in rows]
    np.testing.assert_allclose(spearman(x, rows), want, rtol=1e-12)
    assert spearman(x, np.zeros((1, 6)))[0] == 0.0


def test_edit_distance():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance((1, 2, 3), (1, 2, 3)) == 0
    assert edit_distance((), (4, 5)) == 2


def test_greedy_change_failure_shows_example_pairs():
    result = run_probe("greedy_change", DummyBackend(), **PARAMS["greedy_change"])
    with pytest.raises(AssertionError) as info:
        result.assert_below(0.01)
    assert "Clopper-Pearson interval" in str(info.value)
    assert "changed: 'Ticket" in str(info.value) and "-> fine-tuned" in str(info.value)


def test_preference_flip_rates_count_fixed_and_broken_triples():
    result = run_probe("preference_shift", DummyBackend(effect=2.0), **PARAMS["preference_shift"])
    base, ft = np.array(result.details["margin_base"]), np.array(result.details["margin_finetuned"])
    fixed = result.details["fixed"]
    assert fixed["of"] == int((base < 0).sum()) and fixed["count"] == int(((base < 0) & (ft > 0)).sum())
    np.testing.assert_allclose(result.values, ft - base)


def test_perplexity_details_and_windows():
    backend = DummyBackend()
    texts = [
        "The quick brown fox jumps over the lazy dog, again and again.",
        "The slow grey cat naps under the warm sun, again and again.",
        "Short text.",
    ]
    whole = run_probe("perplexity_shift", backend, texts=texts)
    assert whole.details["perplexity_ratio"] > 0 and whole.details["tokens"][0] == len(texts[0]) - 1
    windowed = run_probe("perplexity_shift", backend, texts=texts, window=10, stride=5)
    assert windowed.details["tokens"] == whole.details["tokens"]  # every token scored once either way
    assert not np.allclose(windowed.values, whole.values)  # but with less context
    with pytest.raises(ValueError, match="stride .5. must be smaller than window .5."):
        run_probe("perplexity_shift", backend, texts=texts, window=5, stride=5)


@pytest.mark.parametrize("probe", builtin_probes(), ids=lambda p: p.kind)
def test_sway_has_a_typed_method_per_builtin_probe_with_the_same_defaults(probe):
    method = getattr(Sway, probe.kind)
    signature = inspect.signature(method)
    for param in probe.params:
        assert param.name in signature.parameters
        if not param.required:
            assert signature.parameters[param.name].default == param.default, param.name
    sway = Sway(DummyBackend())
    result = method(sway, **PARAMS[probe.kind])
    assert result.kind == probe.kind
