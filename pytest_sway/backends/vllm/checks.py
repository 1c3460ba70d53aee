"""Self-checks of the engine, run once when the backend starts, before any number is used.

Each is a refusal, not a warning: an engine that fails one would give numbers
that look right and are not.

* **The adapter is applied.** The fine-tune's next-token log-probabilities must
  differ from the base's on the check prompts, unless the adapter's update is
  exactly zero (a freshly initialised LoRA): an adapter that loads and changes
  nothing is a known way for a served LoRA to fail.
* **Prompt and generation log-probabilities agree.** The log-probability the
  engine gives a greedily generated token must equal the prompt log-probability
  of the same token appended to the prompt, with and without the adapter: a
  LoRA whose effect is dropped from ``prompt_logprobs`` (vllm#51594) fails it.
* **Batch-composition noise is measured**, not assumed: the same prompts in one
  order and in the reverse order; the largest change of a log-probability is
  the engine's noise floor, stated in the report's footer, so that no threshold
  is set below what rounding alone moves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import BackendError

#: Short prompts of different lengths and kinds (the check's batch mixes lengths on purpose).
CHECK_TEXTS = (
    "The capital of France is",
    "Water boils at a temperature of",
    "def add(a, b):\n    return",
    "Once upon a time, there was a",
    "1, 2, 3, 4, 5,",
    "The opposite of hot is",
    "My favourite colour is",
    "In 1969, astronauts",
)
#: Log-probabilities compared per check prompt and side.
CHECK_TOKENS = 20
#: Most a prompt log-probability may differ from the generation log-probability of the same token.
AGREEMENT = 1e-3


def run(backend) -> dict:
    """Run every check on ``backend``'s engine; ``{"adapter_change", "logprob_agreement",
    "noise_floor"}`` (largest absolute differences, in nats), or ``BackendError``."""
    engine, adapter = backend.engine, backend.adapter_path
    seqs = [tuple(backend.tokenizer(text)["input_ids"]) for text in CHECK_TEXTS]
    cap = engine.max_logprobs  # vLLM refuses a request for more log-probabilities than its cap
    k = CHECK_TOKENS if cap in (-1, None) else min(CHECK_TOKENS, int(cap))
    base = engine.next_logprobs(seqs, None, k)
    tuned = engine.next_logprobs(seqs, adapter, k)
    change = max(_largest_change(b, t) for b, t in zip(base, tuned))
    moved = change > 0.0 or any(set(b[0].tolist()) != set(t[0].tolist()) for b, t in zip(base, tuned))
    if not moved and update_is_nonzero(adapter):
        raise BackendError(
            f"vLLM served adapter {adapter} and it changed nothing: on {len(seqs)} check prompts the base's and "
            f"the adapter's top-{k} next-token log-probabilities are identical, though the adapter's "
            "LoRA weights are not zero. The engine is not applying it (check that its target modules are ones "
            "this vLLM version supports for the model, and the engine's log for LoRA warnings); the hf backend "
            "(--sway-backend=hf) applies it with peft"
        )
    agreement = 0.0
    for side, served in (("base model", None), (f"adapter {adapter}", adapter)):
        generated = engine.greedy(seqs, served, 1, eos=None)
        extended = [seq + ids for seq, (ids, _) in zip(seqs, generated)]
        scored = engine.prompt_logprobs(extended, served)
        for seq, (ids, logp), scores in zip(seqs, generated, scored):
            gap = abs(float(scores[-1]) - float(logp[0]))
            agreement = max(agreement, gap)
            if not gap <= AGREEMENT:
                raise BackendError(
                    f"vLLM's prompt log-probabilities disagree with its generation log-probabilities for the "
                    f"{side}: token {ids[0]} after a {len(seq)}-token check prompt has log-probability "
                    f"{float(logp[0]):.6g} when generated and {float(scores[-1]):.6g} as a prompt token (off by "
                    f"{gap:.3g}, more than {AGREEMENT:g}). Completion and perplexity probes read prompt "
                    "log-probabilities, so their numbers would be wrong: a LoRA on lm_head is dropped from "
                    "prompt_logprobs in some vLLM versions (vllm#51594); upgrade vLLM or use the hf backend"
                )
    shuffled = list(reversed(seqs))
    noise = 0.0
    for served in (None, adapter):
        forward = engine.next_logprobs(seqs, served, k)
        backward = dict(zip(shuffled, engine.next_logprobs(shuffled, served, k)))
        noise = max([noise] + [_largest_change(a, backward[seq]) for seq, a in zip(seqs, forward)])
    return {"adapter_change": change, "logprob_agreement": agreement, "noise_floor": noise}


def _largest_change(a, b) -> float:
    """Largest absolute log-probability difference over the tokens both returned."""
    (a_ids, a_logp), (b_ids, b_logp) = a, b
    both, ia, ib = np.intersect1d(a_ids, b_ids, return_indices=True)
    return float(np.max(np.abs(a_logp[ia] - b_logp[ib]))) if len(both) else 0.0


def update_is_nonzero(adapter: str) -> bool:
    """Whether any ``lora_B`` weight of the adapter's safetensors is nonzero (a freshly
    initialised LoRA has ``B = 0``: it changes nothing, and the engine is right to agree)."""
    from safetensors import safe_open

    path = Path(adapter) / "adapter_model.safetensors"
    if not path.is_file():
        return True  # nothing to read here: assume it should change something
    with safe_open(str(path), framework="pt") as fh:
        return any(bool(fh.get_tensor(name).abs().sum() > 0) for name in fh.keys() if "lora_B" in name)  # noqa: SIM118 (safe_open has no __iter__)
