"""The probe registry: probe kinds by name, and the built-in probes it starts with."""

from __future__ import annotations

from ..errors import ProbeParamError
from .base import Probe


def _builtin_kinds() -> set[str]:
    return {p.kind for p in builtin_probes()}


class ProbeRegistry:
    """Probe kinds by name. Each pytest session builds its own."""

    def __init__(self, probes=()):
        self._probes: dict[str, Probe] = {}
        for probe in probes:
            self.add(probe)

    def add(self, probe: Probe) -> None:
        if not isinstance(probe, Probe):
            raise TypeError(f"expected a pytest_sway.Probe, got {probe!r}")
        if probe.kind in self._probes and self._probes[probe.kind] is not probe:
            raise ValueError(
                f"a probe named {probe.kind!r} is already registered"
                + (" (a built-in probe)" if probe.kind in _builtin_kinds() else "")
                + "; register yours under another name"
            )
        self._probes[probe.kind] = probe

    def get(self, kind: str) -> Probe:
        if not isinstance(kind, str):
            raise ProbeParamError(f"probe kind must be a string such as 'delta_kl', got {kind!r}")
        try:
            return self._probes[kind]
        except KeyError:
            raise ProbeParamError(
                f"unknown probe kind {kind!r}; known kinds: {', '.join(sorted(self._probes))}"
            ) from None

    def kinds(self) -> list[str]:
        return sorted(self._probes)

    def __contains__(self, kind) -> bool:
        return kind in self._probes


def builtin_probes() -> list[Probe]:
    """The probes pytest-sway ships, in the order docs/probes.md lists them."""
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
