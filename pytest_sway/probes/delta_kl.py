"""delta_kl: how far the fine-tune moves the next-token distribution.

Per prompt: the divergence between the base's and the fine-tuned model's
next-token distributions at the position after the prompt, over the full
vocabulary. Estimate: the mean over prompts.
"""

from __future__ import annotations

import numpy as np

from ..backends.base import FINETUNED
from ..divergence import SUPPORT
from .base import CHAT, Measurement, Param, Probe, check_chat_prompts, divergence_param, prompt_list

# How many of the most-moved prompts to keep in the details.
_TOP = 3


def measure(backend, params, bootstrap) -> Measurement:
    values = np.asarray(
        backend.divergences(params["prompts"], divergence=params["divergence"], variant=FINETUNED, chat=params["chat"]),
        dtype=np.float64,
    )
    order = np.argsort(-values, kind="stable")[:_TOP]
    return Measurement(
        values=values,
        items=params["prompts"],
        details={"most_moved": [{"prompt": params["prompts"][i], "value": float(values[i])} for i in order]},
        support=SUPPORT[params["divergence"]],
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
