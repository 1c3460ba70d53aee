"""The built-in probes, one module each, and the registry they live in."""

from __future__ import annotations

from .base import Measurement, Param, Probe
from .registry import ProbeRegistry, builtin_probes, default_registry

__all__ = ["Measurement", "Param", "Probe", "ProbeRegistry", "builtin_probes", "default_registry"]
