"""delta_kl: how far the fine-tune moves the next-token distribution.

Per prompt: the divergence between the base's and the fine-tuned model's
next-token distributions at the position after the prompt, over the full
vocabulary. Estimate: the mean over prompts.
"""

from __future__ import annotations

import numpy as np

from ..backends.base import FINETUNED
from ..divergence import DIVERGENCES, SUPPORT
from .base import Measurement, Param, Probe, boolean, choice, text_list

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
        Param("prompts", text_list, doc="prompts whose next-token distribution is compared"),
        Param("divergence", choice(*DIVERGENCES), "js", doc="js (default), kl, reverse_kl or tv"),
        Param("chat", boolean, False, doc="format each prompt with the tokenizer's chat template"),
    ),
    measure=measure,
    label_param="divergence",
)
