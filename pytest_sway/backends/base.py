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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..errors import BackendError
from .token_changes import TokenChange, TopTokens

__all__ = ["TokenChange", "TopTokens"]  # re-exported: what divergences_and_tokens returns per prompt

#: Prompts per forward pass unless --sway-batch-size says otherwise.
DEFAULT_BATCH_SIZE = 32


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


class ResponseDivergence(NamedTuple):
    """One response, teacher-forced through the base and a variant: per response position."""

    #: Divergence between the two next-token distributions before each response token (float64).
    values: Any
    #: Whether both models' most likely next token is the same, per position (bool).
    agree: Any
    #: The response's token ids (what was teacher-forced).
    tokens: tuple[int, ...]


@runtime_checkable
class Backend(Protocol):
    """What probes may ask. See ``DummyBackend`` for a complete example."""

    def describe(self) -> dict:
        """JSON-able identity for reports: ``{"name": ..., ...}``."""

    def divergences(self, prompts: Sequence[str], *, divergence: str, variant: Variant = FINETUNED, chat: bool = False):
        """Per prompt: divergence (see ``pytest_sway.backends.divergence``) between the
        base's and ``variant``'s next-token distributions after the prompt."""

    def divergences_and_tokens(
        self,
        prompts: Sequence[str],
        *,
        divergence: str,
        top_tokens: int,
        variant: Variant = FINETUNED,
        chat: bool = False,
    ):
        """``(divergences(...), TopTokens per prompt)`` (a list, or any iterable in the
        prompts' order: it is read once, as it comes): with each prompt's divergence,
        the ``top_tokens`` tokens whose next-token probability ``variant`` raised most
        and the ``top_tokens`` it lowered most, ranked by ``p_variant - p_base`` (see
        ``pytest_sway.backends.token_changes``). Optional: ``delta_kl`` reports no token lists
        for a backend without it (see :func:`divergences_with_tokens`)."""

    def completion_logprobs(
        self, pairs: Sequence[tuple[str, str]], *, variant: Variant = FINETUNED, chat: bool = False
    ):
        """Per ``(prompt, completion)``: ``(sum of log p(token | everything before),
        number of tokens)`` over exactly the tokens that spell the completion."""

    def text_logprobs(
        self,
        texts: Sequence[str],
        *,
        variant: Variant = FINETUNED,
        window: int | None = None,
        stride: int | None = None,
    ):
        """Per text: ``(sum of log p, number of scored tokens)`` over every token
        that has context before it, in windows of at most ``window`` tokens."""

    def greedy(
        self, prompts: Sequence[str], *, variant: Variant = FINETUNED, max_new_tokens: int = 16, chat: bool = False
    ):
        """Per prompt: the token ids of the greedy continuation (stopping at end-of-sequence)."""

    def response_divergences(
        self,
        prompts: Sequence[str],
        responses: Sequence[str] | None = None,
        *,
        divergence: str,
        variant: Variant = FINETUNED,
        chat: bool = False,
        max_new_tokens: int = 32,
    ):
        """Per prompt: a :class:`ResponseDivergence`. The response (its tokens that
        spell it after the prompt, as in ``completion_logprobs``) is teacher-forced
        through the base and ``variant``; without ``responses``, each response is
        the base's greedy continuation of up to ``max_new_tokens`` tokens."""

    def decode(self, ids) -> str:
        """Text of token ids (for reports)."""


def divergences_by_variant(backend, prompts, *, divergence: str, variants, chat: bool = False) -> list:
    """``backend.divergences`` for each of ``variants``, in one call where the backend
    offers ``divergences_many`` (the Hugging Face backend: the variants then share the
    base's logits instead of each fetching them), else one call per variant."""
    many = getattr(backend, "divergences_many", None)
    if many is not None:
        return list(many(prompts, divergence=divergence, variants=list(variants), chat=chat))
    return [backend.divergences(prompts, divergence=divergence, variant=v, chat=chat) for v in variants]


def divergences_with_tokens(
    backend, prompts, *, divergence: str, top_tokens: int, variant: Variant = FINETUNED, chat: bool = False
) -> tuple[Any, Iterable[TopTokens] | None]:
    """``backend.divergences_and_tokens`` where the backend offers it, else its
    ``divergences`` and ``None`` (a backend written before token lists existed)."""
    both = getattr(backend, "divergences_and_tokens", None)
    if both is None:
        return backend.divergences(prompts, divergence=divergence, variant=variant, chat=chat), None
    return both(prompts, divergence=divergence, top_tokens=top_tokens, variant=variant, chat=chat)


def scoring_windows(n_tokens: int, window: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """``(begin, end, score_from)`` spans that score tokens 1..n-1 exactly once.

    Each span is one forward pass over tokens ``[begin, end)`` (at most
    ``window`` of them) that scores tokens ``[score_from, end)``; after the
    first, spans start ``stride`` tokens apart (default: half the window), so
    every scored token has at least ``window - stride`` tokens of context (or
    all of them, near the start). A text that fits the window is one span.
    ``stride < window``: a token that opens a span has no context in it.
    """
    if n_tokens <= window:
        return [(0, n_tokens, 1)] if n_tokens > 1 else []
    stride = stride or max(1, window // 2)
    if not 0 < stride < window:
        raise BackendError(
            f"stride={stride} must be between 1 and window - 1 ({window - 1}): windows must overlap "
            "so that every scored token has context"
        )
    spans, scored_to, begin = [], 1, 0
    while scored_to < n_tokens:
        end = min(begin + window, n_tokens)
        if end > scored_to:
            spans.append((begin, end, max(scored_to, begin + 1)))
            scored_to = end
        begin += stride
    return spans
