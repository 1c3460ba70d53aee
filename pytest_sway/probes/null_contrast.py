"""null_contrast: does the adapter move these prompts more than a random update of its size?

A null adapter has the real adapter's structure and per-module update norm
``||B A||_F`` but random directions (seeded). Per prompt: delta_kl(adapter)
minus the mean over ``seeds`` null adapters of delta_kl(null). ``above=0``
gates "more than chance"; the real weights are restored afterwards.
"""

from __future__ import annotations

import numpy as np

from ..backends.base import FINETUNED, Variant, divergences_by_variant
from ..backends.divergence import SUPPORT
from ..backends.topk import refuse_bounds
from .base import CHAT, Measurement, Param, Probe, check_chat_prompts, divergence_param, integer, prompt_list


def measure(backend, params, bootstrap) -> Measurement:
    prompts, kind, chat = params["prompts"], params["divergence"], params["chat"]
    variants = [FINETUNED] + [Variant(null_seed=seed) for seed in range(1, params["seeds"] + 1)]
    real, *each = (
        refuse_bounds("null_contrast", v)
        for v in divergences_by_variant(backend, prompts, divergence=kind, variants=variants, chat=chat)
    )
    nulls = np.stack(each)
    floor = nulls.mean(axis=0)
    low, high = SUPPORT[kind]
    return Measurement(
        values=real - floor,
        items=prompts,
        details={
            "adapter_mean": float(real.mean()),
            "null_mean": float(floor.mean()),
            "null_per_seed": [float(x) for x in nulls.mean(axis=1)],
            "ratio": float(real.mean() / floor.mean()) if floor.mean() > 0 else None,
        },
        support=(low - high, high - low),
    )


PROBE = Probe(
    kind="null_contrast",
    doc="divergence under the adapter minus under random adapters of the same size, per prompt",
    params=(
        Param("prompts", prompt_list, items="prompt", doc="prompts the adapter should move"),
        Param("seeds", integer(1), 3, doc="how many null adapters to average"),
        divergence_param(),
        CHAT,
    ),
    measure=measure,
    check=check_chat_prompts("prompts"),
    label_param="divergence",
)
