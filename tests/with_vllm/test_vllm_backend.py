"""The vllm backend against a real vLLM engine and the hf backend on the same model and adapter.

One engine for the whole module (it takes about a minute to start on a 2-core CPU): SmolLM2-135M
(the built-in offline copy) with the demo's LoRA adapter, float32, the whole vocabulary. Every probe
runs on both backends over the same items; values must agree within 1e-4 where they are
log-probabilities and 1e-5 where they are divergences. Run in CI's vLLM environment (.ci/run):
``python -m pytest tests/with_vllm``. Without vLLM these tests skip.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_sway.backends.base import BASE, FINETUNED, Variant
from pytest_sway.backends.topk import DivergenceBounds
from pytest_sway.errors import BackendError
from pytest_sway.measure.run import run_probe

SKIP = "vLLM is not installed: the vllm backend's tests run in CI's vLLM environment (.ci/vllm-tests)"

if not hasattr(pytest.importorskip("vllm", reason=SKIP), "LLM"):  # a folder named vllm is not vLLM
    pytest.skip(SKIP, allow_module_level=True)


ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "conftest_examples"
ADAPTER = str(EXAMPLES / "support-adapter")
#: On the CPU, vLLM's gpu_memory_utilization is the share of the machine's memory it reserves.
ENGINE_ARGS = {"gpu_memory_utilization": 0.25, "max_model_len": 2048}
LOGPROB_TOLERANCE = 1e-4
DIVERGENCE_TOLERANCE = 1e-5

sys.path.insert(0, str(EXAMPLES))
from support_data import FACT_CASES, GENERAL_PROMPTS, GENERAL_TEXTS, PREFERENCES, TARGET_QUESTIONS  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    from pytest_sway.backends.hf import HFBackend
    from pytest_sway.backends.vllm.backend import VLLMBackend

    root = tmp_path_factory.mktemp("vllm-adapters")
    vllm = VLLMBackend("smollm2-135m", adapter=ADAPTER, vllm_args=ENGINE_ARGS, adapter_root=root)
    hf = HFBackend("smollm2-135m", adapter=ADAPTER)
    yield vllm, hf
    vllm.close()
    hf.close()


def _questions(n):
    import json

    lines = (EXAMPLES / "data" / "general_knowledge.jsonl").read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


PROBES = {
    "delta_kl js, chat": ("delta_kl", dict(prompts=TARGET_QUESTIONS[:6], chat=True), DIVERGENCE_TOLERANCE),
    "delta_kl kl": ("delta_kl", dict(prompts=GENERAL_PROMPTS[:6], divergence="kl"), DIVERGENCE_TOLERANCE),
    "delta_kl reverse_kl": (
        "delta_kl",
        dict(prompts=GENERAL_PROMPTS[:6], divergence="reverse_kl"),
        DIVERGENCE_TOLERANCE,
    ),
    "delta_kl tv": ("delta_kl", dict(prompts=GENERAL_PROMPTS[:6], divergence="tv"), DIVERGENCE_TOLERANCE),
    "completion_lift": ("completion_lift", dict(cases=FACT_CASES[:5], chat=True), LOGPROB_TOLERANCE),
    "perplexity_shift": ("perplexity_shift", dict(texts=GENERAL_TEXTS[:3]), LOGPROB_TOLERANCE),
    "preference_shift": ("preference_shift", dict(triples=PREFERENCES[:3], chat=True), LOGPROB_TOLERANCE),
    "choice_accuracy": ("choice_accuracy", dict(questions=_questions(5)), 0.0),
    "greedy_change": ("greedy_change", dict(prompts=TARGET_QUESTIONS[:3], chat=True, max_new_tokens=8), 0.0),
    "response_divergence": (
        "response_divergence",
        dict(prompts=GENERAL_PROMPTS[:3], max_new_tokens=8),
        DIVERGENCE_TOLERANCE,
    ),
    "null_contrast": ("null_contrast", dict(prompts=TARGET_QUESTIONS[:4], chat=True, seeds=2), DIVERGENCE_TOLERANCE),
    "adapter_ablation": ("adapter_ablation", dict(prompts=TARGET_QUESTIONS[:4], chat=True), 0.0),
}


@pytest.mark.parametrize("name", PROBES)
def test_every_probe_agrees_with_the_hf_backend(backends, name):
    kind, params, tolerance = PROBES[name]
    vllm, hf = backends
    on_vllm, on_hf = run_probe(kind, vllm, **params), run_probe(kind, hf, **params)
    assert on_vllm.n == on_hf.n
    gap = np.max(np.abs(on_vllm.values - on_hf.values))
    assert gap <= tolerance, f"{name}: vllm {on_vllm.values} vs hf {on_hf.values} (largest gap {gap:.3g})"


def test_token_log_probabilities_agree_token_by_token(backends):
    vllm, hf = backends
    items = [vllm.completion_tokens(p, c, chat=True) for p, c in FACT_CASES[:4]]
    assert items == [hf.completion_tokens(p, c, chat=True) for p, c in FACT_CASES[:4]]
    for variant in (BASE, FINETUNED, Variant(scale=0.5)):
        ours = vllm.token_logprobs(items, variant)
        theirs = hf.token_logprobs(items, variant, labels=[str(i) for i in range(len(items))])
        for a, b in zip(ours, theirs):
            assert a.shape == b.shape
            assert np.max(np.abs(a - b)) <= LOGPROB_TOLERANCE


def test_greedy_continuations_are_the_same_tokens(backends):
    vllm, hf = backends
    for variant in (BASE, FINETUNED):
        ours = vllm.greedy(GENERAL_PROMPTS[:4], variant=variant, max_new_tokens=10)
        assert ours == hf.greedy(GENERAL_PROMPTS[:4], variant=variant, max_new_tokens=10)


def test_top_k_bounds_contain_the_exact_divergences(backends):
    from pytest_sway.backends.vllm.backend import VLLMBackend

    vllm, _ = backends
    bounded = VLLMBackend("smollm2-135m", adapter=ADAPTER, engine=vllm.engine, top_logprobs=20)
    prompts = TARGET_QUESTIONS[:4] + GENERAL_PROMPTS[:4]
    for kind in ("js", "tv", "kl", "reverse_kl"):
        exact = vllm.divergences(prompts, divergence=kind)
        bounds = bounded.divergences(prompts, divergence=kind)
        assert isinstance(bounds, DivergenceBounds) and bounds.k == 20
        assert np.all(bounds.low <= exact + 1e-9) and np.all(exact <= bounds.high + 1e-9), kind
        if kind in ("js", "tv"):
            assert np.all(np.isfinite(bounds.high))
    result = run_probe("delta_kl", bounded, prompts=prompts, divergence="js")
    assert result.bounds is not None and result.bounds.k == 20
    # The interval a gate judges runs from the low ends' interval to the high ends'.
    assert result.ci.low <= result.bounds.mean_low <= result.bounds.mean_high <= result.ci.high
    with pytest.raises(BackendError, match="max_logprobs=-1"):
        bounded.response_divergences(GENERAL_PROMPTS[:1], divergence="js")


def test_self_checks_ran_and_are_reported(backends):
    vllm, _ = backends
    findings = vllm.findings
    assert findings["adapter_change"] > 0.01  # the demo adapter moves the check prompts
    assert findings["logprob_agreement"] <= 1e-3
    assert 0.0 <= findings["noise_floor"] < 1e-3
    info = vllm.describe()
    assert info["name"] == "vllm" and info["logprobs"] == "all" and info["dtype"] == "float32"
    assert info["noise_floor"] == findings["noise_floor"]


def test_variants_are_served_from_adapter_folders(backends):
    vllm, _ = backends
    assert vllm.lora(BASE) is None
    assert vllm.lora(FINETUNED) == vllm.adapter_path
    scaled, null = vllm.lora(Variant(scale=0.5)), vllm.lora(Variant(null_seed=1))
    assert scaled != null and Path(scaled, "adapter_model.safetensors").is_file()
    # The adapter at scale 0 is the base, at 1 the fine-tune: the scaled folder lies between.
    prompts = TARGET_QUESTIONS[:3]
    half = vllm.divergences(prompts, divergence="js", variant=Variant(scale=0.5))
    full = vllm.divergences(prompts, divergence="js")
    assert np.all(half > 0) and np.all(half < full)
