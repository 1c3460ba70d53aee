"""The built-in probes, one module each, and the registry they live in."""

from __future__ import annotations

from .base import Measurement, Param, Probe, ProbeRegistry


def builtin_probes() -> list[Probe]:
    """The probes pytest-sway ships, in the order the README lists them."""
    from . import (
        adapter_ablation,
        choice_accuracy,
        completion_lift,
        delta_kl,
        greedy_change,
        null_contrast,
        perplexity_shift,
        preference_shift,
        response_divergence,
    )

    return [
        delta_kl.PROBE,
        completion_lift.PROBE,
        perplexity_shift.PROBE,
        preference_shift.PROBE,
        adapter_ablation.PROBE,
        null_contrast.PROBE,
        greedy_change.PROBE,
        response_divergence.PROBE,
        choice_accuracy.PROBE,
    ]


def default_registry() -> ProbeRegistry:
    """A fresh registry holding the built-in probes (add your own to it)."""
    return ProbeRegistry(builtin_probes())


__all__ = ["Measurement", "Param", "Probe", "ProbeRegistry", "builtin_probes", "default_registry"]
