"""How much faster does choice_accuracy score with the choices of a question packed in one row?

    python benchmarks/bench_packed.py                  # the 600 shipped questions, base model (~4 min on 2 cores)
    python benchmarks/bench_packed.py --questions 100 --variant fine-tuned --threads 1

Scores the shipped multiple-choice questions (``pytest_sway.suites.default``) the way
choice_accuracy does (every (question, choice) pair through ``completion_logprobs``) on
SmolLM2-135M, in two fresh backends of one process: ``pack_shared_prompts=False`` (one
right-padded row per pair, as before packing) and the default (the choices of a question in
one packed row). It prints the seconds each spent scoring (model loading not counted), their
ratio, the forward calls, items and token positions each forwarded, the largest absolute
difference between the two in a pair's summed log-probability and in one token's, and
whether both pick the same choice for every question. Each backend first scores a
two-choice warm-up question, untimed (in the packed one that is also the session's check
of packing against unpacked scoring); its passes are counted. The adapter is a 2-step LoRA on
q_proj and v_proj, trained into a temporary folder (only the fine-tuned variant uses it).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


WARM_UP = "Question: is this a warm-up?\nAnswer:"


def score(base: str, adapter: str, pairs: list, *, pack: bool, variant) -> dict:
    """One fresh backend's per-token scores of ``pairs`` under ``variant``, timed."""
    from pytest_sway.backends.hf import HFBackend

    backend = HFBackend(base, adapter=adapter, pack_shared_prompts=pack)
    # Warm-up, untimed: torch's first passes, and the packed backend's check of its first group.
    backend.completion_logprobs([(WARM_UP, " yes"), (WARM_UP, " no")], variant=variant)
    items = [backend.completion_tokens(q, c, chat=False) for q, c in pairs]
    started = time.perf_counter()
    scores = backend.token_logprobs(items, variant, labels=[repr(p) for p in pairs], pack=True)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "scores": scores,
        "calls": sum(backend.forward_calls.values()),
        "items": sum(backend.forwarded.values()),
        "tokens": sum(backend._passes.forwarded_tokens.values()),
        "packing": backend.describe().get("packing", "on"),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=600, help="how many of the shipped questions (default 600)")
    parser.add_argument("--variant", choices=("base", "fine-tuned"), default="base", help="which model scores")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (on a shared machine 1 is steadier than 2)"
    )
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from pytest_sway.backends.base import BASE, FINETUNED
    from pytest_sway.backends.builtin_models import ensure_smollm2
    from pytest_sway.suites import default
    from pytest_sway.testing import train_lora_adapter

    questions = default.questions()[: args.questions]
    pairs = [(q, c) for q, choices, _ in questions for c in choices]
    base = str(ensure_smollm2())
    variant = BASE if args.variant == "base" else FINETUNED
    print(
        f"# {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"# SmolLM2-135M float32 on the CPU, {variant} variant: {len(questions)} questions, {len(pairs)} pairs")
    with tempfile.TemporaryDirectory() as tmp:
        adapter = str(Path(tmp) / "adapter")
        train_lora_adapter(
            base, adapter, ["Refunds take 45 days."], steps=2, target_modules=["q_proj", "v_proj"], anchor_texts=()
        )
        unpacked = score(base, adapter, pairs, pack=False, variant=variant)
        packed = score(base, adapter, pairs, pack=True, variant=variant)
    token_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(packed["scores"], unpacked["scores"]))
    sums = [np.array([s.sum() for s in run["scores"]]) for run in (packed, unpacked)]
    picks = []
    for run_sums in sums:
        at, chosen = 0, []
        for _, choices, _ in questions:
            chosen.append(int(np.argmax(run_sums[at : at + len(choices)])))
            at += len(choices)
        picks.append(chosen)
    print(f"{'':10} {'seconds':>8} {'calls':>6} {'items':>6} {'tokens':>8}")
    for name, run in (("unpacked", unpacked), ("packed", packed)):
        print(f"{name:10} {run['seconds']:8.1f} {run['calls']:6d} {run['items']:6d} {run['tokens']:8d}")
    print(f"speed-up (unpacked / packed seconds): {unpacked['seconds'] / packed['seconds']:.2f}x")
    print(f"token positions forwarded, unpacked / packed: {unpacked['tokens'] / packed['tokens']:.2f}x")
    print(
        f"largest |packed - unpacked|: {float(np.max(np.abs(sums[0] - sums[1]))):.3g} nats per pair,",
        f"{token_diff:.3g} nats per token",
    )
    same = sum(a == b for a, b in zip(*picks))
    print(f"same choice picked: {same} of {len(questions)} questions; packing {packed['packing']}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
