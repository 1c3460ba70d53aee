"""delta_kl on the dummy backend: the behaviour that shows the CI is informative."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from pytest_sway import BASE, DummyBackend, Variant, run_probe

PROMPTS = [f"Question {i}: what changed in release {i * 7}?" for i in range(32)]


def test_more_prompts_give_a_narrower_interval_around_a_positive_estimate():
    backend = DummyBackend()
    few = run_probe("delta_kl", backend, prompts=PROMPTS[:4])
    many = run_probe("delta_kl", backend, prompts=PROMPTS)
    assert few.estimate > 0 and many.estimate > 0
    assert few.ci.low <= few.estimate <= few.ci.high
    assert many.ci.low <= many.estimate <= many.ci.high
    assert few.ci.width >= 1.5 * many.ci.width
    assert many.ci.low > 0


def test_no_effect_gives_exactly_zero_and_an_interval_that_reflects_n():
    result = run_probe("delta_kl", DummyBackend(effect=0), prompts=PROMPTS)
    assert result.estimate == 0.0
    assert np.all(result.values == 0.0)
    # n values all 0 on [0, ln 2]: the mean is below ln 2 * (1 - (alpha / 2) ** (1 / n)), not 0.
    n = len(PROMPTS)
    assert result.method == "all-equal"
    assert tuple(result.ci) == pytest.approx((0.0, math.log(2) * (1 - 0.025 ** (1 / n))))


@pytest.mark.parametrize("kind", ["js", "kl", "reverse_kl", "tv"])
def test_a_larger_effect_moves_every_prompt_further(kind):
    small = run_probe("delta_kl", DummyBackend(effect=0.2), prompts=PROMPTS, divergence=kind)
    large = run_probe("delta_kl", DummyBackend(effect=1.0), prompts=PROMPTS, divergence=kind)
    assert np.all(large.values > small.values)
    assert large.ci.low > small.ci.high


def test_prompts_differ_and_values_follow_the_order_given():
    backend = DummyBackend()
    result = run_probe("delta_kl", backend, prompts=PROMPTS)
    assert len(set(result.values.round(12))) == len(PROMPTS)
    reversed_ = run_probe("delta_kl", backend, prompts=PROMPTS[::-1])
    np.testing.assert_array_equal(reversed_.values, result.values[::-1])
    assert result.items == tuple(PROMPTS)


def test_values_equal_the_divergence_of_the_dummy_distributions():
    backend = DummyBackend(effect=0.7, vocab_size=128, seed=4)
    result = run_probe("delta_kl", backend, prompts=PROMPTS[:5], divergence="kl")
    base = np.stack([backend._logprobs(p, BASE) for p in PROMPTS[:5]])
    ft = np.stack([backend._logprobs(p, Variant()) for p in PROMPTS[:5]])
    p, q = np.exp(ft), np.exp(base)
    np.testing.assert_allclose(result.values, (p * np.log(p / q)).sum(1), rtol=1e-10)
    np.testing.assert_allclose(np.exp(base).sum(1), 1.0, rtol=1e-12)


def test_dummy_is_identical_in_a_fresh_process():
    # Python's str hash is salted per process; the dummy must not depend on it.
    code = (
        "import json; from pytest_sway import DummyBackend, run_probe; "
        f"print(json.dumps(run_probe('delta_kl', DummyBackend(), prompts={PROMPTS[:6]!r}).values.tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    here = run_probe("delta_kl", DummyBackend(), prompts=PROMPTS[:6]).values
    assert json.loads(out.stdout) == here.tolist()


def test_scaled_and_null_variants():
    backend = DummyBackend()
    at = lambda v: backend.divergences(PROMPTS[:8], divergence="js", variant=v)  # noqa: E731
    assert np.all(at(Variant(scale=0.0)) == 0.0)
    half, full, more = at(Variant(scale=0.5)), at(Variant(scale=1.0)), at(Variant(scale=1.5))
    assert np.all((half > 0) & (half < full) & (full < more))
    null = at(Variant(null_seed=1))
    assert np.all(null > 0) and not np.allclose(null, full)


def test_chat_formatting_changes_the_context():
    backend = DummyBackend()
    plain = run_probe("delta_kl", backend, prompts=PROMPTS[:4])
    chat = run_probe("delta_kl", backend, prompts=PROMPTS[:4], chat=True)
    assert not np.allclose(plain.values, chat.values)


def test_js_interval_is_clipped_to_its_range():
    result = run_probe("delta_kl", DummyBackend(effect=3.0), prompts=PROMPTS[:3])
    assert result.ci.low >= 0.0 and result.ci.high <= math.log(2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(effect=-1), "effect"),
        (dict(effect=float("nan")), "effect"),
        (dict(vocab_size=1), "vocab_size"),
        (dict(seed=-2), "seed"),
    ],
)
def test_dummy_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}:"):
        DummyBackend(**kwargs)


def test_a_backend_overriding_divergences_is_measured_with_its_own_values():
    """delta_kl asks for divergences and token lists together; a subclass that scripts
    ``divergences`` (as test suites do) must still be what is measured."""
    import numpy as np

    from pytest_sway import DummyBackend, run_probe

    class Scripted(DummyBackend):
        def divergences(self, prompts, **kwargs):
            return np.array([0.01 * (i + 1) for i in range(len(prompts))])

    result = run_probe("delta_kl", Scripted(), prompts=[f"p{i}" for i in range(6)])
    assert result.values.tolist() == [0.01 * (i + 1) for i in range(6)]
    assert result.details["promoted"] or result.details["suppressed"]  # the token lists still come
