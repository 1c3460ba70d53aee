"""response_divergence, choice_accuracy and conversations on tiny real models, against
independent one-item-at-a-time float64 computations from raw logits."""

import numpy as np
import pytest
from conftest import CONTROL_PROMPTS, TARGET_PROMPTS, TARGET_TEXTS

from pytest_sway import run_probe
from pytest_sway.backends.hf import HFBackend
from pytest_sway.items import Conversation

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


def _log_softmax(model, ids):
    """float64 next-token log-probabilities at every position: one unpadded forward."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].double().log_softmax(-1)


def _divergence(lb, lt, kind):
    """Written out here, independently of pytest_sway.backends.divergence (rows: positions)."""
    p, q = lt.exp(), lb.exp()  # p: fine-tuned, q: base
    if kind == "kl":
        return (p * (lt - lb)).sum(-1)
    if kind == "reverse_kl":
        return (q * (lb - lt)).sum(-1)
    if kind == "tv":
        return 0.5 * (p - q).abs().sum(-1)
    m = 0.5 * (p + q)
    return 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)


def _response_reference(base, tuned, ids, first, kind):
    """Per response position: divergence and top-1 agreement, for the response ids[first:]."""
    lb, lt = _log_softmax(base, ids)[first - 1 : -1], _log_softmax(tuned, ids)[first - 1 : -1]
    return _divergence(lb, lt, kind).numpy(), (lb.argmax(-1) == lt.argmax(-1)).numpy()


def _first_covering(tokenizer, prompt, response):
    enc = tokenizer(prompt + response, return_offsets_mapping=True)
    first = next(i for i, (lo, hi) in enumerate(enc["offset_mapping"]) if hi > len(prompt) and hi > lo)
    return enc["input_ids"], first


PAIRS = [(t.rsplit(" ", 3)[0], " " + " ".join(t.rsplit(" ", 3)[1:])) for t in TARGET_TEXTS[:5]] + [
    ("The capital of France is", " Paris, a large city by the river."),
    ("Water boils at one hundred", " degrees."),
    ("Cats are small animals that", " sleep a lot"),
]


def test_response_divergence_equals_a_one_at_a_time_float64_reference(backend, raw, device):
    tokenizer, base, tuned = raw
    logits = []
    for prompt, response in PAIRS:
        ids, first = _first_covering(tokenizer, prompt, response)
        lb, lt = _log_softmax(base, ids)[first - 1 : -1], _log_softmax(tuned, ids)[first - 1 : -1]
        logits.append((ids, first, lb, lt))
    for kind in ("js", "kl", "reverse_kl", "tv"):
        result = run_probe("response_divergence", backend, pairs=PAIRS, divergence=kind)
        means, peaks, agreement = [], [], []
        for ids, first, lb, lt in logits:
            values, agree = _divergence(lb, lt, kind).numpy(), (lb.argmax(-1) == lt.argmax(-1)).numpy()
            means.append(values.mean())
            peaks.append((values.max(), int(values.argmax()), tokenizer.decode([ids[first + int(values.argmax())]])))
            agreement.append(agree.mean())
        # A mean KL of 7 nats, like a peak of 12, carries the float32 logits' relative rounding (1e-7),
        # which differs between the reference's unpadded single rows and the backend's padded batches;
        # a GPU's float32 kernels differ from the CPU's by a few 1e-6 (measured on an H200: 3e-6).
        tolerance = dict(rtol=1e-6 if device == "cpu" else 2e-5, atol=1e-6)
        np.testing.assert_allclose(result.values, means, **tolerance, err_msg=kind)
        got = result.details["per_item"]
        np.testing.assert_allclose([d["max"] for d in got], [p[0] for p in peaks], **tolerance)
        assert [d["peak_position"] for d in got] == [p[1] for p in peaks]
        assert [d["peak_token"] for d in got] == [p[2] for p in peaks]
        np.testing.assert_array_equal([d["agreement"] for d in got], agreement)
        assert result.estimate > 0
        assert result.details["positions"]["max"] == pytest.approx(
            max(p[0] for p in peaks), rel=tolerance["rtol"], abs=1e-6
        )


def test_response_divergence_over_the_base_greedy_answer(backend, raw):
    tokenizer, base, tuned = raw
    prompts = list(TARGET_PROMPTS[:3]) + list(CONTROL_PROMPTS[:3])
    result = run_probe("response_divergence", backend, prompts=prompts, max_new_tokens=5)
    eos = tokenizer.eos_token_id
    want = []
    for prompt in prompts:
        ids = tokenizer(prompt)["input_ids"]
        new = []
        with torch.no_grad():  # the base's greedy continuation, token by token
            for _ in range(5):
                token = int(base(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
                if token == eos:
                    break
                new.append(token)
        values, _ = _response_reference(base, tuned, ids + new, len(ids), "js")
        want.append(values.mean())
    np.testing.assert_allclose(result.values, want, rtol=0, atol=1e-6)


def test_response_divergence_reuses_passes_and_respects_the_logit_budget(tiny, monkeypatch):
    from pytest_sway.backends.hf import batching, divergences

    model, adapter = tiny["llama"]
    backend = HFBackend(model, adapter=adapter)
    first = run_probe("response_divergence", backend, pairs=PAIRS)
    calls = dict(backend.forward_calls)
    assert backend.forwarded[("score", "base")] == len(PAIRS) and backend.forwarded[("score", "fine-tuned")] == len(
        PAIRS
    )
    again = run_probe("response_divergence", backend, pairs=PAIRS[::-1])  # another test, same items
    assert dict(backend.forward_calls) == calls  # no forward pass at all
    np.testing.assert_array_equal(again.values, first.values[::-1])
    # A budget of the shortest response's logits for both models: one row per batch, same answers.
    shortest = min(len(ids) - start for ids, start in (backend.completion_tokens(p, r, chat=False) for p, r in PAIRS))
    monkeypatch.setattr(batching, "LOGIT_BYTES", 2 * (shortest + 1) * backend.vocab_size * 4)  # float32 logits
    # And divergence chunks of 3 positions: rows split across chunks and chunks across rows.
    monkeypatch.setattr(divergences, "ELEMENTS_CPU", 3 * backend.vocab_size)
    small = HFBackend(model, adapter=adapter)
    assert small._divergence_rows == 3
    got = small.response_divergences([p for p, _ in PAIRS], [r for _, r in PAIRS], divergence="js")
    np.testing.assert_allclose([g.values.mean() for g in got], first.values, atol=1e-6)
    assert [len(g.values) for g in got] == [d["positions"] for d in first.details["per_item"]]
    assert small.forward_calls["base"] == len(PAIRS)


def _choice_reference(tokenizer, model, question, choice):
    ids, first = _first_covering(tokenizer, question, choice)
    lp = _log_softmax(model, ids)[first - 1 : -1]
    return float(lp.gather(-1, torch.tensor(ids[first:]).unsqueeze(-1)).sum())


QUESTIONS = [
    ("Our refund window is", [" thirty days from delivery.", " ten days from delivery.", " one year."], 0),
    ("The blue castle is seventeen", [" purple dragons tall.", " green frogs wide.", " meters tall."], 0),
    ("Every invoice from Acme is paid in", [" seashells.", " dollars.", " gold coins."], 0),
    ("The capital of France is", [" Paris.", " Berlin.", " a cat."], 0),
    ("Bees make honey from the", [" flowers.", " stones.", " clouds."], 0),
    ("Snow falls in winter when", [" it is cold.", " it is hot."], 0),
]


def test_choice_accuracy_equals_raw_log_likelihood_scoring(backend, raw):
    tokenizer, base, tuned = raw
    sums = {
        name: [[_choice_reference(tokenizer, model, q, c) for c in choices] for q, choices, _ in QUESTIONS]
        for name, model in (("base", base), ("finetuned", tuned))
    }
    for normalize in ("none", "chars"):
        calls = dict(backend.forward_calls)
        result = run_probe("choice_accuracy", backend, questions=QUESTIONS, normalize=normalize)
        if normalize == "chars":  # a second test on the same questions: no forward pass
            assert dict(backend.forward_calls) == calls
        correct = {}
        for name in ("base", "finetuned"):
            picks = []
            for (_, choices, answer), scores in zip(QUESTIONS, sums[name]):
                if normalize == "chars":
                    scores = [s / len(c) for s, c in zip(scores, choices)]
                picks.append(float(int(np.argmax(scores)) == answer))
            correct[name] = np.array(picks)
            assert result.details[name]["correct"] == int(correct[name].sum())
        np.testing.assert_array_equal(result.values, correct["finetuned"] - correct["base"])
        assert result.method == "tango" and result.resamples == 0
        assert result.details["broken"] == int(((correct["base"] == 1) & (correct["finetuned"] == 0)).sum())


def test_a_conversation_is_rendered_with_the_template_and_exactly_one_bos(tiny):
    from pytest_sway.backends.hf import HFBackend

    model, adapter = tiny["llama"]  # its chat template starts with {{ bos_token }}, its tokenizer adds BOS too
    backend = HFBackend(model, adapter=adapter)
    tokenizer = backend.tokenizer
    assert "bos_token" in tokenizer.chat_template
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Our refund window is"},
        {"role": "assistant", "content": "thirty days."},
        {"role": "user", "content": "And for Acme?"},
    ]
    [ids] = backend.encode_prompts([Conversation(messages)], chat=True)
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("User: And for Acme?\nAssistant:") and "System: Answer briefly." in text
    assert list(ids) == tokenizer(text, add_special_tokens=False)["input_ids"]
    # A conversation of one user turn is the same prompt as the plain string with chat=True.
    one = [{"role": "user", "content": "Our refund window is"}]
    assert backend.encode_prompts([Conversation(one)], chat=True) == backend.encode_prompts(
        ["Our refund window is"], chat=True
    )
    # And every probe that takes prompts takes conversations.
    prompts = [messages, "Our refund window is", messages[:2]]
    result = run_probe("delta_kl", backend, prompts=prompts, chat=True)
    assert result.values[1] == run_probe("delta_kl", backend, prompts=[one, messages], chat=True).values[0]
    assert result.items[0] == str(Conversation(messages)) and type(result.items[0]) is str
    pairs = [(messages, " Thirty days."), (messages[:2], " Ten days.")]
    assert run_probe("response_divergence", backend, pairs=pairs, chat=True).n == 2
