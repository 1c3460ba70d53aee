"""Token lists on tiny real models: against softmaxes computed with plain transformers + peft,
reused from the session memo, read back through the base-output cache, and paid for by
delta_kl only."""

import numpy as np
import pytest
from conftest import CONTROL_PROMPTS, TARGET_PROMPTS

from pytest_sway import FINETUNED, Variant, run_probe
from pytest_sway.backends.prompts import PromptEncoder

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
from pytest_sway.backends.hf import HFBackend  # noqa: E402

PROMPTS = list(TARGET_PROMPTS + CONTROL_PROMPTS)


def _next_token_probs(tokenizer, model, prompt):
    """p(next token | prompt): one unpadded forward pass, float64 softmax."""
    with torch.no_grad():
        logits = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1].double()
    return logits.softmax(-1).numpy()


def test_lists_equal_an_independent_softmax(backend, raw):
    tokenizer, base, tuned = raw
    result = run_probe("delta_kl", backend, prompts=PROMPTS)
    for prompt, entry in zip(PROMPTS, result.details["token_changes"]):
        p_base = _next_token_probs(tokenizer, base, prompt)
        p_ft = _next_token_probs(tokenizer, tuned, prompt)
        change = p_ft - p_base
        order = np.argsort(-change, kind="stable")
        up, down = order[change[order] > 0], order[::-1][change[order[::-1]] < 0]  # rose; fell (a few may)
        raised, lowered = up[:5], down[:5]
        for got, ids in ((entry["raised"], raised), (entry["lowered"], lowered)):
            listed = np.array([t["id"] for t in got])
            # Rank by rank, the listed token's change (computed here) is the independent ranking's:
            # the same tokens, except that two tokens whose changes tie within float32 noise (about
            # 1e-7 of a probability, relative) may come in either order or swap at the last rank.
            assert len(set(listed.tolist())) == len(listed) == len(ids)
            np.testing.assert_allclose(change[listed], change[ids], rtol=1e-4, atol=1e-9)
            np.testing.assert_allclose([t["p_base"] for t in got], p_base[listed], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose([t["p_ft"] for t in got], p_ft[listed], rtol=1e-5, atol=1e-7)
            assert [t["token"] for t in got] == [tokenizer.decode([i]) for i in listed]
    # Over the prompts: how many prompts' lists hold each token, counted here again.
    for side, key in (("raised", "promoted"), ("lowered", "suppressed")):
        counts = {}
        for entry in result.details["token_changes"]:
            for t in entry[side]:
                counts[t["id"]] = counts.get(t["id"], 0) + 1
        listed = result.details[key]
        assert len(listed) == min(10, len(counts))
        assert all(e["count"] == counts[e["id"]] for e in listed)
        assert listed[0]["count"] == max(counts.values())


def test_the_memo_keeps_the_lists_with_the_divergences(tiny):
    model, adapter = tiny["llama"]
    backend = HFBackend(model, adapter=adapter)
    first = run_probe("delta_kl", backend, prompts=PROMPTS)
    again = run_probe("delta_kl", backend, prompts=PROMPTS[::-1], divergence="tv")  # another test, same prompts
    assert again.details["token_changes"] == first.details["token_changes"][::-1]
    assert backend.forwarded == {("next", "base"): len(PROMPTS), ("next", "fine-tuned"): len(PROMPTS)}
    # Divergences asked without lists (adapter_ablation, null_contrast) are served from the same entries.
    backend.divergences(PROMPTS, divergence="kl")
    assert sum(backend.forwarded.values()) == 2 * len(PROMPTS)


def test_divergences_memoised_without_lists_cost_one_more_finetuned_pass(tiny):
    model, adapter = tiny["llama"]
    backend = HFBackend(model, adapter=adapter)
    values = backend.divergences(PROMPTS, divergence="js")
    both, tops = backend.divergences_and_tokens(PROMPTS, divergence="js", top_tokens=5)
    tops = list(tops)  # made as they are read, once
    np.testing.assert_array_equal(both, values)
    assert backend.forwarded == {("next", "base"): len(PROMPTS), ("next", "fine-tuned"): 2 * len(PROMPTS)}
    # Fewer tokens than were kept: no pass; more: the variant again.
    _, three = backend.divergences_and_tokens(PROMPTS, divergence="js", top_tokens=3)
    assert [t.raised for t in three] == [t.raised[:3] for t in tops]
    assert backend.forwarded[("next", "fine-tuned")] == 2 * len(PROMPTS)
    _, seven = backend.divergences_and_tokens(PROMPTS, divergence="js", top_tokens=7)
    assert [t.raised[:5] for t in seven] == [t.raised for t in tops]
    assert backend.forwarded[("next", "fine-tuned")] == 3 * len(PROMPTS)
    assert backend.forwarded[("next", "base")] == len(PROMPTS)  # the base's logits stayed in the store


def test_other_probes_do_not_compute_lists(tiny):
    model, adapter = tiny["llama"]
    backend = HFBackend(model, adapter=adapter)
    run_probe("adapter_ablation", backend, prompts=PROMPTS[:8], scales=[0, 0.5, 1])
    run_probe("null_contrast", backend, prompts=PROMPTS[:8], seeds=1)
    assert not [key for key in backend._memo.answers if key[0] == "top_tokens"]
    run_probe("delta_kl", backend, prompts=PROMPTS[:8])
    assert {key[1] for key in backend._memo.answers if key[0] == "top_tokens"} == {FINETUNED}


def test_the_base_variant_and_scaled_variants(tiny):
    model, adapter = tiny["llama"]
    backend = HFBackend(model, adapter=adapter)
    values, tops = backend.divergences_and_tokens(PROMPTS[:4], divergence="js", top_tokens=5, variant=Variant(0.0))
    tops = list(tops)
    assert len(tops) == 4 and np.all(values == 0) and all(t.raised == t.lowered == () for t in tops)
    _, half = backend.divergences_and_tokens(PROMPTS[:4], divergence="js", top_tokens=5, variant=Variant(0.5))
    _, full = backend.divergences_and_tokens(PROMPTS[:4], divergence="js", top_tokens=5)
    # Half the adapter moves the top token less far than the whole adapter does.
    for h, f in zip(half, full):
        top = {c.id: c for c in h.raised}.get(f.raised[0].id)
        assert top is None or top.change < f.raised[0].change
    with pytest.raises(ValueError, match="top_tokens"):
        backend.divergences_and_tokens(PROMPTS[:4], divergence="js", top_tokens=0)


def test_the_base_output_cache_gives_the_same_lists_without_base_passes(tiny, tmp_path):
    model, adapter = tiny["llama"]
    first = run_probe("delta_kl", HFBackend(model, adapter=adapter, cache_dir=str(tmp_path)), prompts=PROMPTS)
    rerun = HFBackend(model, adapter=adapter, cache_dir=str(tmp_path))
    again = run_probe("delta_kl", rerun, prompts=PROMPTS)
    assert rerun.forwarded[("next", "base")] == 0 and rerun.cache.hits == len(PROMPTS)
    assert again.details["token_changes"] == first.details["token_changes"]


def test_sentencepiece_pieces_keep_their_leading_space():
    class Tokenizer:  # decodes a lone "\u2581word" without its space, as SentencePiece does
        pieces = {5: "\u2581refund", 6: "ing", 7: "<0x0A>"}

        def batch_decode(self, seqs, **kwargs):
            return [self.pieces[s[0]].lstrip("\u2581").replace("<0x0A>", "\n") for s in seqs]

        def convert_ids_to_tokens(self, ids):
            return [self.pieces[i] for i in ids]

    encoder = PromptEncoder(Tokenizer(), model_name="sentencepiece", context_length=None)
    assert encoder.token_texts({5, 6, 7}) == {5: " refund", 6: "ing", 7: "\n"}
