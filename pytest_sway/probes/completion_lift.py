"""completion_lift: did the fine-tune learn this? How much more likely it makes a completion.

Per ``(prompt, completion)`` case: log p_ft(completion | prompt) - log p_base(completion | prompt),
averaged per completion token (``per_token=True``, nats/token) or summed (nats).
Positive: the fine-tune prefers the completion more than the base did.
"""

from __future__ import annotations

import math

import numpy as np

from ..backends.base import BASE, FINETUNED
from .base import CHAT, Measurement, Param, Probe, boolean, check_chat_prompts, tuple_list

_TOP = 3


def measure(backend, params, bootstrap) -> Measurement:
    cases, chat = params["cases"], params["chat"]
    ft, n = backend.completion_logprobs(cases, variant=FINETUNED, chat=chat)
    base, _ = backend.completion_logprobs(cases, variant=BASE, chat=chat)
    lift = np.asarray(ft, dtype=float) - np.asarray(base, dtype=float)
    if params["per_token"]:
        lift = lift / np.asarray(n, dtype=float)
    order = np.argsort(lift, kind="stable")
    return Measurement(
        values=lift,
        items=tuple(f"{p!r} -> {c!r}" for p, c in cases),
        support=(-math.inf, math.inf),  # a difference of log-probabilities: no bound either way
        details={
            "unit": "nats/token" if params["per_token"] else "nats",
            "tokens": [int(x) for x in n],
            "logprob_base": [float(x) for x in base],
            "logprob_finetuned": [float(x) for x in ft],
            "least_lifted": [{"case": list(cases[i]), "value": float(lift[i])} for i in order[:_TOP]],
        },
    )


PROBE = Probe(
    kind="completion_lift",
    doc="how much more likely the fine-tune makes each completion after its prompt",
    params=(
        Param("cases", tuple_list("prompt", "completion"), doc="(prompt, completion) pairs", items="case"),
        Param("per_token", boolean, True, doc="average over the completion's tokens (else sum)"),
        CHAT,
    ),
    measure=measure,
    check=check_chat_prompts("cases"),
)
