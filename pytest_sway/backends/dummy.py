"""A numpy-only stand-in for a base model and its fine-tune.

Every context (prompt text) gets a deterministic next-token distribution
derived from a stable hash of the text, so results are identical across runs,
processes and machines. The fine-tuned model's logits are the base's plus a
per-context shift whose size varies from context to context (so per-prompt
divergences differ and intervals have real width) and scales with
``effect``; ``effect=0`` makes the two models identical.

It answers the same batched questions as the Hugging Face backend, so probes
never special-case it, and it is what the plugin uses when no model is given.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from ..errors import BackendError, is_number, is_whole
from .base import BASE, FINETUNED, ResponseDivergence, Variant, scoring_windows
from .divergence import divergence as _divergence
from .token_changes import TopTokens
from .token_changes import top_tokens as _top_tokens

# Spread of base logits, and of the per-context size of the fine-tune's shift.
_BASE_SCALE = 2.0
_SHIFT_SPREAD = 0.4


class DummyBackend:
    """Deterministic toy models: ``effect`` sets how far the fine-tune moves."""

    def __init__(self, *, effect: float = 0.5, vocab_size: int = 64, seed: int = 0):
        if not is_number(effect) or not math.isfinite(effect) or effect < 0:
            raise ValueError(f"effect: expected a finite number >= 0, got {effect!r}")
        if not is_whole(vocab_size) or vocab_size < 2:
            raise ValueError(f"vocab_size: expected an integer >= 2, got {vocab_size!r}")
        if not is_whole(seed) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        self.effect = float(effect)
        self.vocab_size = vocab_size
        self.seed = seed

    def describe(self) -> dict:
        return {"name": "dummy", "effect": self.effect, "vocab_size": self.vocab_size, "seed": self.seed}

    def provenance(self) -> dict:
        from .provenance import package_versions

        return {**self.describe(), "versions": package_versions()}

    def __repr__(self) -> str:
        return f"DummyBackend(effect={self.effect}, vocab_size={self.vocab_size}, seed={self.seed})"

    # -- the backend protocol --------------------------------------------------

    def divergences(
        self, prompts: Sequence[str], *, divergence: str, variant: Variant = FINETUNED, chat: bool = False
    ) -> np.ndarray:
        contexts = [self._format(p, chat) for p in prompts]
        base = np.stack([self._logprobs(c, BASE) for c in contexts])
        other = np.stack([self._logprobs(c, variant) for c in contexts])
        return _divergence(base, other, divergence, np)

    def divergences_and_tokens(
        self,
        prompts: Sequence[str],
        *,
        divergence: str,
        top_tokens: int,
        variant: Variant = FINETUNED,
        chat: bool = False,
    ) -> tuple[np.ndarray, list[TopTokens]]:
        """Divergences, and per prompt the tokens (named ``tok<id>``: the dummy's
        vocabulary is synthetic) whose probability ``variant`` raised and lowered most.

        The values come from ``self.divergences``, so a subclass that overrides it (a
        test's scripted backend) is measured with its own values."""
        values = self.divergences(prompts, divergence=divergence, variant=variant, chat=chat)
        contexts = [self._format(p, chat) for p in prompts]
        base = np.stack([self._logprobs(c, BASE) for c in contexts])
        other = np.stack([self._logprobs(c, variant) for c in contexts])
        ids = np.arange(self.vocab_size)
        tops = [_top_tokens(ids, np.exp(b), np.exp(o), top_tokens, _token_name) for b, o in zip(base, other)]
        return values, tops

    def completion_logprobs(
        self, pairs: Sequence[tuple[str, str]], *, variant: Variant = FINETUNED, chat: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        sums, counts = [], []
        for prompt, completion in pairs:
            context = self._format(prompt, chat)
            sums.append(self._score(context + completion, len(context), variant))
            counts.append(len(completion))
        return np.array(sums), np.array(counts)

    def text_logprobs(
        self,
        texts: Sequence[str],
        *,
        variant: Variant = FINETUNED,
        window: int | None = None,
        stride: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        sums, counts = [], []
        for text in texts:
            spans = scoring_windows(len(text), window or len(text), stride)
            if not spans:
                raise BackendError(f"text {text!r} is a single token; nothing in it can be scored")
            total, n = 0.0, 0
            for begin, end, score_from in spans:
                total += self._score(text[begin:end], score_from - begin, variant)
                n += end - score_from
            sums.append(total)
            counts.append(n)
        return np.array(sums), np.array(counts)

    def greedy(
        self, prompts: Sequence[str], *, variant: Variant = FINETUNED, max_new_tokens: int = 16, chat: bool = False
    ) -> list[tuple[int, ...]]:
        out = []
        for prompt in prompts:
            context, ids = self._format(prompt, chat), []
            for _ in range(max_new_tokens):
                token = int(np.argmax(self._logprobs(context, variant)))
                ids.append(token)
                context += self.decode([token])
            out.append(tuple(ids))
        return out

    def response_divergences(
        self,
        prompts: Sequence[str],
        responses: Sequence[str] | None = None,
        *,
        divergence: str,
        variant: Variant = FINETUNED,
        chat: bool = False,
        max_new_tokens: int = 32,
    ) -> list[ResponseDivergence]:
        if responses is None:
            greedy = self.greedy(prompts, variant=BASE, max_new_tokens=max_new_tokens, chat=chat)
            responses = [self.decode(ids) for ids in greedy]
        out = []
        for prompt, response in zip(prompts, responses):
            context = self._format(prompt, chat)
            base = np.stack([self._logprobs(context + response[:j], BASE) for j in range(len(response))])
            other = np.stack([self._logprobs(context + response[:j], variant) for j in range(len(response))])
            out.append(
                ResponseDivergence(
                    np.asarray(_divergence(base, other, divergence, np), dtype=np.float64),
                    base.argmax(-1) == other.argmax(-1),
                    tuple(self._token(ch) for ch in response),
                )
            )
        return out

    def decode(self, ids) -> str:
        return "".join(_ALPHABET[i % len(_ALPHABET)] for i in ids)

    # -- the toy models ----------------------------------------------------------

    @staticmethod
    def _format(prompt: str, chat: bool) -> str:
        if not chat:
            return prompt
        messages = getattr(prompt, "messages", None) or [{"role": "user", "content": prompt}]  # a Conversation has them
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"

    def _token(self, char: str) -> int:
        """Characters are the dummy's tokens."""
        index = _ALPHABET.find(char)
        return index % self.vocab_size if index >= 0 else _stable_words(char)[0] % self.vocab_size

    def _score(self, text: str, start: int, variant: Variant) -> float:
        """Sum of log p(text[j] | text[:j]) for j >= start."""
        return float(sum(self._logprobs(text[:j], variant)[self._token(text[j])] for j in range(start, len(text))))

    def _logprobs(self, context: str, variant: Variant) -> np.ndarray:
        """Next-token log-probabilities (float64) after ``context``."""
        rng = np.random.default_rng([self.seed, *_stable_words(context)])
        logits = rng.normal(0.0, _BASE_SCALE, self.vocab_size)
        direction = rng.standard_normal(self.vocab_size)
        size = self.effect * rng.lognormal(0.0, _SHIFT_SPREAD) * math.sqrt(self.vocab_size)
        if variant.null_seed is not None:
            # Same size of shift, direction from the null seed alone.
            direction = np.random.default_rng(
                [self.seed, *_stable_words(context), 1, variant.null_seed]
            ).standard_normal(self.vocab_size)
        shift = direction * (size / np.linalg.norm(direction))
        logits = logits + variant.scale * shift
        return logits - _logsumexp(logits)


# Printable characters, in the order the dummy numbers them as tokens.
_ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'-()\"/&%$#@*+=<>[]{}_|~^`\n"


def _token_name(token_id: int) -> str:
    return f"tok{token_id}"


def _stable_words(text: str) -> list[int]:
    """Four 32-bit words from a keyed BLAKE2b of ``text`` (unlike ``hash()``,
    identical in every process)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16, person=b"pytest-sway").digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def _logsumexp(x: np.ndarray) -> float:
    top = x.max()
    return top + math.log(np.exp(x - top).sum())
