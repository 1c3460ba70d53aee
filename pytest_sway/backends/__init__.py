"""Backends: the dummy (numpy) one, the Hugging Face one, or a user's factory."""

from __future__ import annotations


def make_backend(settings):
    """The built-in answer to ``pytest_sway_make_backend``."""
    name = settings.backend_name
    if name == "dummy":
        from .dummy import DummyBackend

        return DummyBackend()
    if name == "hf":
        from .hf import HFBackend

        return HFBackend.from_settings(settings)
    from ..settings import load_factory

    return load_factory(settings.backend)(settings)
