"""perplexity_shift: does the fine-tune model general text worse than the base?

Per text: mean negative log-likelihood per scored token under the fine-tune
minus under the base (nats/token; positive = the fine-tune is worse). Scored
tokens are every token with context before it: all but the first, or all of
them when the tokenizer adds a BOS token. Texts longer than ``window`` tokens
are scored in overlapping windows ``stride`` tokens apart.
"""

from __future__ import annotations

import math

import numpy as np

from ..backends.base import BASE, FINETUNED
from .base import Measurement, Param, Probe, integer, optional, text_list


def measure(backend, params, bootstrap) -> Measurement:
    texts, window, stride = params["texts"], params["window"], params["stride"]
    ft, n = backend.text_logprobs(texts, variant=FINETUNED, window=window, stride=stride)
    base, _ = backend.text_logprobs(texts, variant=BASE, window=window, stride=stride)
    ft, base, n = np.asarray(ft, float), np.asarray(base, float), np.asarray(n, float)
    nll_ft, nll_base = -ft / n, -base / n
    pooled = (base.sum() - ft.sum()) / n.sum()  # pooled NLL difference over all tokens
    return Measurement(
        values=nll_ft - nll_base,
        items=texts,
        support=(-math.inf, math.inf),  # a difference of log-probabilities: no bound either way
        details={
            "unit": "nats/token",
            "perplexity_ratio": math.exp(pooled),
            "perplexity_base": math.exp(-base.sum() / n.sum()),
            "perplexity_finetuned": math.exp(-ft.sum() / n.sum()),
            "tokens": [int(x) for x in n],
        },
    )


def check(params) -> None:
    window, stride = params["window"], params["stride"]
    if window is not None and stride is not None and stride >= window:
        raise ValueError(f"stride ({stride}) must be smaller than window ({window}): windows must overlap")


PROBE = Probe(
    kind="perplexity_shift",
    doc="change in mean negative log-likelihood per token of each text (fine-tune minus base)",
    params=(
        Param("texts", text_list, doc="general text the fine-tune should still model well", items="text"),
        Param("window", optional(integer(2)), None, doc="tokens per forward pass (default: the model's context)"),
        Param("stride", optional(integer(1)), None, doc="tokens between windows (default: half the window)"),
    ),
    measure=measure,
    check=check,
)
