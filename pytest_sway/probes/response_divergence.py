"""response_divergence: how far the fine-tune moves the distribution over a whole answer.

Per item, a response is teacher-forced through the base and the fine-tune; at
every response position the full-vocabulary divergence between their
next-token distributions is computed on the device. Per-item value: the mean
over the response's positions. The response is given (``pairs``) or is the
base model's greedy continuation of the prompt (``prompts``, up to
``max_new_tokens`` tokens).

Details: per item the largest divergence, the position and token where it
peaks and the top-1 agreement rate (how often both models' most likely next
token is the same); over all positions of the test, the distribution of the
per-position values (median, p90, p99, max).
"""

from __future__ import annotations

import numpy as np

from ..backends.base import FINETUNED
from ..backends.divergence import SUPPORT
from ..backends.topk import refuse_bounds
from .base import (
    CHAT,
    Measurement,
    Param,
    Probe,
    check_chat_prompts,
    divergence_param,
    integer,
    optional,
    prompt_list,
    tuple_list,
)

_TOP = 3


def measure(backend, params, bootstrap) -> Measurement:
    pairs, kind, chat = params["pairs"], params["divergence"], params["chat"]
    if pairs is not None:
        prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
        items = tuple(f"{p!r} -> {r!r}" for p, r in pairs)
    else:
        prompts, responses = list(params["prompts"]), None
        items = tuple(params["prompts"])
    results = backend.response_divergences(
        prompts, responses, divergence=kind, variant=FINETUNED, chat=chat, max_new_tokens=params["max_new_tokens"]
    )
    for r in results:
        refuse_bounds("response_divergence", r.values)  # a mean of per-position intervals is not gated here
    values = np.array([float(np.mean(r.values)) for r in results])
    per_item = []
    for r in results:
        peak = int(np.argmax(r.values))
        per_item.append(
            {
                "positions": len(r.values),
                "max": float(r.values[peak]),
                "peak_position": peak,
                "peak_token": backend.decode([r.tokens[peak]]),
                "agreement": float(np.mean(r.agree)),
            }
        )
    pooled = np.concatenate([np.asarray(r.values, dtype=np.float64) for r in results])
    order = np.argsort(-values, kind="stable")[:_TOP]
    return Measurement(
        values=values,
        items=items,
        details={
            "unit": "mean divergence per response position",
            "per_item": per_item,
            "positions": {
                "count": int(pooled.size),
                "median": float(np.median(pooled)),
                "p90": float(np.percentile(pooled, 90)),
                "p99": float(np.percentile(pooled, 99)),
                "max": float(pooled.max()),
            },
            "agreement": float(np.mean(np.concatenate([r.agree for r in results]))),
            "most_moved": [
                {
                    "item": items[i],
                    "value": float(values[i]),
                    "response": backend.decode(results[i].tokens),
                    "peak_token": per_item[i]["peak_token"],
                    "peak_position": per_item[i]["peak_position"],
                }
                for i in order
            ],
        },
        support=SUPPORT[kind],
    )


def check(params) -> None:
    if (params["pairs"] is None) == (params["prompts"] is None):
        raise ValueError(
            "give either pairs=[(prompt, response), ...] or prompts=[...] (the response is then the base model's "
            "greedy continuation), not both"
            if params["pairs"] is not None
            else "give pairs=[(prompt, response), ...], or prompts=[...] to compare over the base model's greedy continuation"
        )
    check_chat_prompts("pairs")(params)
    check_chat_prompts("prompts")(params)


PROBE = Probe(
    kind="response_divergence",
    doc="mean divergence of the next-token distributions over a teacher-forced response, per item",
    params=(
        Param(
            "pairs",
            optional(tuple_list("prompt", "response")),
            None,
            items="pair",
            doc="(prompt, response) pairs; the response is teacher-forced through both models",
        ),
        Param(
            "prompts",
            optional(prompt_list),
            None,
            items="prompt",
            doc="prompts whose response is the base model's greedy continuation",
        ),
        Param("max_new_tokens", integer(1), 32, doc="length of the greedy response (with prompts=)"),
        divergence_param(),
        CHAT,
    ),
    measure=measure,
    label_param="divergence",
    check=check,
)
