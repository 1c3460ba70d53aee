"""pytest-sway: model-diff assertions for fine-tunes, with honest confidence intervals.

Importing this package is cheap: the public names below load their modules on
first use, and nothing here imports torch, transformers or peft.
"""

from __future__ import annotations

import importlib

__version__ = "0.3.0.dev0"

_PUBLIC = {
    "run_probe": "pytest_sway.measure.run",
    "Sway": "pytest_sway.sway",
    "ProbeResult": "pytest_sway.measure.result",
    "Gate": "pytest_sway.stats.gate",
    "Interval": "pytest_sway.stats.bootstrap",
    "bootstrap_ci": "pytest_sway.stats.bootstrap",
    "DummyBackend": "pytest_sway.backends.dummy",
    "HFBackend": "pytest_sway.backends.hf",
    "Variant": "pytest_sway.backends.base",
    "BASE": "pytest_sway.backends.base",
    "FINETUNED": "pytest_sway.backends.base",
    "Probe": "pytest_sway.probes.base",
    "Param": "pytest_sway.probes.base",
    "Measurement": "pytest_sway.probes.base",
    "ProbeRegistry": "pytest_sway.probes.registry",
    "SwayError": "pytest_sway.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    try:
        module = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'pytest_sway' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
