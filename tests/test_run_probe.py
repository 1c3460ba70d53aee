"""run_probe: parameter validation, the registry, ProbeResult and its assertions."""

import numpy as np
import pytest

from pytest_sway import (
    DummyBackend,
    Measurement,
    Param,
    Probe,
    ProbeRegistry,
    ProbeResult,
    Sway,
    run_probe,
)
from pytest_sway.errors import ProbeError
from pytest_sway.probes import default_registry
from pytest_sway.probes.base import text_list

PROMPTS = [f"prompt {i}" for i in range(12)]


@pytest.mark.parametrize(
    "kind, params, message",
    [
        (
            "delta_kI",
            dict(prompts=PROMPTS),
            "unknown probe kind 'delta_kI'; known kinds: adapter_ablation, choice_accuracy, completion_lift, delta_kl, greedy_change, null_contrast, perplexity_shift, preference_shift, response_divergence",
        ),
        ("delta_kl", dict(), "delta_kl: missing required parameter 'prompts'"),
        ("delta_kl", dict(prompts=PROMPTS, promtps=PROMPTS), "delta_kl: unknown parameter(s) 'promtps'"),
        (
            "delta_kl",
            dict(prompts="one prompt"),
            "delta_kl: parameter 'prompts': no such items file 'one prompt': a string names a JSONL file of items, relative to the test file; to give items inline, pass a list",
        ),
        (
            "delta_kl",
            dict(prompts=[]),
            "delta_kl: parameter 'prompts': got 0 item(s); a confidence interval needs at least 2",
        ),
        (
            "delta_kl",
            dict(prompts=["one"]),
            "delta_kl: parameter 'prompts': got 1 item(s); a confidence interval needs at least 2",
        ),
        ("delta_kl", dict(prompts=["a", 3]), "delta_kl: parameter 'prompts': item 1 is int 3"),
        ("delta_kl", dict(prompts=["a", ""]), "delta_kl: parameter 'prompts': item 1 is an empty string"),
        (
            "delta_kl",
            dict(prompts=PROMPTS, divergence="jsd"),
            "delta_kl: parameter 'divergence': expected one of 'js', 'kl', 'reverse_kl', 'tv', got 'jsd'",
        ),
        ("delta_kl", dict(prompts=PROMPTS, chat="yes"), "delta_kl: parameter 'chat': expected True or False"),
        ("delta_kl", dict(prompts=PROMPTS, confidence=1.5), "delta_kl: confidence: must lie strictly between 0 and 1"),
        ("delta_kl", dict(prompts=PROMPTS, resamples=-3), "delta_kl: resamples: must be at least 1"),
        ("delta_kl", dict(prompts=PROMPTS, method="wild"), "delta_kl: method: unknown CI method 'wild'"),
    ],
)
def test_bad_requests_raise_value_errors_naming_kind_and_parameter(kind, params, message):
    with pytest.raises(ValueError) as info:
        run_probe(kind, DummyBackend(), **params)
    assert message in str(info.value)


def test_result_carries_everything_asked_and_measured():
    r = run_probe("delta_kl", DummyBackend(), prompts=PROMPTS, divergence="tv", seed=5, confidence=0.9, resamples=999)
    assert isinstance(r, ProbeResult)
    assert (r.kind, r.n, r.seed, r.confidence, r.resamples, r.method) == ("delta_kl", 12, 5, 0.9, 999, "studentized")
    assert r.params == {"prompts": tuple(PROMPTS), "divergence": "tv", "chat": False}
    assert r.estimate == pytest.approx(r.values.mean())
    assert r.label == "delta_kl(tv)"
    assert r.duration_s > 0
    assert [d["prompt"] for d in r.details["most_moved"]] == [PROMPTS[i] for i in np.argsort(-r.values)[:3]]


def test_assert_messages_hold_everything_needed_to_reproduce():
    r = run_probe("delta_kl", DummyBackend(), prompts=PROMPTS, seed=42, resamples=500)
    assert r.assert_above(0.001) is r
    with pytest.raises(AssertionError) as info:
        r.assert_below(0.001)
    text = str(info.value)
    for fragment in (
        f"estimate {r.estimate:.4g}",
        f"[{r.ci.low:.4g}, {r.ci.high:.4g}]",
        "CI high <= 0.001",
        "n=12",
        "studentized",
        "500 resamples",
        "seed 42",
        "lies wholly above 0.001",
    ):
        assert fragment in text
    assert [v.outcome for _, v in r.checks] == ["passed", "failed"]


def test_a_third_party_probe_runs_like_a_built_in_one():
    class LengthBackend(DummyBackend):
        def lengths(self, texts):
            return np.array([len(t) for t in texts], dtype=float)

    probe = Probe(
        kind="prompt_length",
        doc="characters per prompt",
        params=(Param("prompts", text_list),),
        measure=lambda backend, params, bootstrap: Measurement(
            backend.lengths(params["prompts"]), items=params["prompts"]
        ),
    )
    registry = default_registry()
    registry.add(probe)
    r = run_probe("prompt_length", LengthBackend(), registry=registry, prompts=["ab", "abcd", "abcdef"])
    assert r.estimate == 4.0
    assert "prompt_length" in registry.kinds() and "delta_kl" in registry.kinds()
    with pytest.raises(ValueError, match="already registered"):
        registry.add(Probe("prompt_length", "", (), probe.measure))
    with pytest.raises(ValueError, match="unknown probe kind"):
        run_probe("prompt_length", LengthBackend(), prompts=["ab", "cd"])  # not in the default registry


def test_a_probe_returning_the_wrong_number_of_values_is_caught():
    registry = ProbeRegistry(
        [
            Probe(
                "broken",
                "",
                (Param("prompts", text_list),),
                lambda b, p, s: Measurement(np.zeros(1), items=p["prompts"]),
            )
        ]
    )
    with pytest.raises(ProbeError, match="one value per item"):
        run_probe("broken", DummyBackend(), registry=registry, prompts=["a", "b"])


def test_sway_runner_binds_seed_and_reports_each_result():
    seen = []
    sway = Sway(DummyBackend(), seed=9, resamples=999, on_result=seen.append)
    r = sway.delta_kl(PROMPTS, divergence="tv")
    assert r.seed == 9 and r.resamples == 999 and r.label == "delta_kl(tv)"
    assert sway.run("delta_kl", prompts=PROMPTS, confidence=0.8).confidence == 0.8
    assert [x.label for x in seen] == ["delta_kl(tv)", "delta_kl(js)"]
    same = run_probe("delta_kl", DummyBackend(), prompts=PROMPTS, divergence="tv", seed=9, resamples=999)
    assert r.ci == same.ci
