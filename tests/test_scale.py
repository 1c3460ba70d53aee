"""Memory flat in the number of prompts: numbers in the memo, a bounded store of base logits."""

import numpy as np
import pytest
from conftest import CONTROL_PROMPTS, TARGET_PROMPTS

from pytest_sway import BASE, FINETUNED, Variant, run_probe

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
from pytest_sway.backends.hf import HFBackend  # noqa: E402

PROMPTS = [*TARGET_PROMPTS, *CONTROL_PROMPTS, *(f"Item number {i} on the list is" for i in range(8))]


def _row_bytes(model_folder) -> int:
    """Bytes of one float32 next-token row of a tiny model."""
    import json
    from pathlib import Path

    return 4 * json.loads((Path(model_folder) / "config.json").read_text())["vocab_size"]


def _watch_store(backend):
    """Record the most bytes the logit store ever held."""
    store, seen = backend._memo.logits, [0]
    put = store.put

    def watched(key, value):
        kept = put(key, value)
        seen[0] = max(seen[0], store.bytes)
        return kept

    store.put = watched
    return seen


def test_a_small_budget_gives_the_values_of_an_unbounded_memo(tiny):
    model, adapter = tiny["llama"]
    row = _row_bytes(model)
    small = HFBackend(model, adapter=adapter, batch_size=4, memo_bytes=5 * row)  # five prompts' base logits
    roomy = HFBackend(model, adapter=adapter, batch_size=4, memo_bytes=1 << 30)
    most = _watch_store(small)
    for kind in ("js", "kl", "reverse_kl", "tv"):
        for variant in (FINETUNED, Variant(scale=0.5), Variant(null_seed=1)):
            # Groups of five prompts batch differently from one group of 24: float32 rounding only.
            np.testing.assert_allclose(
                small.divergences(PROMPTS, divergence=kind, variant=variant),
                roomy.divergences(PROMPTS, divergence=kind, variant=variant),
                rtol=1e-5,
                atol=1e-7,
            )
    assert 0 < most[0] <= 5 * row and len(small._memo.logits) == 5
    assert roomy._memo.logits.bytes == len(PROMPTS) * row  # everything fits: all kept
    # What the memo keeps per prompt and variant is four numbers, not a vocabulary row.
    answers = [answer for per_variant in small._memo.answers.values() for answer in per_variant.values()]
    assert len(answers) == 3 * len(PROMPTS)
    # Each is (its group's table, its row): the tables together hold four numbers per answer.
    tables = {id(table): table for table, _ in answers}.values()
    assert all(isinstance(table, np.ndarray) and table.shape[1] == 4 for table in tables)
    assert sum(table.nbytes for table in tables) == len(answers) * 4 * 8
    assert sorted(i for table, i in answers if table is next(iter(tables))) == [0, 1, 2, 3]
    # Keyed by each prompt's token ids packed as int32, held once for all three variants.
    keys = [key for per_variant in small._memo.answers.values() for key in per_variant]
    assert all(isinstance(key, bytes) for key in keys) and len({id(key) for key in keys}) == len(PROMPTS)
    seqs = small.encode_prompts(PROMPTS, chat=False)
    assert {tuple(np.frombuffer(key, dtype=np.int32).tolist()) for key in keys} == set(seqs)


def test_forward_passes_are_counted_truthfully_when_base_logits_are_evicted(tiny, tmp_path):
    model, adapter = tiny["llama"]
    n, budget = len(PROMPTS), 5 * _row_bytes(model)
    counts = {}
    for name, kwargs in (
        ("roomy", {}),
        ("small", dict(memo_bytes=budget)),
        ("small+disk", dict(memo_bytes=budget, cache_dir=str(tmp_path))),
    ):
        backend = HFBackend(model, adapter=adapter, batch_size=4, **kwargs)
        first = backend.divergences(PROMPTS, divergence="js")
        assert (backend.forwarded[("next", "base")], backend.forwarded[("next", "fine-tuned")]) == (n, n)
        # Another divergence of the same variant: answered from the numbers, no pass at all.
        backend.divergences(PROMPTS, divergence="tv")
        backend.divergences(PROMPTS[:5], divergence="kl")
        assert sum(backend.forwarded.values()) == 2 * n
        scaled = backend.divergences(PROMPTS, divergence="js", variant=Variant(scale=0.5))
        assert backend.forwarded[("next", "adapter x0.5")] == n
        counts[name] = backend.forwarded[("next", "base")]
        assert np.all(scaled < first)
    assert counts["roomy"] == n  # kept: the second variant reuses the base's logits
    assert counts["small"] == 2 * n  # evicted: recomputed, and counted
    assert counts["small+disk"] == n  # evicted: read back from the disk cache


def test_a_suite_on_a_small_budget_matches_probe_by_probe(tiny):
    model, adapter = tiny["gpt2"]
    budget = 5 * _row_bytes(model)
    small = HFBackend(model, adapter=adapter, memo_bytes=budget)
    roomy = HFBackend(model, adapter=adapter)
    for kind, params in (("delta_kl", {}), ("null_contrast", dict(seeds=2)), ("adapter_ablation", {})):
        a = run_probe(kind, small, prompts=PROMPTS, **params).values
        b = run_probe(kind, roomy, prompts=PROMPTS, **params).values
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert small._memo.logits.bytes <= budget


# -- a model larger than one device: accelerate places the layers ------------------------------------


@pytest.fixture(scope="module")
def merged(tiny, tmp_path_factory):
    """The tiny llama with its adapter merged in: a fully fine-tuned checkpoint (no peft at load)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, adapter = tiny["llama"]
    folder = tmp_path_factory.mktemp("merged")
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), adapter).merge_and_unload().save_pretrained(
        folder
    )
    AutoTokenizer.from_pretrained(model).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("placement", ["max_memory", "explicit map"])
def test_a_model_split_over_cpu_and_disk_gives_the_single_device_values(tiny, merged, tmp_path, placement, monkeypatch):
    # Disk offload writes a copy of the checkpoint under a path relative to the current folder.
    monkeypatch.chdir(tmp_path)
    model, _ = tiny["llama"]
    single = HFBackend(model, finetuned=merged, device="cpu")
    if placement == "max_memory":  # a CPU budget below the model's size: the rest goes to disk
        weights = sum(p.numel() * p.element_size() for p in single.base_model.parameters())
        split = HFBackend(
            model,
            finetuned=merged,
            device_map="auto",
            max_memory={"cpu": weights // 2},
            offload_folder=str(tmp_path / "offload"),
        )
    else:
        split = HFBackend(
            model,
            finetuned=merged,
            offload_folder=str(tmp_path / "offload"),
            device_map={
                "model.embed_tokens": "cpu",
                "model.rotary_emb": "cpu",
                "model.layers.0": "cpu",
                "model.layers.1": "disk",
                "model.norm": "cpu",
                "lm_head": "cpu",
            },
        )
    for m in (split.base_model, split.finetuned_model):
        assert "disk" in set(m.hf_device_map.values())  # some layers really are offloaded
    values = {}
    for backend in (single, split):
        values[backend] = [backend.divergences(PROMPTS, divergence=kind) for kind in ("js", "kl")]
        cases = [(p, " and more.") for p in PROMPTS[:6]]
        values[backend].append(run_probe("completion_lift", backend, cases=cases).values)
        values[backend].append(run_probe("perplexity_shift", backend, texts=list(CONTROL_PROMPTS)).values)
    assert values[single][0].mean() > 0.01  # the merged fine-tune does move the distribution
    for got, want in zip(values[split], values[single]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_adapter_on_a_base_offloaded_to_disk_is_a_clear_error(tiny, tmp_path, monkeypatch):
    from pytest_sway.errors import BackendError

    monkeypatch.chdir(tmp_path)
    model, adapter = tiny["llama"]
    layers = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu"}
    layers.update({"model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"})
    # peft itself fails with "Cannot copy out of meta tensor", read as a wrong base model.
    with pytest.raises(BackendError, match=r"offloaded to disk \(model\.layers\.1\).*--sway-finetuned"):
        HFBackend(model, adapter=adapter, device_map=layers, offload_folder=str(tmp_path / "offload"))
    # Without a layer on disk the same split takes the adapter.
    layers["model.layers.1"] = "cpu"
    split = HFBackend(model, adapter=adapter, device_map=layers)
    assert split.divergences(PROMPTS[:2], divergence="js").min() > 0


def test_max_memory_without_a_device_map_is_a_clear_error(tiny):
    from pytest_sway.errors import BackendError

    model, adapter = tiny["llama"]
    with pytest.raises(BackendError, match="give device_map too"):
        HFBackend(model, adapter=adapter, max_memory={"cpu": "1GiB"})


def test_variants_asked_together_share_the_base_pass(tiny):
    from pytest_sway.backends.base import divergences_by_variant

    model, adapter = tiny["llama"]
    n, budget = len(PROMPTS), 5 * _row_bytes(model)
    variants = [FINETUNED, Variant(null_seed=1), Variant(scale=0.0), Variant(scale=0.5)]
    together = HFBackend(model, adapter=adapter, batch_size=4, memo_bytes=budget)
    apart = HFBackend(model, adapter=adapter, batch_size=4, memo_bytes=budget)
    joint = divergences_by_variant(together, PROMPTS, divergence="js", variants=variants)
    each = [apart.divergences(PROMPTS, divergence="js", variant=v) for v in variants]
    for a, b in zip(joint, each):
        np.testing.assert_array_equal(a, b)  # same groups, same batches: the same numbers
    assert np.all(joint[2] == 0.0)  # scale 0 is the base
    assert together.forwarded[("next", "base")] == n  # once per prompt for all variants
    assert apart.forwarded[("next", "base")] == 3 * n  # evicted between the calls: once per variant
    for backend in (together, apart):
        assert backend.forwarded[("next", "null(seed=1)")] == backend.forwarded[("next", "adapter x0.5")] == n


def test_variants_together_on_a_backend_without_divergences_many():
    from pytest_sway import DummyBackend
    from pytest_sway.backends.base import divergences_by_variant

    backend = DummyBackend()
    variants = [FINETUNED, Variant(scale=0.5)]
    joint = divergences_by_variant(backend, PROMPTS, divergence="tv", variants=variants)
    for got, variant in zip(joint, variants):
        np.testing.assert_array_equal(got, backend.divergences(PROMPTS, divergence="tv", variant=variant))


def test_the_store_is_one_block_within_the_budget_reused_row_by_row(tiny):
    model, adapter = tiny["llama"]
    row = _row_bytes(model)
    backend = HFBackend(model, adapter=adapter, batch_size=4, memo_bytes=8 * row + row // 2)  # groups of 8
    store = backend._memo.logits
    most = _watch_store(backend)
    backend.divergences(PROMPTS[:4], divergence="js")
    block = store._block
    assert block.shape[0] == 8 and block.numel() * block.element_size() <= store.budget
    values = backend.divergences(PROMPTS, divergence="js", variant=Variant(scale=0.5))
    assert store._block is block and most[0] <= 8 * row  # the same block, never more
    # Rows handed out by next_token_logits are copies: later questions cannot change them.
    seqs = backend.encode_prompts(PROMPTS, chat=False)
    rows = backend.next_token_logits(seqs[:3], BASE, labels=PROMPTS[:3])
    before = [r.clone() for r in rows]
    backend.divergences(PROMPTS, divergence="js", variant=Variant(null_seed=3))
    assert all(torch.equal(a, b) for a, b in zip(rows, before))
    roomy = HFBackend(model, adapter=adapter, batch_size=4)
    np.testing.assert_allclose(
        values, roomy.divergences(PROMPTS, divergence="js", variant=Variant(scale=0.5)), rtol=1e-5, atol=1e-7
    )


def test_the_cpu_heap_is_trimmed_after_every_batch(tiny, monkeypatch):
    from pytest_sway.backends.hf import passes

    model, adapter = tiny["llama"]
    backend = HFBackend(model, adapter=adapter, batch_size=4)
    trims = []
    monkeypatch.setattr(passes, "trim_heap", lambda: trims.append(sum(backend.forward_calls.values())))
    backend.divergences(PROMPTS, divergence="js")
    run_probe("response_divergence", backend, pairs=[(p, " yes") for p in PROMPTS[:6]])
    calls = sum(backend.forward_calls.values())
    # Forward passes made before each trim: every batch is followed by one (a batch of
    # teacher-forced pairs is two passes, the base's and the fine-tune's), the last included.
    steps = [b - a for a, b in zip([0, *trims], trims)]
    assert calls > 6 and trims[-1] == calls and set(steps) == {1, 2}, steps
