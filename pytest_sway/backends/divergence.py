"""Divergences between next-token distributions, over the full vocabulary.

One implementation serves numpy (the dummy backend, tests) and torch (the
Hugging Face backend, on the model's device): pass the array namespace as
``xp``. Inputs are log-probabilities (rows are items, the last axis is the
vocabulary); compute in float64 for exactness.

No truncation to the top-k tokens and no guessed tail mass: on a real
vocabulary, spreading an unknown tail uniformly inflates Jensen-Shannon by
one to two orders of magnitude.

Identical inputs give exactly 0 for every divergence (each term is a product
with an exact zero), which is what lets an ``effect=0`` run report a CI of
exactly [0, 0].
"""

from __future__ import annotations

import math

DIVERGENCES = ("js", "kl", "reverse_kl", "tv")
#: The range each divergence can take, for clipping intervals.
SUPPORT = {"js": (0.0, math.log(2)), "kl": (0.0, math.inf), "reverse_kl": (0.0, math.inf), "tv": (0.0, 1.0)}
DESCRIPTIONS = {
    "js": "Jensen-Shannon divergence (nats, 0 to ln 2)",
    "kl": "KL(fine-tuned || base) (nats)",
    "reverse_kl": "KL(base || fine-tuned) (nats)",
    "tv": "total variation distance (0 to 1)",
}


def divergence(base_logp, ft_logp, kind: str, xp):
    """Per-row divergence between ``base_logp`` and ``ft_logp`` (same shape)."""
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")
    return all_divergences(base_logp, ft_logp, xp, kinds=(kind,))[kind]


def all_divergences(base_logp, ft_logp, xp, kinds=DIVERGENCES) -> dict:
    """``{kind: per-row divergence}`` for each of ``kinds``, sharing the exponentials.

    Each kind's value is bit-identical to what ``divergence`` gives for it
    alone (same expressions on the same ``p = exp(ft_logp)`` and
    ``q = exp(base_logp)``), so a backend can compute every kind while the
    logits are at hand and answer later questions from the numbers alone.
    """
    p = xp.exp(ft_logp)
    q = xp.exp(base_logp)
    out = {}
    for kind in kinds:
        if kind == "kl":  # KL(p || q); 0 * log 0 counts as 0
            out[kind] = xp.clip(xp.sum(xp.where(p > 0, p * (ft_logp - base_logp), 0.0), axis=-1), 0.0, None)
        elif kind == "reverse_kl":
            out[kind] = xp.clip(xp.sum(xp.where(q > 0, q * (base_logp - ft_logp), 0.0), axis=-1), 0.0, None)
        elif kind == "tv":
            out[kind] = xp.clip(0.5 * xp.sum(xp.abs(p - q), axis=-1), 0.0, 1.0)
        elif kind == "js":
            m = 0.5 * (p + q)
            # Logs of p, q and m computed the same way, so p == q gives exact zeros.
            log_m = xp.log(m)
            left = xp.where(p > 0, p * (xp.log(p) - log_m), 0.0)
            right = xp.where(q > 0, q * (xp.log(q) - log_m), 0.0)
            # Rounding can step a hair outside [0, ln 2] at either end.
            out[kind] = xp.clip(0.5 * xp.sum(left + right, axis=-1), 0.0, math.log(2))
        else:
            raise ValueError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")
    return out
