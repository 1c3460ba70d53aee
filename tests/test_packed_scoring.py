"""Completions that share a prompt are scored in one packed row (hf backend, passes.py and
batching.py): the same numbers as scoring each alone, a group's numbers independent of the
rest of the call, a fallback where packing cannot be trusted, and fewer tokens forwarded."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
from pytest_sway.backends.base import BASE, FINETUNED  # noqa: E402
from pytest_sway.backends.hf import HFBackend  # noqa: E402
from pytest_sway.backends.hf import passes as passes_module  # noqa: E402

#: Choices of 1 to 6 tokens on both tiny tokenizers (near character-level), several per prompt.
CHOICES = (" a", " days", " blue", " the blue", " dragons", " thirty days")
QUESTIONS = [
    ("Question: what is seventeen purple dragons tall?\nAnswer:", CHOICES[:4]),
    ("Our refund window is", CHOICES),
    ("The capital of France is", (" Paris", " a city in the north of it", " blue")),
    # A prompt ending in a space: the space merges into each choice's first token, so the
    # shared prompt is the text before it.
    ("The dragon counted eleven ", ("golden coins", "coins", "dragons and more")),
    ("A prompt with one completion only", (" and nothing else",)),
]


def _fresh(tiny, arch, **kwargs):
    model, adapter = tiny[arch]
    return HFBackend(model, adapter=adapter, **kwargs)


def _pairs(questions=QUESTIONS):
    return [(q, c) for q, choices in questions for c in choices]


def _plain_scores(model, items):
    """Each item alone through a plain forward pass: log p of its scored tokens (float64)."""
    out = []
    with torch.inference_mode():
        for ids, start in items:
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            lp = logits.log_softmax(-1)[start - 1 : len(ids) - 1]
            out.append(lp.gather(-1, torch.tensor(ids[start:]).unsqueeze(-1)).squeeze(-1).numpy())
    return out


def test_packed_scores_equal_each_completion_scored_alone(tiny, arch, raw):
    _, base, tuned = raw
    backend = _fresh(tiny, arch)
    items = [backend.completion_tokens(q, c, chat=False) for q, c in _pairs()]
    # The prompt ending in a space: every choice's first token takes the space, so the shared
    # prompt stops before it, one token short of the prompt's own tokenization.
    merged = [it for (q, _), it in zip(_pairs(), items) if q.endswith(" ")]
    assert len({ids[:start] for ids, start in merged}) == 1
    prompt_ids = backend.encode_prompts(["The dragon counted eleven "], chat=False)[0]
    assert merged[0][1] == len(prompt_ids) - 1 and merged[0][0][: merged[0][1]] == prompt_ids[:-1]
    assert {len(ids) - start for ids, start in items} >= {1, 2, 3, 4, 5, 6}
    for variant, model in ((BASE, base), (FINETUNED, tuned)):
        got = backend.token_logprobs(items, variant, labels=[repr(p) for p in _pairs()], pack=True)
        for scores, expected in zip(got, _plain_scores(model, items)):
            np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    assert backend._passes.packing_off is None and "packing" not in backend.describe()
    calls = sum(backend.forward_calls.values())
    # The last question is a single: it takes the unpacked path, the rest go packed.
    unpacked = _fresh(tiny, arch, pack_shared_prompts=False)
    for variant in (BASE, FINETUNED):
        unpacked.token_logprobs(items, variant, labels=[repr(p) for p in _pairs()], pack=True)
    assert sum(unpacked._passes.forwarded_tokens.values()) > sum(backend._passes.forwarded_tokens.values())
    # Items scored per variant; the session's first packed group was also scored unpacked (the check).
    assert backend.forwarded[("score", str(FINETUNED))] == unpacked.forwarded[("score", str(FINETUNED))] == len(items)
    check = backend.forwarded[("score", str(BASE))] - len(items)
    assert check in {len(choices) for _, choices in QUESTIONS if len(choices) > 1}
    assert calls >= 2 * 2  # per variant: a packed pass and a single's pass (and the check's passes)


def test_a_groups_scores_are_bit_identical_alone_and_in_any_call(tiny, arch):
    pairs = _pairs()
    together, _ = _fresh(tiny, arch).completion_logprobs(pairs)
    starts = np.cumsum([0] + [len(c) for _, c in QUESTIONS])
    for chosen, batch_size in (([1], 32), ([3, 0], 2), ([2, 4, 1], 1)):
        alone = _fresh(tiny, arch, batch_size=batch_size)
        got, _ = alone.completion_logprobs(_pairs([QUESTIONS[i] for i in chosen]))
        expected = np.concatenate([together[starts[i] : starts[i + 1]] for i in chosen])
        np.testing.assert_array_equal(got, expected)


def test_packing_that_gives_other_numbers_is_dropped_for_the_session(tiny, arch, monkeypatch):
    reference, _ = _fresh(tiny, arch, pack_shared_prompts=False).completion_logprobs(_pairs())
    backend = _fresh(tiny, arch)
    planner = backend._planner
    build = planner.packed

    def leaky(batch, dtype):  # a model that ignored the mask: completions see each other
        ids, mask, positions, gather, picks = build(batch, dtype)
        return ids, torch.zeros_like(mask), positions, gather, picks

    monkeypatch.setattr(planner, "packed", leaky)
    with pytest.warns(UserWarning, match="packed scores differed"):
        got, _ = backend.completion_logprobs(_pairs())
    np.testing.assert_array_equal(got, reference)
    assert "differed" in backend.describe()["packing"]
    again, _ = backend.completion_logprobs(_pairs(), variant=BASE)  # no second check, no warning
    np.testing.assert_array_equal(
        again, _fresh(tiny, arch, pack_shared_prompts=False).completion_logprobs(_pairs(), variant=BASE)[0]
    )


def test_an_attention_without_custom_masks_is_never_packed(tiny, arch, monkeypatch):
    monkeypatch.setattr(passes_module, "PACKABLE_ATTENTION", ("flash_attention_2",))
    backend = _fresh(tiny, arch)
    assert "takes no custom 4D mask" in backend.describe()["packing"]
    got, _ = backend.completion_logprobs(_pairs())
    reference = _fresh(tiny, arch, pack_shared_prompts=False)
    np.testing.assert_array_equal(got, reference.completion_logprobs(_pairs())[0])
    assert backend.forward_calls == reference.forward_calls
    assert backend._passes.forwarded_tokens == reference._passes.forwarded_tokens


def test_packing_forty_questions_forwards_fewer_tokens_in_fewer_passes(tiny, arch):
    questions = [
        (f"Question {i}: how many coins did the dragon count?\nAnswer:", (" eleven", " twelve", " none", " a few"))
        for i in range(40)
    ]
    packed = _fresh(tiny, arch)
    unpacked = _fresh(tiny, arch, pack_shared_prompts=False)
    a, _ = packed.completion_logprobs(_pairs(questions))
    b, _ = unpacked.completion_logprobs(_pairs(questions))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # Items scored: the 160, and in the packed session the first question's 4 again (the check).
    assert (packed.forwarded[("score", str(FINETUNED))], unpacked.forwarded[("score", str(FINETUNED))]) == (164, 160)
    tokens_packed = packed._passes.forwarded_tokens[str(FINETUNED)]
    tokens_unpacked = unpacked._passes.forwarded_tokens[str(FINETUNED)]
    # Every item is 33-48 tokens and every packed row too: 160 rows of 48 against 40 packed
    # rows of 48, plus the first question's 4 rows again (the check).
    assert (tokens_unpacked, tokens_packed) == (160 * 48, 40 * 48 + 4 * 48)
    assert packed.forward_calls[str(FINETUNED)] < unpacked.forward_calls[str(FINETUNED)]
