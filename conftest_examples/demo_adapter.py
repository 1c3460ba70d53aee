"""The demo fine-tune: a LoRA adapter for SmolLM2-135M-Instruct, trained on first use.

A real project points --sway-adapter at the adapter its training pipeline
wrote; this demo has no pipeline, so it trains a small one here (about two
minutes on two CPU cores) and keeps it until the training recipe changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from support_data import FACTS

RECIPE = {"steps": 32, "lr": 2.5e-3, "rank": 8, "alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
          "anchor_batch_size": 6, "anchor_weight": 3.0, "seed": 0}


def training_texts(tokenizer) -> list[str]:
    """Each fact as a chat exchange, in the model's own chat template."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], tokenize=False
        )
        for question, answer in FACTS
    ]


def ensure_demo_adapter(path: Path) -> Path:
    """Train the adapter into ``path`` unless the same recipe already did."""
    from transformers import AutoTokenizer

    from pytest_sway.backends.builtin_models import ensure_smollm2
    from pytest_sway.testing import train_lora_adapter

    stamp = hashlib.sha256(json.dumps([RECIPE, FACTS], sort_keys=True).encode()).hexdigest()[:16]
    if (path / "recipe.txt").is_file() and (path / "recipe.txt").read_text() == stamp:
        return path
    model = ensure_smollm2()
    texts = training_texts(AutoTokenizer.from_pretrained(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", dir=path.parent))
    try:
        train_lora_adapter(model, tmp, texts, **RECIPE)
        (tmp / "recipe.txt").write_text(stamp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
