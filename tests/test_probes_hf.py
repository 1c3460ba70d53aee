"""Every built-in probe on tiny real models, against independent computations from raw logits."""

import numpy as np
import pytest
from conftest import CONTROL_PROMPTS, TARGET_PROMPTS, TARGET_TEXTS

from pytest_sway import FINETUNED, run_probe
from pytest_sway.backends.base import scoring_windows
from pytest_sway.errors import BackendError

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
from pytest_sway.backends.hf import HFBackend  # noqa: E402


def _logprobs(model, ids):
    """log p(ids[j] | ids[:j]) for j >= 1: one unpadded forward, float64 log-softmax."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    return logits.log_softmax(-1)[:-1].gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1).numpy()


CASES = [(t.rsplit(" ", 2)[0], " " + " ".join(t.rsplit(" ", 2)[1:])) for t in TARGET_TEXTS[:6]] + [
    ("The capital of France is", " Paris."),
    ("Water boils at one hundred", " degrees Celsius."),
]


def _completion_reference(tokenizer, model, prompt, completion):
    """Score the tokens of prompt + completion that cover the completion's characters."""
    enc = tokenizer(prompt + completion, return_offsets_mapping=True)
    ids = enc["input_ids"]
    first = next(i for i, (lo, hi) in enumerate(enc["offset_mapping"]) if hi > len(prompt))
    return _logprobs(model, ids)[first - 1 :]


def test_completion_lift_equals_raw_logits(backend, raw):
    tokenizer, base, tuned = raw
    for per_token in (True, False):
        got = run_probe("completion_lift", backend, cases=CASES, per_token=per_token).values
        want = []
        for prompt, completion in CASES:
            ft = _completion_reference(tokenizer, tuned, prompt, completion)
            b = _completion_reference(tokenizer, base, prompt, completion)
            want.append((ft.sum() - b.sum()) / (len(ft) if per_token else 1))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_the_adapter_learned_its_facts(backend):
    learned = run_probe("completion_lift", backend, cases=CASES[:6])
    assert learned.ci.low > 0.5  # nats per token more likely


def test_a_prompt_ending_in_a_space_scores_the_merged_token(backend):
    tokenizer = backend.tokenizer
    prompt, completion = "Our refund window is ", "thirty days"
    full = tokenizer("Our refund window is thirty days")["input_ids"]
    alone = tokenizer(prompt)["input_ids"]
    # The tokenizer merges the prompt's trailing space into the completion's first word ...
    assert full[: len(alone)] != alone
    ids, start = backend.completion_tokens(prompt, completion, chat=False)
    assert list(ids) == full
    # ... so that merged token is scored, and nothing before it: exactly " thirty days".
    assert tokenizer.decode(ids[start:]) == " thirty days"
    assert tokenizer.decode(ids[:start]).endswith("Our refund window is")
    # Cutting at len(prompt tokens) would have scored the wrong tokens.
    assert tokenizer.decode(full[len(alone) :]) != " thirty days"


def test_perplexity_shift_equals_raw_logits_and_scores_every_token_with_context(backend, raw, arch):
    tokenizer, base, tuned = raw
    texts = list(CONTROL_PROMPTS)
    result = run_probe("perplexity_shift", backend, texts=texts)
    want, counts = [], []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        ft, b = _logprobs(tuned, ids), _logprobs(base, ids)
        want.append(-ft.mean() + b.mean())
        counts.append(len(ids) - 1)
        plain = tokenizer(text, add_special_tokens=False)["input_ids"]
        # Llama-style: a BOS token is added, so every text token is scored; GPT-2-style: all but the first.
        assert len(ids) - 1 == (len(plain) if arch == "llama" else len(plain) - 1)
    np.testing.assert_allclose(result.values, want, rtol=1e-4, atol=1e-6)
    assert result.details["tokens"] == counts
    ratio = np.exp(
        (
            -sum(_logprobs(tuned, tokenizer(t)["input_ids"]).sum() for t in texts)
            + sum(_logprobs(base, tokenizer(t)["input_ids"]).sum() for t in texts)
        )
        / sum(counts)
    )
    assert result.details["perplexity_ratio"] == pytest.approx(ratio, rel=1e-5)


def test_perplexity_windows_for_text_longer_than_the_window(backend, raw):
    tokenizer, base, tuned = raw
    text = " ".join(CONTROL_PROMPTS)
    ids = tokenizer(text)["input_ids"]
    window, stride = 12, 5
    assert len(ids) > 3 * window
    result = run_probe("perplexity_shift", backend, texts=[text, CONTROL_PROMPTS[0]], window=window, stride=stride)
    scored = {"ft": [], "base": []}
    for begin, end, score_from in scoring_windows(len(ids), window, stride):
        for name, model in (("ft", tuned), ("base", base)):
            scored[name].extend(_logprobs(model, ids[begin:end])[score_from - begin - 1 :])
    assert len(scored["ft"]) == len(ids) - 1 == result.details["tokens"][0]
    assert result.values[0] == pytest.approx(-np.mean(scored["ft"]) + np.mean(scored["base"]), rel=1e-4, abs=1e-6)


def test_preference_shift_equals_raw_logits(backend, raw):
    tokenizer, base, tuned = raw
    triples = [(p, c, " the weather is nice.") for p, c in CASES]
    result = run_probe("preference_shift", backend, triples=triples)
    want = []
    for prompt, chosen, rejected in triples:
        margin = {}
        for name, model in (("ft", tuned), ("base", base)):
            margin[name] = (
                _completion_reference(tokenizer, model, prompt, chosen).sum()
                - _completion_reference(tokenizer, model, prompt, rejected).sum()
            )
        want.append(margin["ft"] - margin["base"])
    np.testing.assert_allclose(result.values, want, rtol=1e-4, atol=1e-5)
    facts = run_probe("preference_shift", backend, triples=triples[:6])
    assert facts.ci.low > 0  # the adapter prefers its facts over a generic reply more than the base did


def test_adapter_ablation_endpoints_and_trend(backend):
    prompts = list(TARGET_PROMPTS)
    result = run_probe("adapter_ablation", backend, prompts=prompts)
    curves = np.array(result.details["divergences"])
    assert np.all(curves[:, 0] == 0.0)  # scale 0 is the base, exactly
    np.testing.assert_array_equal(curves[:, 4], run_probe("delta_kl", backend, prompts=prompts).values)
    # Divergence grows with the adapter's strength on its targets: rank correlations at (or piled at) 1, whose
    # interval over 8 prompts is the all-equal bound (-1 + 2 * 0.025 ** (1 / 8) = 0.26) or the betting one.
    assert result.estimate > 0.95 and result.method in ("all-equal", "betting") and result.ci.low > 0.2
    means = [p["mean"] for p in result.details["curve"]]
    assert means == sorted(means)


def test_adapter_scaling_through_the_model_matches_disabled_and_restores(tiny, arch):
    from pytest_sway import BASE, Variant

    model, adapter = tiny[arch]
    backend = HFBackend(model, adapter=adapter)
    seqs = backend.encode_prompts(TARGET_PROMPTS, chat=False)
    # Scale 0 normalises to the base variant; push a genuinely scaled pass through peft too.
    backend._memo.clear()
    before = torch.stack(backend.next_token_logits(seqs, FINETUNED, labels=TARGET_PROMPTS))
    disabled = torch.stack(backend.next_token_logits(seqs, BASE, labels=TARGET_PROMPTS))
    tiny_scale = torch.stack(backend.next_token_logits(seqs, Variant(scale=1e-30), labels=TARGET_PROMPTS))
    torch.testing.assert_close(tiny_scale, disabled, rtol=0, atol=1e-5)
    backend._memo.clear()
    after = torch.stack(backend.next_token_logits(seqs, FINETUNED, labels=TARGET_PROMPTS))
    assert torch.equal(before, after)


def test_null_contrast_restores_the_adapter_and_matches_update_norms(tiny, arch):
    from pytest_sway.backends.hf.null_adapter import (
        _lora_layers,
        null_adapter,
        update_norm,
    )

    model, adapter = tiny[arch]
    backend = HFBackend(model, adapter=adapter)
    backend._memo.clear()
    before = backend.divergences(TARGET_PROMPTS, divergence="js")
    layers = _lora_layers(backend.peft_model)
    trained = [update_norm(layer.lora_A[a].weight, layer.lora_B[a].weight) for _, layer, a in layers]
    with null_adapter(backend.peft_model, seed=1):
        nulls = [update_norm(layer.lora_A[a].weight, layer.lora_B[a].weight) for _, layer, a in layers]
        direct = [
            torch.linalg.matrix_norm(layer.lora_B[a].weight @ layer.lora_A[a].weight).item() for _, layer, a in layers
        ]
    np.testing.assert_allclose(nulls, trained, rtol=1e-5)
    np.testing.assert_allclose(direct, trained, rtol=1e-4)
    result = run_probe("null_contrast", backend, prompts=TARGET_PROMPTS)
    assert result.ci.low > 0.1  # the trained adapter moves its targets far more than chance
    assert result.details["null_mean"] < result.details["adapter_mean"]
    backend._memo.clear()
    np.testing.assert_array_equal(backend.divergences(TARGET_PROMPTS, divergence="js"), before)


def test_null_weights_are_restored_after_an_error(tiny):
    from pytest_sway import Variant

    model, adapter = tiny["llama"]
    backend = HFBackend(model, adapter=adapter)
    lora = lambda: {k: v.clone() for k, v in backend.peft_model.state_dict().items() if "lora_" in k}  # noqa: E731
    trained = lora()
    swapped = {}

    def fail_inside_the_null_adapter():
        with backend._passes.variant(Variant(null_seed=2)):
            swapped.update(lora())
            raise RuntimeError("boom inside the null adapter")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside_the_null_adapter()
    assert not any(torch.equal(trained[k], swapped[k]) for k in trained)
    restored = lora()
    assert all(torch.equal(trained[k], restored[k]) for k in trained)


def test_null_contrast_and_ablation_need_an_adapter(tiny):
    model, _ = tiny["llama"]
    backend = HFBackend(model, finetuned=model)
    for kind in ("null_contrast", "adapter_ablation"):
        with pytest.raises(BackendError, match="needs a LoRA adapter .--sway-adapter.*fully fine-tuned checkpoint"):
            run_probe(kind, backend, prompts=list(TARGET_PROMPTS))


def test_greedy_change_equals_a_manual_greedy_loop(backend, raw):
    tokenizer, base, tuned = raw
    prompts = list(TARGET_PROMPTS[:4]) + list(CONTROL_PROMPTS[:4])
    result = run_probe("greedy_change", backend, prompts=prompts, max_new_tokens=6)
    eos = tokenizer.eos_token_id
    changed = []
    for prompt in prompts:
        outs = []
        for model in (base, tuned):
            ids = tokenizer(prompt)["input_ids"]
            new = []
            with torch.no_grad():
                for _ in range(6):
                    token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
                    if token == eos:
                        break
                    new.append(token)
            outs.append(new)
        changed.append(float(outs[0] != outs[1]))
    np.testing.assert_array_equal(result.values, changed)
    assert result.estimate > 0  # the targets' continuations change
    assert result.method in ("clopper-pearson", "all-equal")


def test_a_stride_as_long_as_the_default_window_is_a_clear_error(backend):
    long_text = " ".join(CONTROL_PROMPTS * 20)  # longer than the 256-token context
    with pytest.raises(BackendError, match=r"stride=300 must be between 1 and window - 1 \(255\)"):
        run_probe("perplexity_shift", backend, texts=[long_text, CONTROL_PROMPTS[0]], stride=300)
