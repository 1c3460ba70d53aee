"""The questions a backend answers, batched, with small numpy answers.

Probes talk to backends only through this protocol, so the dummy backend and
the Hugging Face backend are interchangeable. Every method takes a list of
items and returns one number per item; full-vocabulary distributions never
leave the backend.

A :class:`Variant` names which model answers: the base (``BASE``), the
fine-tuned model (``FINETUNED``), the base plus the adapter's update scaled by
``scale``, or a *null* adapter with the real adapter's structure and update
norms but random directions (``null_seed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Variant:
    scale: float = 1.0
    null_seed: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def is_base(self) -> bool:
        return self.scale == 0.0 and self.null_seed is None

    def __str__(self) -> str:
        if self.is_base:
            return "base"
        if self.null_seed is not None:
            return f"null(seed={self.null_seed})"
        return "fine-tuned" if self.scale == 1.0 else f"adapter x{self.scale:g}"


BASE = Variant(scale=0.0)
FINETUNED = Variant(scale=1.0)


@runtime_checkable
class Backend(Protocol):
    """What probes may ask. See ``DummyBackend`` for a complete example."""

    def describe(self) -> dict:
        """JSON-able identity for reports: ``{"name": ..., ...}``."""

    def divergences(
        self, prompts: Sequence[str], *, divergence: str, variant: Variant = FINETUNED, chat: bool = False
    ):
        """Per prompt: divergence (see ``pytest_sway.divergence``) between the
        base's and ``variant``'s next-token distributions after the prompt."""
