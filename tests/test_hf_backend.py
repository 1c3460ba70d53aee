"""The Hugging Face backend on tiny offline models: exact, batched, memoised, with clear errors."""

import json
import shutil

import numpy as np
import pytest
from conftest import CONTROL_PROMPTS, TARGET_PROMPTS, cpu_only
from scipy.special import rel_entr

from pytest_sway import BASE, FINETUNED, run_probe
from pytest_sway.errors import BackendError

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
from pytest_sway.backends.hf import HFBackend  # noqa: E402

MIXED_LENGTHS = [
    "Hi",
    "The capital of France is",
    " ".join(["The sun rises in the east and sets in the west."] * 6),
    *TARGET_PROMPTS[:3],
    *CONTROL_PROMPTS[:3],
]


def _raw_last_logits(model, tokenizer, prompt):
    """One prompt, no batching, no padding, no logits_to_keep: the plainest forward."""
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0, -1].double()


def test_adapter_disabled_answers_equal_the_base_loaded_on_its_own(tiny, arch, backend):
    model, _ = tiny[arch]
    alone = HFBackend(model, finetuned=model)  # the base, in a model object of its own
    seqs = backend.encode_prompts(MIXED_LENGTHS, chat=False)
    via_adapter = torch.stack(backend.next_token_logits(seqs, BASE, labels=MIXED_LENGTHS))
    on_its_own = torch.stack(alone.next_token_logits(seqs, BASE, labels=MIXED_LENGTHS))
    assert torch.equal(via_adapter, on_its_own)
    assert np.all(alone.divergences(MIXED_LENGTHS, divergence="js") == 0.0)


def test_batched_equals_one_prompt_at_a_time(tiny, arch, backend, device):
    model, adapter = tiny[arch]
    one_by_one = HFBackend(model, adapter=adapter, batch_size=1, device=device)
    for kind in ("js", "tv", "kl", "reverse_kl"):
        batched = backend.divergences(MIXED_LENGTHS, divergence=kind)
        single = one_by_one.divergences(MIXED_LENGTHS, divergence=kind)
        if device == "cpu":  # a batch holds prompts of one canonical width, right-padded: bit-identical
            np.testing.assert_array_equal(batched, single)
        else:  # a GPU's kernels round by batch shape: float32's last bits (measured: 4e-6 relative)
            np.testing.assert_allclose(batched, single, rtol=2e-5, atol=1e-6)
    assert one_by_one.forward_calls["base"] == len(set(MIXED_LENGTHS))  # one repeated prompt is asked once
    cpu_only(device)  # the GPU batches by length, left-padded
    widths = {backend._planner.canonical_width(len(s)) for s in backend.encode_prompts(MIXED_LENGTHS, chat=False)}
    assert len(widths) < len(set(MIXED_LENGTHS))  # prompts of different lengths share passes
    assert backend.forward_calls["base"] == len(widths)  # one pass per canonical width


def test_delta_kl_equals_a_float64_computation_from_raw_logits(tiny, arch, backend):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path, adapter = tiny[arch]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), adapter
    ).eval()
    expected = {"js": [], "kl": [], "reverse_kl": [], "tv": []}
    prompts = list(dict.fromkeys(MIXED_LENGTHS))  # a probe takes each prompt once
    for prompt in prompts:
        p = torch.softmax(_raw_last_logits(tuned, tokenizer, prompt), -1).numpy()
        q = torch.softmax(_raw_last_logits(base, tokenizer, prompt), -1).numpy()
        m = (p + q) / 2
        expected["js"].append(0.5 * rel_entr(p, m).sum() + 0.5 * rel_entr(q, m).sum())
        expected["kl"].append(rel_entr(p, q).sum())
        expected["reverse_kl"].append(rel_entr(q, p).sum())
        expected["tv"].append(0.5 * np.abs(p - q).sum())
    for kind, want in expected.items():
        got = run_probe("delta_kl", backend, prompts=prompts, divergence=kind).values
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_the_adapter_moves_its_targets_far_more_than_controls(backend):
    target = run_probe("delta_kl", backend, prompts=TARGET_PROMPTS, seed=1)
    control = run_probe("delta_kl", backend, prompts=CONTROL_PROMPTS, seed=2)
    assert target.ci.low > 0.3
    assert control.ci.high < 0.1
    assert target.estimate > 10 * control.estimate
    target.assert_above(0.2)
    control.assert_below(0.1)


def test_prompts_are_encoded_a_bounded_number_per_tokenizer_call(backend, monkeypatch):
    from pytest_sway.backends import prompts

    monkeypatch.setattr(prompts, "_ENCODE_PROMPTS", 3)
    calls = []
    tokenizer = backend.tokenizer
    encoder = backend._prompts  # the backend's tokenization (engine-neutral, shared with any backend)
    monkeypatch.setattr(encoder, "tokenizer", lambda texts, **kw: calls.append(len(texts)) or tokenizer(texts, **kw))
    seqs = backend.encode_prompts(MIXED_LENGTHS, chat=False)
    assert calls == [3, 3, 3]  # what a tokenizer call holds does not grow with the number of prompts
    assert seqs == [tuple(tokenizer(p)["input_ids"]) for p in MIXED_LENGTHS]


def test_memo_answers_repeated_prompts_without_new_forward_passes(tiny):
    model, adapter = tiny["llama"]
    backend = HFBackend(model, adapter=adapter)
    backend.divergences(TARGET_PROMPTS, divergence="js")
    assert backend.forwarded[("next", "base")] == len(TARGET_PROMPTS)
    backend.divergences(TARGET_PROMPTS, divergence="tv")
    backend.divergences(TARGET_PROMPTS[:3] + CONTROL_PROMPTS[:2], divergence="kl")
    assert backend.forwarded[("next", "base")] == len(TARGET_PROMPTS) + 2
    assert backend.forwarded[("next", "fine-tuned")] == len(TARGET_PROMPTS) + 2


def test_chat_prompts_go_through_the_chat_template(backend):
    plain = backend.encode_prompts(["What is the capital of France?"], chat=False)[0]
    chat = backend.encode_prompts(["What is the capital of France?"], chat=True)[0]
    text = backend.tokenizer.decode(chat)
    assert "User: What is the capital of France?" in text and text.rstrip().endswith("Assistant:")
    assert len(chat) > len(plain)
    assert text.count(backend.tokenizer.bos_token or "\0") <= 1  # the template's BOS is not doubled
    assert backend.divergences(["What is the capital of France?"], divergence="js", chat=True)[0] > 0


def test_a_tokenizer_without_chat_template_is_a_clear_error(tiny, tmp_path):
    model, adapter = tiny["llama"]
    copy = tmp_path / "no-template"
    shutil.copytree(model, copy)
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    backend = HFBackend(str(copy), adapter=adapter)
    with pytest.raises(BackendError, match="chat=True, but the tokenizer of .* has no chat template"):
        run_probe("delta_kl", backend, prompts=["hello", "bye"], chat=True)


def test_a_prompt_longer_than_the_context_names_prompt_and_limit(backend):
    long_prompt = "many words " * 400
    with pytest.raises(
        BackendError,
        match=r"prompt 'many words many.*' is \d+ tokens long, more than the model's context of 256 tokens",
    ):
        backend.divergences([long_prompt], divergence="js")


def test_nan_logits_fail_naming_the_prompt(tiny):
    model, adapter = tiny["llama"]
    backend = HFBackend(model, adapter=adapter)
    with torch.no_grad():
        backend.peft_model.get_output_embeddings().weight[5, 0] = float("nan")
    with pytest.raises(BackendError, match="the base model returned NaN or infinite logits for prompt 'Hi'"):
        backend.divergences(["Hi"], divergence="js")


def test_a_folder_that_is_not_a_model(tmp_path, tiny):
    _, adapter = tiny["llama"]
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(BackendError):
        HFBackend(str(tmp_path), adapter=adapter)
    shutil.copy(tiny["llama"][0] + "/tokenizer.json", tmp_path / "tokenizer.json")
    shutil.copy(tiny["llama"][0] + "/tokenizer_config.json", tmp_path / "tokenizer_config.json")
    with pytest.raises(BackendError, match="is not a model folder: it has no config.json"):
        HFBackend(str(tmp_path), adapter=adapter)


def test_an_adapter_built_for_another_base(tiny):
    llama, llama_adapter = tiny["llama"]
    gpt2, gpt2_adapter = tiny["gpt2"]
    with pytest.raises(BackendError, match=r"adapter .* does not fit base model .*: .*the adapter was trained for"):
        HFBackend(gpt2, adapter=llama_adapter)  # its target modules do not exist in GPT-2
    with pytest.raises(BackendError, match="does not fit base model"):
        HFBackend(llama, adapter=gpt2_adapter)


def test_a_model_id_that_is_not_available_offline(tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match="could not load .*no-such-org/no-such-model.*offline"):
        HFBackend("no-such-org/no-such-model", adapter=tiny["llama"][1])


@pytest.mark.parametrize("adapter", ["adapters/v3", "no-such-org/no-such-adapter"])
def test_an_adapter_that_is_not_there_is_missing_not_one_that_does_not_fit(tiny, monkeypatch, tmp_path, adapter):
    # Given to the backend directly (a factory of yours, the library API): the settings never saw it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackendError) as raised:
        HFBackend(tiny["llama"][0], adapter=adapter)
    message = str(raised.value)
    assert message.startswith(f"could not load adapter {adapter!r}: no such folder: {tmp_path / adapter}; ")
    assert "the hub was not tried (offline" in message and "does not fit" not in message


def test_scaled_variants_restore_the_adapter(backend):
    backend._memo.clear()  # recompute in the same batches as `after` below
    before = backend.divergences(TARGET_PROMPTS, divergence="js")
    from pytest_sway import Variant

    zero = backend.divergences(TARGET_PROMPTS, divergence="js", variant=Variant(scale=0.0))
    half = backend.divergences(TARGET_PROMPTS, divergence="js", variant=Variant(scale=0.5))
    backend._memo.clear()
    after = backend.divergences(TARGET_PROMPTS, divergence="js", variant=FINETUNED)
    assert np.all(zero == 0.0)
    assert np.all(half < before)
    np.testing.assert_array_equal(after, before)


def test_describe(backend, tiny, arch, device):
    info = backend.describe()
    assert info["name"] == "hf" and info["model"] == tiny[arch][0] and info["adapter"] == tiny[arch][1]
    where = "cpu" if device == "cpu" else "cuda:0"
    assert (info["device"], info["dtype"], info["batch_size"]) == (where, "float32", 32)


# -- adapters and checkpoints that would not measure what was asked for ----------------------


def _copy_adapter(adapter, tmp_path, name="adapter"):
    out = tmp_path / name
    shutil.copytree(adapter, out)
    return out


def test_an_adapter_whose_tensors_match_no_module_is_refused(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    model, adapter = tiny["llama"]
    renamed = _copy_adapter(adapter, tmp_path)
    weights = load_file(renamed / "adapter_model.safetensors")
    save_file({k.replace("layers.", "blocks."): v for k, v in weights.items()}, renamed / "adapter_model.safetensors")
    with pytest.raises(
        BackendError,
        match=r"did not load: \d+ of its \d+ tensors match no module of .*"
        r"base_model\.model\.model\.blocks\.0\..*every difference exactly 0",
    ):
        HFBackend(model, adapter=str(renamed))


def test_an_adapter_missing_some_tensors_is_refused(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    model, adapter = tiny["gpt2"]
    partial = _copy_adapter(adapter, tmp_path)
    weights = load_file(partial / "adapter_model.safetensors")
    dropped = sorted(weights)[0]
    save_file({k: v for k, v in weights.items() if k != dropped}, partial / "adapter_model.safetensors")
    with pytest.raises(BackendError, match=r"1 adapter weights the model expects are not in it \(" + dropped):
        HFBackend(model, adapter=str(partial))


def test_a_freshly_initialised_adapter_loads_and_measures_exactly_zero(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model, _ = tiny["llama"]
    fresh = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    fresh.save_pretrained(tmp_path / "fresh")  # lora_B is zero: a no-op, and legitimately so
    backend = HFBackend(model, adapter=str(tmp_path / "fresh"))
    assert np.all(backend.divergences(list(TARGET_PROMPTS), divergence="js") == 0.0)


@pytest.mark.parametrize("role", ["adapter", "model"])
def test_a_truncated_safetensors_file_is_named(tiny, tmp_path, role):
    model, adapter = tiny["llama"]
    if role == "adapter":
        adapter = _copy_adapter(adapter, tmp_path)
        damaged = adapter / "adapter_model.safetensors"
    else:
        model = _copy_adapter(model, tmp_path, "model")
        damaged = model / "model.safetensors"
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        BackendError,
        match=f"{role} .*{damaged.name} is truncated or corrupt: it is {len(data) // 2} "
        "bytes long but its header describes",
    ):
        HFBackend(str(model), adapter=str(adapter))


def test_an_adapter_folder_without_weights_and_a_model_that_is_an_adapter(tiny, tmp_path):
    model, adapter = tiny["llama"]
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(f"{adapter}/adapter_config.json", empty)
    with pytest.raises(BackendError, match="has no adapter weights"):
        HFBackend(model, adapter=str(empty))
    with pytest.raises(BackendError, match="is a PEFT adapter, not a model: pass it as --sway-adapter"):
        HFBackend(adapter, adapter=adapter)
