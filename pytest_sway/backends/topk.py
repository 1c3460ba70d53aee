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

from ..errors import BackendError


class DivergenceBounds(NamedTuple):
    """Per item, an interval that contains the exact divergence: ``low <= exact <= high``
    (``high`` may be ``inf``: KL has no upper bound from top-k alone)."""

    #: Lower ends, one per item (float64 numpy array).
    low: Any
    #: Upper ends, one per item (float64 numpy array; ``inf`` where unbounded).
    high: Any
    #: Log-probabilities per side the bounds came from.
    k: int


def split_bounds(values) -> tuple[Any, DivergenceBounds | None]:
    """What a probe does with a backend's divergences: ``(per-item values, bounds)``.

    Exact values give ``(float64 array, None)``; a :class:`DivergenceBounds` gives its lower ends
    (as a float64 array) and itself, so a probe can pass the bounds on in its ``Measurement``."""
    import numpy as np  # here, not at import: the plugin loads backends before any sway test runs

    if isinstance(values, DivergenceBounds):
        return np.asarray(values.low, dtype=np.float64), values
    return np.asarray(values, dtype=np.float64), None


def refuse_bounds(kind: str, values) -> Any:
    """``values`` as a float64 array, or ``BackendError`` when they are bounds: for probes that
    compare the divergences of several variants (a difference or a rank of intervals is not an
    interval a gate can judge on one end)."""
    if isinstance(values, DivergenceBounds):
        raise BackendError(
            f"{kind}: the backend returned divergences bounded from the top-{values.k} log-probabilities of each "
            f"side, not exact values; {kind} compares the divergences of several variants and needs exact ones. "
            "Exact divergences need the engine's full vocabulary: start the vLLM engine without a logprobs cap "
            "(--sway-vllm-max-logprobs=-1), or use a backend that computes them (hf)"
        )
    return split_bounds(values)[0]
