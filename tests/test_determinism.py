"""A prompt's numbers do not depend on what else ran: not on its batch-mates, not on
the order, not on the xdist worker; and building the backend leaves torch's global
random state where it was.

On the CPU the hf backend right-pads each batch to a canonical width (a multiple
of 16 fixed by each row's own length) and hands the output layer the wanted
positions of every row in a multiple of 16 rows (pytest_sway/backends/hf.py,
_WIDTH_STEP, _ROW_QUANTUM); generation batches hold one length in a multiple of
four rows: these tests are what holds that design to bit-identical answers on
both tiny architectures.
"""

import json

import numpy as np
import pytest
from conftest import CONTROL_PROMPTS, TARGET_PROMPTS

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
from pytest_sway.backends.hf import HFBackend  # noqa: E402

PROMPTS = list(TARGET_PROMPTS + CONTROL_PROMPTS)
PAIRS = [(p, " and more.") for p in PROMPTS]


def _fresh(tiny, arch, **kwargs):
    model, adapter = tiny[arch]
    return HFBackend(model, adapter=adapter, **kwargs)


def test_values_are_bit_identical_alone_in_a_full_run_and_in_any_order(tiny, arch):
    full = _fresh(tiny, arch)
    together = {kind: full.divergences(PROMPTS, divergence=kind) for kind in ("js", "kl")}
    lp_together, _ = full.completion_logprobs(PAIRS)
    greedy_together = full.greedy(PROMPTS, max_new_tokens=6)
    order = np.random.default_rng(3).permutation(len(PROMPTS))
    for subset in ([3], [0, 9], list(order), list(range(0, len(PROMPTS), 3))):
        alone = _fresh(tiny, arch, batch_size=5)  # a new session, other batch sizes, other batch-mates
        prompts = [PROMPTS[i] for i in subset]
        for kind, values in together.items():
            np.testing.assert_array_equal(alone.divergences(prompts, divergence=kind), values[subset])
        lp, _ = alone.completion_logprobs([PAIRS[i] for i in subset])
        np.testing.assert_array_equal(lp, lp_together[subset])
        assert alone.greedy(prompts, max_new_tokens=6) == [greedy_together[i] for i in subset]


#: Seven prompts of one token length: a 7-row matrix product rounds its last rows with a
#: narrower kernel than a 4- or 8-row one, so these catch a pass whose rows are not shaped.
SAME_LENGTH = [f"Customer {i} asks about the refund window. The answer is" for i in range(20, 27)]


def test_rows_of_one_length_in_any_number_and_responses_are_bit_identical_alone(tiny, arch):
    prompts = SAME_LENGTH + PROMPTS
    pairs = [(p, " Thirty days from delivery, with the receipt.") for p in SAME_LENGTH] + PAIRS[::2]
    full = _fresh(tiny, arch)
    assert len({len(s) for s in full.encode_prompts(SAME_LENGTH, chat=False)}) == 1
    together = full.divergences(prompts, divergence="kl")
    responses = full.response_divergences([p for p, _ in pairs], [r for _, r in pairs], divergence="js")
    greedy = full.greedy(SAME_LENGTH, max_new_tokens=4)
    for batch_size, subset in ((32, [6]), (5, [0, 3, 4, 9, 12]), (3, [11, 2, 5, 1, 20])):
        alone = _fresh(tiny, arch, batch_size=batch_size)
        np.testing.assert_array_equal(
            alone.divergences([prompts[i] for i in subset], divergence="kl"), together[subset]
        )
        chosen = [pairs[i] for i in subset if i < len(pairs)]
        got = alone.response_divergences([p for p, _ in chosen], [r for _, r in chosen], divergence="js")
        for i, result in zip([i for i in subset if i < len(pairs)], got):
            np.testing.assert_array_equal(result.values, responses[i].values)
            np.testing.assert_array_equal(result.agree, responses[i].agree)
        assert alone.greedy([SAME_LENGTH[i] for i in subset if i < 7], max_new_tokens=4) == [
            greedy[i] for i in subset if i < 7
        ]


def test_texts_scored_in_windows_are_bit_identical_alone_and_together(tiny, arch):
    texts = [p + " was what the old book said about it." for p in PROMPTS[:6]]
    together, _ = _fresh(tiny, arch).text_logprobs(texts, window=8, stride=4)
    for i in (0, 5):
        alone, _ = _fresh(tiny, arch).text_logprobs([texts[i]], window=8, stride=4)
        assert alone[0] == together[i]


def test_building_the_backend_and_probing_leave_the_global_rng_alone(tiny, arch):
    from pytest_sway import run_probe

    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    backend = _fresh(tiny, arch)
    for kind in ("delta_kl", "null_contrast", "greedy_change"):
        run_probe(kind, backend, prompts=PROMPTS[:4], resamples=999)
    assert torch.equal(torch.random.get_rng_state(), before)


SUITE = f"""
import pytest
PROMPTS = {PROMPTS!r}

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS[:8], above=0.01)
def test_targets():
    pass

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS[8:], divergence="kl")
def test_controls():
    pass

def test_body(sway):
    sway.completion_lift([(p, " again") for p in PROMPTS[2:12]])
"""


def test_serial_and_two_workers_write_identical_results(pytester, tiny):
    pytest.importorskip("xdist")
    model, adapter = tiny["gpt2"]
    pytester.makepyfile(SUITE)
    args = (f"--sway-model={model}", f"--sway-adapter={adapter}", "-p", "no:cacheprovider")
    pytester.runpytest_subprocess(*args, "--sway-json=serial.json").assert_outcomes(passed=3)
    pytester.runpytest_subprocess(*args, "-n", "2", "--sway-json=xdist.json").assert_outcomes(passed=3)
    pytester.runpytest_subprocess(*args, "--sway-json=alone.json", "-k", "controls").assert_outcomes(passed=1)

    def results(name):
        doc = json.loads((pytester.path / name).read_text())
        return {r["nodeid"]: (r["values"], r["ci_low"], r["ci_high"]) for r in doc["results"]}

    serial = results("serial.json")
    assert results("xdist.json") == serial
    alone = results("alone.json")
    assert alone == {k: v for k, v in serial.items() if k in alone} and len(alone) == 1


@pytest.mark.parametrize("vocab", [49152, 128256])
def test_a_rows_divergences_do_not_depend_on_its_chunk_on_a_real_vocabulary(vocab):
    # The tiny models' vocabularies are too small for torch to split a reduction across
    # threads; real ones are not, and a lone row took another path (differing in the last bits).
    from pytest_sway.backends.hf.divergences import chunk_divergences

    generator = torch.Generator().manual_seed(vocab)
    base = torch.randn(7, vocab, generator=generator)
    other = base + 0.3 * torch.randn(7, vocab, generator=generator)
    alone = chunk_divergences(torch, base[:1], other[:1], torch.float64, 5)
    for rows in range(2, 8):
        table, ids, probs = chunk_divergences(torch, base[:rows], other[:rows], torch.float64, 5)
        np.testing.assert_array_equal(table[:1], alone[0])
        np.testing.assert_array_equal(ids[:1], alone[1])
        np.testing.assert_array_equal(probs[:, :1], alone[2])
    table, ids, probs = chunk_divergences(torch, base[:3], other[:3], torch.float64, 0)
    assert table.shape == (3, alone[0].shape[1]) and ids.shape == (3, 0) and probs.shape == (2, 3, 0)
