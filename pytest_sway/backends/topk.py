"""Divergences bounded from top-k log-probabilities, for engines that return only the top k.

An engine that returns each side's ``k`` most likely tokens (vLLM with a
``max_logprobs`` cap) does not determine a divergence over the full
vocabulary: the mass outside the returned tokens is known per side, its
spread is not. What it does determine is an interval per prompt that
contains the exact value. Missing mass is never spread over unseen tokens
(that guess inflates Jensen-Shannon by one to two orders of magnitude on a
real vocabulary).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class DivergenceBounds(NamedTuple):
    """Per item, an interval that contains the exact divergence: ``low <= exact <= high``
    (``high`` may be ``inf``: KL has no upper bound from top-k alone)."""

    #: Lower ends, one per item (float64 numpy array).
    low: Any
    #: Upper ends, one per item (float64 numpy array; ``inf`` where unbounded).
    high: Any
    #: Log-probabilities per side the bounds came from.
    k: int
