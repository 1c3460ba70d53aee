"""delta_kl: how far the fine-tune moves the next-token distribution.

Per prompt: the divergence between the base's and the fine-tuned model's
next-token distributions at the position after the prompt, over the full
vocabulary. Estimate: the mean over prompts.

Details: the most moved prompts, and what moved, token by token: per prompt the
tokens whose probability the fine-tune raised most and lowered most, and over
the prompts the tokens most often promoted and suppressed
(``pytest_sway.backends.token_changes``).
"""

from __future__ import annotations

import numpy as np

from ..backends.base import FINETUNED, divergences_with_tokens
from ..backends.divergence import SUPPORT
from ..backends.token_changes import TOP_TOKENS, evidence_lines, token_details
from ..backends.topk import split_bounds
from .base import CHAT, Measurement, Param, Probe, check_chat_prompts, divergence_param, prompt_list

# How many of the most-moved prompts to keep in the details.
_TOP = 3


def measure(backend, params, bootstrap, *, top_tokens: int = TOP_TOKENS) -> Measurement:
    """The probe; ``top_tokens=0`` leaves out the token lists (what the benchmark compares)."""
    prompts = params["prompts"]
    if top_tokens:
        values, tops = divergences_with_tokens(
            backend, prompts, divergence=params["divergence"], top_tokens=top_tokens, variant=FINETUNED,
            chat=params["chat"],
        )  # fmt: skip
    else:
        values = backend.divergences(prompts, divergence=params["divergence"], variant=FINETUNED, chat=params["chat"])
        tops = None
    values, bounds = split_bounds(values)  # bounds: an engine that returned only the top-k log-probabilities
    order = np.argsort(-values, kind="stable")[:_TOP]
    details: dict = {"most_moved": [{"prompt": prompts[i], "value": float(values[i])} for i in order]}
    if tops is not None:
        details.update(token_details(prompts, tops, k=top_tokens))
        details["evidence"] = evidence_lines(details, len(prompts))
    return Measurement(
        values=values, items=prompts, details=details, support=SUPPORT[params["divergence"]], bounds=bounds
    )


PROBE = Probe(
    kind="delta_kl",
    doc="divergence between base and fine-tuned next-token distributions, per prompt",
    params=(
        Param("prompts", prompt_list, items="prompt", doc="prompts whose next-token distribution is compared"),
        divergence_param(),
        CHAT,
    ),
    measure=measure,
    check=check_chat_prompts("prompts"),
    label_param="divergence",
)
