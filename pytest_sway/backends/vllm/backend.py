"""The vLLM backend: the base model served by a vLLM engine, the fine-tune as a LoRA request.

Variants map onto requests: the base is a request without a LoRA, the
fine-tune the adapter's ``LoRARequest``, a scaled or null adapter a folder
written once into the user cache (``adapters.variant_folder``) and served as
its own request. A fully fine-tuned checkpoint would be a second engine with a
second copy of the weights; this backend refuses it (the hf backend compares
checkpoints).

Numbers are exact where the engine is: prompt and completion log-probabilities
from ``prompt_logprobs`` on token ids (never re-tokenized text), greedy
continuations at temperature 0, and next-token divergences over the whole
vocabulary when the engine runs without a logprobs cap (``max_logprobs=-1``,
the default here). With a cap of ``k``, a divergence is an interval per prompt
(``pytest_sway.backends.topk``), and gates judge its conservative end.

Before any number is used, the backend checks the engine (``checks``): the
adapter changes the answers, prompt and generation log-probabilities agree,
and it measures how much the composition of a batch moves the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BackendError, is_whole
from ...files import cache_root
from ..base import BASE, FINETUNED, ResponseDivergence, Variant, scoring_windows
from ..divergence import DIVERGENCES, all_divergences, divergence
from ..prompts import PromptEncoder, short
from ..token_changes import TopTokens
from ..token_changes import top_tokens as _top_tokens
from ..topk import DivergenceBounds, topk_bounds
from . import adapters, checks
from .engine import Engine, engine_args

#: Token candidates kept per prompt and direction (largest rises, largest falls) for the token lists:
#: a question's lists are picked from them, so a longer list than this would be silently cut.
CANDIDATES = 64


class VLLMBackend:
    """Base model in a vLLM engine + a LoRA adapter served per request."""

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        finetuned: str | None = None,
        dtype: str = "auto",
        vllm_args: dict[str, Any] | None = None,
        engine: Any = None,
        adapter_root: str | Path | None = None,
        top_logprobs: int | None = None,
    ):
        if finetuned is not None:
            raise BackendError(
                "the vllm backend serves the fine-tune as a LoRA adapter on the base model's engine; a fully "
                f"fine-tuned checkpoint ({finetuned}) would need a second engine holding a second copy of the "
                "weights: compare checkpoints with the hf backend (--sway-backend=hf), or give the fine-tune as "
                "an adapter (--sway-adapter)"
            )
        if adapter is None:
            raise BackendError("nothing to compare the base model with: give an adapter (--sway-adapter)")
        from ..builtin_models import resolve_model

        self.model_name = model
        self.adapter_name = adapter
        self.model_path = resolve_model(model)
        self.adapter_path = str(Path(adapter).resolve()) if Path(adapter).is_dir() else adapter
        args = engine_args(vllm_args or {}, dtype=dtype)
        self.adapter_config = adapters.check_adapter(self.adapter_path, max_lora_rank=int(args["max_lora_rank"]))
        self._adapter_root = Path(adapter_root) if adapter_root is not None else cache_root() / "vllm-adapters"
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.engine = engine if engine is not None else Engine(self.model_path, args)
        self.vocab_size = self.engine.vocab_size
        #: Tokens per side a next-token question returns: the whole vocabulary (-1: exact), or the
        #: engine's cap (or ``top_logprobs``, at most the cap): divergences are then bounds.
        limit = self.engine.max_logprobs  # vLLM refuses a request for more than its cap
        cap = limit if top_logprobs is None else top_logprobs
        if limit not in (-1, None) and (cap in (-1, None) or cap > limit):
            cap = limit
        self.k = -1 if cap in (-1, None) or cap >= self.vocab_size else int(cap)
        self._prompts = PromptEncoder(self.tokenizer, model_name=model, context_length=self.engine.context_length)
        self._memo: dict = {}
        self.forwarded: dict = {}
        self.findings = checks.run(self)  # refuses to go on when the engine fails one

    @classmethod
    def from_settings(cls, settings) -> VLLMBackend:
        options = settings.backend_options()
        for name, why in (("device", "auto"), ("device_map", None)):
            if options.get(name) != why:
                raise BackendError(
                    f"--sway-{name.replace('_', '-')} is for the hf backend: vLLM places the model itself; "
                    "spread it with --sway-vllm-args tensor_parallel_size=N pipeline_parallel_size=M"
                )
        if options.get("cache_dir") is not None:
            raise BackendError(
                "--sway-cache-dir keeps the hf backend's base answers; the vllm backend does not read or write it "
                "yet: drop it for vllm runs"
            )
        return cls(
            options["model"],
            adapter=options.get("adapter"),
            finetuned=options.get("finetuned"),
            dtype=options.get("dtype", "auto"),
            vllm_args=settings.vllm_args,
        )

    # -- identity ----------------------------------------------------------------------

    def describe(self) -> dict:
        args = self.engine.args
        info: dict[str, Any] = {"name": "vllm", "model": self.model_name, "adapter": self.adapter_name}
        info["engine"] = f"vLLM {self.engine.version}"
        info["dtype"] = str(args.get("dtype", "auto"))
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend"):
            if name in args:
                info[name] = args[name]
        info["logprobs"] = "all" if self.k == -1 else self.k
        info["noise_floor"] = self.findings["noise_floor"]
        return info

    def provenance(self) -> dict:
        from ..provenance import folder_sha256, package_versions, platform_summary

        info = self.describe()
        for role, path in (("model", self.model_path), ("adapter", self.adapter_path)):
            info[f"{role}_sha256"] = folder_sha256(path) if Path(path).is_dir() else f"hub:{path}@unknown"
        info["versions"] = {**package_versions(), "vllm": self.engine.version}
        info["platform"] = platform_summary()
        info["engine_args"] = dict(self.engine.args)
        return info

    def close(self) -> None:
        self._memo.clear()
        self.engine.close()

    # -- variants -----------------------------------------------------------------------

    def lora(self, variant: Variant) -> str | None:
        """The adapter folder the engine serves for ``variant`` (None: the base)."""
        if variant.is_base:
            return None
        if variant == FINETUNED:
            return self.adapter_path
        return str(
            adapters.variant_folder(
                self.adapter_path, scale=variant.scale, null_seed=variant.null_seed, root=self._adapter_root
            )
        )

    def _count(self, op: str, variant: Variant, n: int) -> None:
        key = (op, str(variant))
        self.forwarded[key] = self.forwarded.get(key, 0) + n

    # -- next-token questions ------------------------------------------------------------

    def divergences(self, prompts: Sequence[str], *, divergence: str, variant: Variant = FINETUNED, chat: bool = False):
        return self.divergences_many(prompts, divergence=divergence, variants=[variant], chat=chat)[0]

    def divergences_many(self, prompts: Sequence[str], *, divergence: str, variants: Sequence[Variant], chat=False):
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
        seqs = self.encode_prompts(prompts, chat=chat)
        return [self._divergences(seqs, divergence, variant) for variant in variants]

    def divergences_and_tokens(
        self, prompts: Sequence[str], *, divergence: str, top_tokens: int, variant: Variant = FINETUNED, chat=False
    ):
        if not is_whole(top_tokens) or top_tokens < 1:
            raise ValueError(f"top_tokens: expected an integer >= 1, got {top_tokens!r}")
        if top_tokens > CANDIDATES:
            raise ValueError(
                f"top_tokens={top_tokens}: the vllm backend keeps the {CANDIDATES} largest rises and falls of each "
                f"prompt, so it lists at most {CANDIDATES} tokens per side; ask for fewer"
            )
        values = self.divergences(prompts, divergence=divergence, variant=variant, chat=chat)
        seqs = self.encode_prompts(prompts, chat=chat)
        if variant.is_base:
            return values, [TopTokens((), ()) for _ in seqs]
        found = [self._memo[("candidates", variant, seq)] for seq in seqs]
        k = int(top_tokens)
        text = self._prompts.token_texts({int(i) for ids, _, _ in found for i in ids})
        tops = [_top_tokens(ids, p_base, p_ft, k, text.__getitem__) for ids, p_base, p_ft in found]
        return values, tops

    def _divergences(self, seqs: list, kind: str, variant: Variant):
        if variant.is_base:
            return np.zeros(len(seqs))
        todo = [seq for seq in dict.fromkeys(seqs) if ("divergences", variant, seq) not in self._memo]
        if todo:
            base = self._next(BASE, todo)
            other = self._next(variant, todo)
            for seq, b, o in zip(todo, base, other):
                self._memo[("divergences", variant, seq)], self._memo[("candidates", variant, seq)] = self._compare(
                    b, o
                )
        table = [self._memo[("divergences", variant, seq)] for seq in seqs]
        if self.k == -1:
            return np.array([row[kind] for row in table], dtype=np.float64)
        low = np.array([row[kind][0] for row in table], dtype=np.float64)
        high = np.array([row[kind][1] for row in table], dtype=np.float64)
        return DivergenceBounds(low, high, self.k)

    def _next(self, variant: Variant, seqs: list) -> list:
        """Each sequence's next-token ``(ids, log-probabilities)`` for ``variant``: the whole
        vocabulary (a normalised float64 row, ids ``None``) or the engine's top ``k``."""
        self._count("next", variant, len(seqs))
        got = self.engine.next_logprobs(seqs, self.lora(variant), self.k)
        if self.k == -1:
            return [(None, self.engine.full_row(ids, logp)) for ids, logp in got]
        return got

    def _compare(self, base, other) -> tuple[dict, tuple]:
        """Every divergence of one prompt (a number, or a ``(low, high)`` pair) and the token
        candidates for the token lists: ``(ids, p_base, p_variant)``."""
        (b_ids, b_logp), (o_ids, o_logp) = base, other
        if b_ids is None:
            values = all_divergences(b_logp[None, :], o_logp[None, :], np)
            change = np.exp(o_logp) - np.exp(b_logp)
            k = min(CANDIDATES, change.size)
            ids = np.concatenate([np.argpartition(-change, k - 1)[:k], np.argpartition(change, k - 1)[:k]])
            return {kind: float(v[0]) for kind, v in values.items()}, (ids, np.exp(b_logp[ids]), np.exp(o_logp[ids]))
        bounds = topk_bounds(o_ids, o_logp, b_ids, b_logp, vocab_size=self.vocab_size)
        # Token lists from the tokens both sides returned: only there are both probabilities known.
        both, in_b, in_o = np.intersect1d(b_ids, o_ids, return_indices=True)
        return bounds, (both, np.exp(b_logp[in_b]), np.exp(o_logp[in_o]))

    # -- teacher-forced scores ----------------------------------------------------------

    def completion_logprobs(self, pairs: Sequence[tuple[str, str]], *, variant: Variant = FINETUNED, chat=False):
        items = [self.completion_tokens(prompt, completion, chat=chat) for prompt, completion in pairs]
        scores = self.token_logprobs(items, variant)
        return np.array([s.sum() for s in scores]), np.array([len(s) for s in scores])

    def text_logprobs(self, texts: Sequence[str], *, variant: Variant = FINETUNED, window=None, stride=None):
        context = self.engine.context_length
        window = window or context or 2048
        if context is not None and window > context:
            raise BackendError(f"window={window} exceeds the engine's context of {context} tokens")
        items, owner = [], []
        for i, text in enumerate(texts):
            ids = tuple(self.tokenizer(text)["input_ids"])
            spans = scoring_windows(len(ids), window, stride)
            if not spans:
                raise BackendError(f"text {short(text)} is a single token; nothing in it can be scored")
            for begin, end, score_from in spans:
                items.append((ids[begin:end], score_from - begin))
                owner.append(i)
        sums, counts = np.zeros(len(texts)), np.zeros(len(texts), dtype=np.int64)
        for i, s in zip(owner, self.token_logprobs(items, variant)):
            sums[i] += s.sum()
            counts[i] += len(s)
        return sums, counts

    def token_logprobs(self, items, variant: Variant) -> list:
        """Per ``(ids, start)``: log p(ids[j] | ids[:j]) for j >= start (float64)."""
        missing = [it for it in dict.fromkeys(items) if ("score", variant, it[0]) not in self._memo]
        seqs = list(dict.fromkeys(ids for ids, _ in missing))
        if seqs:
            self._count("score", variant, len(seqs))
            for seq, scores in zip(seqs, self.engine.prompt_logprobs(seqs, self.lora(variant))):
                self._memo[("score", variant, seq)] = scores
        return [self._memo[("score", variant, ids)][start - 1 :] for ids, start in items]

    # -- generation ---------------------------------------------------------------------

    def greedy(self, prompts: Sequence[str], *, variant: Variant = FINETUNED, max_new_tokens: int = 16, chat=False):
        seqs = self.encode_prompts(prompts, chat=chat)
        context = self.engine.context_length
        for seq, prompt in zip(seqs, prompts):
            if context is not None and len(seq) + max_new_tokens > context:
                raise BackendError(
                    f"prompt {short(prompt)} ({len(seq)} tokens) plus {max_new_tokens} new tokens exceeds the "
                    f"engine's context of {context} tokens"
                )
        missing = [seq for seq in dict.fromkeys(seqs) if ("greedy", variant, seq, max_new_tokens) not in self._memo]
        if missing:
            self._count("greedy", variant, len(missing))
            found = self.engine.greedy(missing, self.lora(variant), max_new_tokens, eos=self.tokenizer.eos_token_id)
            for seq, (ids, _) in zip(missing, found):
                self._memo[("greedy", variant, seq, max_new_tokens)] = ids
        return [self._memo[("greedy", variant, seq, max_new_tokens)] for seq in seqs]

    def response_divergences(
        self, prompts, responses=None, *, divergence: str, variant: Variant = FINETUNED, chat=False, max_new_tokens=32
    ) -> list[ResponseDivergence]:
        if self.k != -1:
            raise BackendError(
                f"response_divergence compares whole next-token distributions at every response position, and this "
                f"engine returns only the top {self.k} log-probabilities: start it without a cap "
                "(--sway-vllm-args max_logprobs=-1)"
            )
        if responses is None:  # the base's own greedy answer, token for token
            seqs = self.encode_prompts(prompts, chat=chat)
            continuations = self.greedy(prompts, variant=BASE, max_new_tokens=max_new_tokens, chat=chat)
            items = []
            for prompt, seq, new in zip(prompts, seqs, continuations):
                if not new:
                    raise BackendError(
                        f"the base model's greedy continuation of prompt {short(prompt)} is empty (it ends the "
                        "sequence at once), so there is no response to compare; give (prompt, response) pairs"
                    )
                items.append((seq + tuple(new), len(seq)))
        else:
            items = [self.completion_tokens(p, r, chat=chat) for p, r in zip(prompts, responses)]
        out = []
        for ids, start in items:
            key = ("response", divergence, variant, ids, start)
            if key not in self._memo:
                self._count("score", BASE, 1)
                self._count("score", variant, 1)
                base = self.engine.prompt_rows(ids, None, start)
                other = self.engine.prompt_rows(ids, self.lora(variant), start)
                values = divergence_rows(base, other, divergence)
                agree = base.argmax(-1) == other.argmax(-1)
                self._memo[key] = ResponseDivergence(values, agree, tuple(ids[start:]))
            out.append(self._memo[key])
        return out

    # -- tokenization -------------------------------------------------------------------

    def decode(self, ids) -> str:
        return self._prompts.decode(ids)

    def format_prompt(self, prompt: str, *, chat: bool) -> tuple[str, bool]:
        return self._prompts.format_prompt(prompt, chat=chat)

    def encode_prompts(self, prompts: Sequence[str], *, chat: bool) -> list[tuple[int, ...]]:
        return self._prompts.encode_prompts(prompts, chat=chat)

    def completion_tokens(self, prompt: str, completion: str, *, chat: bool) -> tuple[tuple[int, ...], int]:
        return self._prompts.completion_tokens(prompt, completion, chat=chat)


def divergence_rows(base, other, kind: str):
    """``kind`` per row of two [positions, vocabulary] log-probability blocks (float64)."""
    return np.asarray(divergence(base, other, kind, np), dtype=np.float64)
