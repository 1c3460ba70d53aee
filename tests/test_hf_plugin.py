"""The plugin driving the Hugging Face backend on tiny offline models."""

import importlib.util
import json
import shutil

import pytest
from conftest import CONTROL_PROMPTS, TARGET_PROMPTS

pytest.importorskip("torch")
pytest.importorskip("peft")

SUITE = f"""
import pytest
TARGET = {list(TARGET_PROMPTS)!r}
CONTROL = {list(CONTROL_PROMPTS)!r}

@pytest.mark.sway_probe("delta_kl", prompts=TARGET, above=0.2)
def test_moves_targets():
    pass

@pytest.mark.sway_probe("delta_kl", prompts=TARGET, divergence="tv", above=0.2)
def test_moves_targets_tv():
    pass

@pytest.mark.sway_probe("delta_kl", prompts=CONTROL, below=0.1)
def test_leaves_controls():
    pass

def test_each_prompt_was_forwarded_once_per_variant(sway):
    assert sway.backend.forwarded[("next", "base")] == len(set(TARGET + CONTROL))
    assert sway.backend.forwarded[("next", "fine-tuned")] == len(set(TARGET + CONTROL))
"""


def test_model_and_adapter_options_gate_a_real_fine_tune(pytester, tiny):
    model, adapter = tiny["llama"]
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(
        f"--sway-model={model}",
        f"--sway-adapter={adapter}",
        "--sway-json=out.json",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            f"sway: backend hf, model {model}, adapter {adapter}, seed 0",
            f"backend hf {model} + {adapter} (cpu, float32) · *",
        ]
    )
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["backend"] == {
        "name": "hf",
        "model": model,
        "adapter": adapter,
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 32,
    }
    assert [r["outcome"] for r in doc["results"]] == ["passed"] * 3


def test_ini_options_for_the_model(pytester, tiny):
    model, adapter = tiny["gpt2"]
    pytester.makeini(f"[pytest]\nsway_model = {model}\nsway_adapter = {adapter}\nsway_batch_size = 3\n")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["backend hf * (cpu, float32) · *"])


def test_fully_fine_tuned_checkpoint(pytester, tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, adapter = tiny["llama"]
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), adapter).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(model).save_pretrained(tmp_path / "merged")
    pytester.makepyfile(SUITE.replace("def test_each_prompt", "def skip_each_prompt"))
    result = pytester.runpytest(
        f"--sway-model={model}", f"--sway-finetuned={tmp_path / 'merged'}", "--sway-json=out.json"
    )
    result.assert_outcomes(passed=3)
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["backend"]["finetuned"] == str(tmp_path / "merged")


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--sway-adapter={adapter}", "--sway-finetuned={model}"],
            "are both set: compare the base with an adapter or with a fine-tuned checkpoint, not both",
        ),
        ([], "--sway-model is set, but nothing to compare it with: add --sway-adapter=PATH"),
        (
            ["--sway-adapter={adapter}", "--sway-device=tpu"],
            "--sway-device='tpu': expected auto, cpu, cuda, cuda:N or mps",
        ),
        (
            ["--sway-adapter={adapter}", "--sway-dtype=float8"],
            "--sway-dtype='float8': expected auto, float32, bfloat16 or float16",
        ),
        (["--sway-adapter={adapter}", "--sway-batch-size=0"], "--sway-batch-size='0': must be at least 1"),
        (
            ["--sway-adapter={adapter}", "--sway-device=cpu", "--sway-device-map=auto"],
            "--sway-device-map and --sway-device are both set",
        ),
    ],
)
def test_model_option_problems_are_usage_errors(pytester, tiny, args, message):
    model, adapter = tiny["llama"]
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(f"--sway-model={model}", *[a.format(model=model, adapter=adapter) for a in args])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_missing_ml_packages_are_a_usage_error_naming_the_extra(pytester, tiny, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    model, adapter = tiny["llama"]
    result = pytester.runpytest(f"--sway-model={model}", f"--sway-adapter={adapter}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "the hf backend needs peft, which is not installed: pip install 'pytest-sway[hf]'" in result.stderr.str()


def test_a_load_failure_fails_every_sway_test_once(pytester, tiny):
    llama, _ = tiny["llama"]
    _, gpt2_adapter = tiny["gpt2"]
    pytester.makepyfile(SUITE + "\ndef test_plain():\n    pass\n")
    result = pytester.runpytest(f"--sway-model={llama}", f"--sway-adapter={gpt2_adapter}", "-p", "no:randomly")
    result.assert_outcomes(passed=1, errors=4)
    text = result.stdout.str()
    assert text.count("the hf backend could not be built: adapter") >= 4
    assert "does not fit base model" in text


def test_an_unavailable_device_fails_sway_tests_with_the_reason(pytester, tiny):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    model, adapter = tiny["llama"]
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(f"--sway-model={model}", f"--sway-adapter={adapter}", "--sway-device=cuda")
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(["*--sway-device=cuda, but torch sees no CUDA device*"])


def test_nan_logits_and_long_prompts_fail_the_test_naming_the_prompt(pytester, tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    model, adapter = tiny["llama"]
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    weights = load_file(broken / "model.safetensors")
    weights["lm_head.weight"][:, 0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.sway_probe("delta_kl", prompts=["The capital of France is", "The capital of Spain is"], above=0.1)
        def test_nan():
            pass

        @pytest.mark.sway_probe("delta_kl", prompts=["short", "word " * 600], above=0.1)
        def test_too_long():
            pass
        """
    )
    result = pytester.runpytest(f"--sway-model={broken}", f"--sway-adapter={adapter}", "--sway-json=out.json")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*delta_kl: the base model returned NaN or infinite logits for prompt 'The capital of * is'*",
            "*delta_kl: prompt 'word word word*' is * tokens long, more than the model's context of 256 tokens; shorten it*",
        ]
    )
    doc = json.loads((pytester.path / "out.json").read_text())
    assert [r["outcome"] for r in doc["results"]] == ["error", "error"]


def test_fixture_probe_errors_fail_cleanly(pytester, tiny):
    model, adapter = tiny["llama"]
    pytester.makepyfile("def test_long(sway):\n    sway.delta_kl(['short', 'word ' * 600])\n")
    result = pytester.runpytest(f"--sway-model={model}", f"--sway-adapter={adapter}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*prompt 'word word*' is * tokens long, more than the model's context of 256 tokens*"])
    assert "Traceback" not in result.stdout.str()
