"""preference_shift: does the fine-tune prefer the right answer more than the base did?

Per ``(prompt, chosen, rejected)`` triple: margin_ft - margin_base, where
margin = log p(chosen | prompt) - log p(rejected | prompt), log-probabilities
summed over each completion's tokens (or averaged, ``per_token=True``).
Details give the flip rates: of the triples the base got wrong (margin < 0),
the share the fine-tune gets right, and the reverse.
"""

from __future__ import annotations

import math

import numpy as np

from ..backends.base import BASE, FINETUNED
from .base import CHAT, Measurement, Param, Probe, boolean, check_chat_prompts, tuple_list


def _margins(backend, triples, variant, *, per_token, chat):
    chosen, n_chosen = backend.completion_logprobs([(p, c) for p, c, _ in triples], variant=variant, chat=chat)
    rejected, n_rejected = backend.completion_logprobs([(p, r) for p, _, r in triples], variant=variant, chat=chat)
    chosen, rejected = np.asarray(chosen, float), np.asarray(rejected, float)
    if per_token:
        chosen, rejected = chosen / np.asarray(n_chosen, float), rejected / np.asarray(n_rejected, float)
    return chosen - rejected


def _share(mask, of):
    total = int(of.sum())
    return {"share": float(mask.sum() / total) if total else None, "count": int(mask.sum()), "of": total}


def measure(backend, params, bootstrap) -> Measurement:
    triples, per_token, chat = params["triples"], params["per_token"], params["chat"]
    ft = _margins(backend, triples, FINETUNED, per_token=per_token, chat=chat)
    base = _margins(backend, triples, BASE, per_token=per_token, chat=chat)
    base_wrong, base_right = base < 0, base > 0
    return Measurement(
        values=ft - base,
        items=tuple(f"{p!r}: {c!r} over {r!r}" for p, c, r in triples),
        support=(-math.inf, math.inf),  # a difference of log-probabilities: no bound either way
        details={
            "unit": "nats/token" if per_token else "nats",
            "margin_base": [float(x) for x in base],
            "margin_finetuned": [float(x) for x in ft],
            "fixed": _share(base_wrong & (ft > 0), base_wrong),
            "broken": _share(base_right & (ft < 0), base_right),
            "prefers_chosen_base": float(np.mean(base > 0)),
            "prefers_chosen_finetuned": float(np.mean(ft > 0)),
        },
    )


PROBE = Probe(
    kind="preference_shift",
    doc="change in the log-probability margin of the chosen over the rejected completion",
    params=(
        Param(
            "triples",
            tuple_list("prompt", "chosen", "rejected"),
            doc="(prompt, chosen, rejected) triples",
            items="triple",
        ),
        Param("per_token", boolean, False, doc="average each completion's log-probability over its tokens"),
        CHAT,
    ),
    measure=measure,
    check=check_chat_prompts("triples"),
)
