"""Adapter folders for vLLM, without vLLM: the refusals, and the scaled and null variant folders
checked against peft's own scaling and the hf backend's null adapter on a tiny offline Llama."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from pytest_sway.errors import BackendError

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("safetensors")
from peft import IA3Config, LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.helpers import rescale_adapter_scale  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from pytest_sway.backends.hf.null_adapter import null_adapter  # noqa: E402
from pytest_sway.backends.vllm import adapters  # noqa: E402
from pytest_sway.backends.vllm.adapters import check_adapter, lora_modules, variant_folder  # noqa: E402

TARGETS = ["q_proj", "v_proj", "down_proj"]
IDS = torch.tensor([[3, 17, 42, 99, 5, 64, 127, 1, 88, 23, 7, 50]])


def _base(layers=2):
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=128,
    )
    return LlamaForCausalLM(config).eval()


def _save(folder, *, layers=2, safe=True, peft_config=None, **lora):
    """A saved adapter whose lora_B are random and nonzero (a fresh one's are zero, a no-op)."""
    config = peft_config or LoraConfig(**{"r": 4, "target_modules": TARGETS, **lora})
    model = get_peft_model(_base(layers), config)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    model.save_pretrained(str(folder), safe_serialization=safe)
    return Path(folder)


def _edit_config(folder, **changes):
    path = Path(folder) / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _refusal(folder, max_lora_rank=8):
    with pytest.raises(BackendError) as info:
        check_adapter(folder, max_lora_rank=max_lora_rank)
    message = str(info.value)
    paragraphs = message.split("\n\n")
    assert all(str(folder) in p and "\n" not in p for p in paragraphs), message
    return message, paragraphs


def _loaded(folder, layers=2):
    return PeftModel.from_pretrained(_base(layers), str(folder)).eval()


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits.double()


# --- check_adapter ---------------------------------------------------------------------------------


def test_a_clean_adapter_passes_and_returns_its_config(tmp_path):
    folder = _save(tmp_path / "a")
    config = check_adapter(folder, max_lora_rank=8)
    assert config == json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == sorted(TARGETS)


def test_a_regex_target_modules_that_misses_the_head_passes(tmp_path):
    folder = _save(tmp_path / "a")
    _edit_config(folder, target_modules=r".*\.(q_proj|v_proj|down_proj)")
    assert check_adapter(folder, max_lora_rank=8)["target_modules"] == r".*\.(q_proj|v_proj|down_proj)"


def test_lm_head_in_target_modules_is_refused(tmp_path):
    folder = _save(tmp_path / "a", target_modules=["q_proj", "lm_head"])
    _, paragraphs = _refusal(folder)
    head = [p for p in paragraphs if "output head" in p]
    assert len(head) == 1
    assert "target_modules lists lm_head" in head[0]
    assert "base_model.model.lm_head" in head[0]  # and its saved LoRA tensors
    assert "vllm issue #51594" in head[0] and "hf backend" in head[0]
    assert "q_proj" not in head[0]


def test_an_embedding_lora_is_found_by_its_tensor_names(tmp_path):
    folder = _save(tmp_path / "a", target_modules=["q_proj", "embed_tokens"])
    _edit_config(folder, target_modules=["q_proj"])  # only the tensors still tell
    _, paragraphs = _refusal(folder)
    head = [p for p in paragraphs if "output head" in p]
    assert len(head) == 1
    assert "saved LoRA tensors include base_model.model.model.embed_tokens" in head[0]
    assert "target_modules" not in head[0].split("(")[1].split(")")[0]


def test_a_regex_target_modules_hitting_lm_head_is_refused(tmp_path):
    folder = _save(tmp_path / "a", target_modules=["q_proj"])
    _edit_config(folder, target_modules=r".*\.q_proj|lm_head")  # the tensors are clean: the regex tells
    message, paragraphs = _refusal(folder)
    assert len(paragraphs) == 1
    assert 'the target_modules regex ".*\\.q_proj|lm_head" matches lm_head). vLLM' in message
    # The same regex given to peft really does put a LoRA on lm_head: both are reported.
    real = _save(tmp_path / "b", target_modules=r".*\.q_proj|lm_head")
    message, _ = _refusal(real)
    assert "matches lm_head" in message and "saved LoRA tensors include base_model.model.lm_head" in message


def test_modules_to_save_is_refused(tmp_path):
    folder = _save(tmp_path / "a", modules_to_save=["norm"])
    _, paragraphs = _refusal(folder)
    assert len(paragraphs) == 2
    assert "full copies of modules norm (modules_to_save" in paragraphs[0]
    assert "modules_to_save=None" in paragraphs[0]
    # peft matches "norm" as a suffix: the blocks' layer norms are copied too (5 tensors, 4 named).
    assert "not LoRA matrices (base_model.model.model.layers.0.input_layernorm.weight, " in paragraphs[1]
    assert "and 1 more in adapter_model.safetensors" in paragraphs[1]


def test_dora_is_refused(tmp_path):
    folder = _save(tmp_path / "a", target_modules=["q_proj"], use_dora=True)
    message, paragraphs = _refusal(folder)
    assert len(paragraphs) == 1
    assert "DoRA" in message and "use_dora=False" in message
    assert (
        "base_model.model.model.layers.0.self_attn.q_proj, base_model.model.model.layers.1.self_attn.q_proj" in message
    )


def test_another_peft_method_is_refused(tmp_path):
    folder = _save(tmp_path / "a", peft_config=IA3Config(target_modules=["q_proj"], feedforward_modules=[]))
    _, paragraphs = _refusal(folder)
    assert "has peft_type 'IA3' in adapter_config.json, and vLLM serves LoRA adapters only" in paragraphs[0]
    assert any("ia3_l" in p and "not LoRA matrices" in p for p in paragraphs)


def test_trainable_token_indices_are_refused(tmp_path):
    folder = _save(tmp_path / "a")
    _edit_config(folder, trainable_token_indices=[5, 9])
    message, paragraphs = _refusal(folder)
    assert len(paragraphs) == 1 and "trainable_token_indices [5, 9]" in message


@pytest.mark.parametrize(
    ("rank", "max_rank", "suggested"),
    [(40, 16, 64), (9, 8, 16), (300, 256, 320), (512, 320, 512)],
)
def test_a_rank_above_max_lora_rank_is_refused_with_the_rank_to_use(tmp_path, rank, max_rank, suggested):
    folder = _save(tmp_path / "a", rank_pattern={"v_proj": rank})
    message, paragraphs = _refusal(folder, max_lora_rank=max_rank)
    assert len(paragraphs) == 1
    assert f"has LoRA rank {rank}, above max_lora_rank={max_rank}" in message
    assert f"raise max_lora_rank (--sway-vllm-args max_lora_rank={suggested}) to at least {rank}" in message
    assert f"rank_pattern['v_proj'] = {rank}" in message
    assert "base_model.model.model.layers.0.self_attn.v_proj has" in message
    assert check_adapter(folder, max_lora_rank=suggested)["rank_pattern"] == {"v_proj": rank}


def test_the_real_tensor_ranks_count_when_the_config_understates_them(tmp_path):
    folder = _save(tmp_path / "a", rank_pattern={"down_proj": 24})
    _edit_config(folder, rank_pattern={})  # the config now says r=4 everywhere; the tensors say 24
    message, _ = _refusal(folder, max_lora_rank=16)
    assert "raise max_lora_rank (--sway-vllm-args max_lora_rank=32) to at least 24" in message
    assert "base_model.model.model.layers.0.mlp.down_proj has 24 lora_A rows" in message


def test_a_rank_above_what_vllm_serves_says_so(tmp_path):
    folder = _save(tmp_path / "a", rank_pattern={"q_proj": 600})
    message, _ = _refusal(folder, max_lora_rank=512)
    assert "LoRA rank 600" in message and "ranks up to 512" in message and "--sway-vllm-args" not in message


def test_a_bin_only_adapter_is_refused(tmp_path):
    folder = _save(tmp_path / "a", safe=False)
    assert (folder / "adapter_model.bin").is_file() and not (folder / "adapter_model.safetensors").exists()
    _, paragraphs = _refusal(folder)
    assert paragraphs == [
        f"adapter {folder} has adapter_model.bin but no adapter_model.safetensors: vLLM loads "
        "adapter_model.safetensors; save the adapter with safe_serialization=True "
        "(model.save_pretrained(folder, safe_serialization=True))"
    ]


def test_every_problem_is_reported_at_once(tmp_path):
    folder = _save(tmp_path / "a", target_modules=["q_proj", "lm_head"], use_dora=True, r=16)
    _edit_config(folder, trainable_token_indices=[1])
    message, paragraphs = _refusal(folder, max_lora_rank=8)
    for part in ("DoRA", "output head", "not LoRA matrices", "trainable_token_indices", "max_lora_rank=16"):
        assert sum(part in p for p in paragraphs) == 1, (part, message)


def test_a_folder_without_a_config_is_refused(tmp_path):
    with pytest.raises(BackendError, match="has no adapter_config.json"):
        check_adapter(tmp_path, max_lora_rank=8)


# --- variant folders -------------------------------------------------------------------------------


def test_scale_one_without_a_seed_is_the_adapter_folder_itself(tmp_path):
    folder = _save(tmp_path / "a")
    assert variant_folder(folder, root=tmp_path / "cache") == folder
    assert not (tmp_path / "cache").exists()


def test_the_scaled_folder_multiplies_lora_b_and_nothing_else(tmp_path):
    folder = _save(tmp_path / "a")
    scaled = variant_folder(folder, scale=0.5, root=tmp_path / "cache")
    assert scaled.parent == tmp_path / "cache" and scaled.name.endswith("-scale-0.5")
    assert (scaled / "adapter_config.json").read_bytes() == (folder / "adapter_config.json").read_bytes()
    original, new = load_file(folder / "adapter_model.safetensors"), load_file(scaled / "adapter_model.safetensors")
    assert sorted(original) == sorted(new) and len(original) == 2 * 2 * len(TARGETS)
    for name, tensor in original.items():
        expected = tensor * 0.5 if ".lora_B." in name else tensor  # halving is exact in float32
        assert new[name].dtype == tensor.dtype and torch.equal(new[name], expected), name


@pytest.mark.parametrize("scale", [0.5, 0.3, 2.0, -1.0])
def test_the_scaled_folder_matches_peft_rescale_adapter_scale(tmp_path, scale):
    folder = _save(tmp_path / "a")
    scaled = variant_folder(folder, scale=scale, root=tmp_path / "cache")
    model = _loaded(folder)
    unscaled = _logits(model)
    with rescale_adapter_scale(model, scale):
        expected = _logits(model)
    got = _logits(_loaded(scaled))
    assert (expected - unscaled).abs().max() > 1e-3  # the scale does change the answers
    assert torch.allclose(got, expected, rtol=0, atol=1e-5)


def _lora_weights(model):
    return {
        name: (layer.lora_A[adapter].weight.detach().clone(), layer.lora_B[adapter].weight.detach().clone())
        for name, layer in model.named_modules()
        if isinstance(layer, LoraLayer)
        for adapter in layer.active_adapters
    }


def _update_norms(weights):
    return {name: float(torch.linalg.matrix_norm(b.double() @ a.double())) for name, (a, b) in weights.items()}


@pytest.mark.parametrize("seed", [0, 7])
def test_the_null_folder_is_the_hf_backends_null_adapter(tmp_path, seed):
    folder = _save(tmp_path / "a")
    null = variant_folder(folder, null_seed=seed, root=tmp_path / "cache")
    assert null.name.endswith(f"-null-{seed}")
    served = _loaded(null)
    model = _loaded(folder)
    trained_logits, trained_weights = _logits(model), _lora_weights(model)
    with null_adapter(model, seed):
        expected_logits, expected_weights = _logits(model), _lora_weights(model)
    got_weights = _lora_weights(served)
    assert got_weights.keys() == expected_weights.keys() and len(got_weights) == 2 * len(TARGETS)
    for name, (a, b) in expected_weights.items():
        assert torch.equal(got_weights[name][0], a) and torch.equal(got_weights[name][1], b), name
    got_logits = _logits(served)
    assert torch.allclose(got_logits, expected_logits, rtol=0, atol=1e-6)
    assert (got_logits - trained_logits).abs().max() > 1e-3  # a null adapter is not the trained one
    # Independently of null_adapter: same update sizes as the trained adapter, new directions.
    got_norms, trained_norms = _update_norms(got_weights), _update_norms(trained_weights)
    for name in trained_norms:
        assert got_norms[name] == pytest.approx(trained_norms[name], rel=1e-5)
        assert not torch.allclose(got_weights[name][0], trained_weights[name][0])


def test_different_seeds_give_different_null_weights(tmp_path):
    folder = _save(tmp_path / "a")
    one = load_file(variant_folder(folder, null_seed=1, root=tmp_path / "cache") / "adapter_model.safetensors")
    two = load_file(variant_folder(folder, null_seed=2, root=tmp_path / "cache") / "adapter_model.safetensors")
    again = load_file(variant_folder(folder, null_seed=1, root=tmp_path / "other") / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    assert all(not torch.equal(one[name], two[name]) for name in one)
    assert all(torch.equal(one[name], again[name]) for name in one)


def test_modules_sort_as_peft_names_them_past_ten_layers(tmp_path):
    """With 12 layers, string order puts layers.10 before layers.2, as the hf backend's sort does."""
    folder = _save(tmp_path / "a", layers=12)
    names = list(load_file(folder / "adapter_model.safetensors"))
    model = _loaded(folder, layers=12)
    peft_order = sorted(name for name, module in model.named_modules() if isinstance(module, LoraLayer))
    assert list(lora_modules(names)) == peft_order
    assert peft_order.index("base_model.model.model.layers.10.mlp.down_proj") < peft_order.index(
        "base_model.model.model.layers.2.mlp.down_proj"
    )
    null = _loaded(variant_folder(folder, null_seed=3, root=tmp_path / "cache"), layers=12)
    with null_adapter(model, 3):
        expected = _lora_weights(model)
    got = _lora_weights(null)
    assert all(torch.equal(got[n][0], expected[n][0]) and torch.equal(got[n][1], expected[n][1]) for n in expected)


def test_a_null_scaled_folder_is_the_null_adapter_rescaled(tmp_path):
    folder = _save(tmp_path / "a")
    both = variant_folder(folder, null_seed=4, scale=0.5, root=tmp_path / "cache")
    null = variant_folder(folder, null_seed=4, root=tmp_path / "cache")
    assert both.name.endswith("-null-4-scale-0.5")
    got, plain = load_file(both / "adapter_model.safetensors"), load_file(null / "adapter_model.safetensors")
    assert all(torch.equal(got[n], plain[n] * 0.5 if ".lora_B." in n else plain[n]) for n in plain)


def test_the_folder_is_built_once(tmp_path):
    folder = _save(tmp_path / "a")
    first = variant_folder(folder, scale=0.5, root=tmp_path / "cache")
    weights = first / "adapter_model.safetensors"
    before = (weights.stat().st_mtime_ns, weights.stat().st_ino, first.stat().st_ino)
    time.sleep(0.01)
    second = variant_folder(folder, scale=0.5, root=tmp_path / "cache")
    assert second == first
    assert (weights.stat().st_mtime_ns, weights.stat().st_ino, first.stat().st_ino) == before
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [first.name]
    # Other content is another folder: the name follows the files, not the folder's path.
    _save(tmp_path / "b", r=8)
    assert variant_folder(tmp_path / "b", scale=0.5, root=tmp_path / "cache") != first
    shutil.copytree(folder, tmp_path / "copy")
    assert variant_folder(tmp_path / "copy", scale=0.5, root=tmp_path / "cache") == first


def test_a_half_built_folder_does_not_count_as_complete(tmp_path):
    folder = _save(tmp_path / "a")
    root = tmp_path / "cache"
    target = variant_folder(folder, scale=0.5, root=root)
    expected = load_file(target / "adapter_model.safetensors")
    shutil.rmtree(target)
    # A crashed builder's temporary folder (two hours old), one still being built, and a folder under
    # the final name that lost its weights.
    stale, busy = root / f".{target.name}.crash.tmp", root / f".{target.name}.busy.tmp"
    for leftover in (stale, busy, target):
        leftover.mkdir()
        shutil.copyfile(folder / "adapter_config.json", leftover / "adapter_config.json")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    again = variant_folder(folder, scale=0.5, root=root)
    assert again == target
    got = load_file(target / "adapter_model.safetensors")
    assert got.keys() == expected.keys() and all(torch.equal(got[n], expected[n]) for n in got)
    assert not stale.exists() and busy.is_dir()


def test_a_builder_that_loses_the_race_uses_the_winners_folder(tmp_path, monkeypatch):
    folder = _save(tmp_path / "a")
    root = tmp_path / "cache"
    real = adapters._scaled_tensors
    winner = {}

    def slow_builder(tensors, scale):
        # Another builder starts later and finishes first, while this one is still building.
        monkeypatch.setattr(adapters, "_scaled_tensors", real)
        path = variant_folder(folder, scale=scale, root=root)
        winner["path"], winner["inode"] = path, (path / "adapter_model.safetensors").stat().st_ino
        return real(tensors, scale)

    monkeypatch.setattr(adapters, "_scaled_tensors", slow_builder)
    got = variant_folder(folder, scale=0.5, root=root)
    assert got == winner["path"]
    assert (got / "adapter_model.safetensors").stat().st_ino == winner["inode"]  # the winner's, kept
    assert [p.name for p in root.iterdir()] == [got.name]  # the loser's temporary folder is gone


def test_variant_folder_refuses_what_it_cannot_build(tmp_path):
    folder = _save(tmp_path / "a")
    with pytest.raises(BackendError, match="finite number"):
        variant_folder(folder, scale=float("nan"), root=tmp_path / "cache")
    with pytest.raises(BackendError, match="seed must be an integer"):
        variant_folder(folder, null_seed=1.5, root=tmp_path / "cache")
    dora = _save(tmp_path / "dora", target_modules=["q_proj"], use_dora=True)
    with pytest.raises(BackendError, match="lora_magnitude_vector"):
        variant_folder(dora, null_seed=1, root=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-built stays behind
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(BackendError, match="has no adapter_model.safetensors"):
        variant_folder(folder, scale=0.5, root=tmp_path / "cache")
