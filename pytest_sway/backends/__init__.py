"""Backends: the dummy (numpy) one, the Hugging Face one, the vLLM one, or a user's factory."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def make_backend(settings):
    """The built-in answer to ``pytest_sway_make_backend``."""
    name = settings.backend_name
    if name == "dummy":
        from .dummy import DummyBackend

        return DummyBackend()
    if name == "hf":
        from .hf import HFBackend

        return HFBackend.from_settings(settings)
    if name == "vllm":
        from .vllm.backend import VLLMBackend

        return VLLMBackend.from_settings(settings)
    return load_factory(settings.backend)(settings)


def load_factory(spec: str) -> Callable:
    """Import ``module:attr`` and return the callable, or raise ValueError."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module failing on import
        raise ValueError(f"cannot import module {module_name!r} ({type(exc).__name__}: {exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"module {module_name!r} has no callable {attr!r}")
    return factory
