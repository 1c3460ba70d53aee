"""Hugging Face transformers + PEFT backend.

One model answers for both sides when the fine-tune is an adapter: the base
with the adapter attached, asked with the adapter disabled (peft's
``disable_adapter``) for the base's answers and enabled for the fine-tune's.
A fully fine-tuned checkpoint (``finetuned=``) is a second model.

Prompts are scored in batches sorted by length. On the CPU a batch is
right-padded to a canonical width that depends on each row's own length (its
length rounded up to a multiple of ``_WIDTH_STEP``) and holds rows of one such
width only, and the output layer sees only the positions each row needs
(gathered row by row, in a multiple of ``_ROW_QUANTUM`` rows): a prompt's
numbers are then bit-identical alone, in any batch, in any order. Elsewhere
batches are left-padded with ``position_ids`` from the attention mask (GPU
kernels round by batch shape anyway). Only the needed positions' logits are
computed: the last one for next-token questions. Divergences are computed on
the model's device from the full-vocabulary log-softmax in float64 (float32 on MPS, which has no float64);
only one number per prompt leaves the device.

Answers are memoised per (question, variant, token ids) for the session: a
prompt asked by ten tests costs one forward pass per variant. What the memo
keeps per prompt is small: for next-token questions, every divergence of
``pytest_sway.backends.divergence.DIVERGENCES`` (computed batch by batch while both
sides' logits are on the device, four numbers per prompt and variant), not
vocabulary rows. The base's logits, which every later variant is compared
with, are kept in a least-recently-used store of at most ``memo_bytes``
(``DEFAULT_MEMO_BYTES``); beyond it they are read back from the disk cache
when one is set, else recomputed (and counted in ``forwarded``). Memory is
therefore flat in the number of prompts.

torch, transformers and peft are imported here only, when a backend is built.
"""

from __future__ import annotations

import contextlib
import functools
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError, is_whole
from .base import BASE, DEFAULT_BATCH_SIZE, FINETUNED, ResponseDivergence, Variant, scoring_windows
from .divergence import DIVERGENCES
from .divergence import all_divergences as _all_divergences
from .divergence import divergence as _divergence
from .loading import (
    _attach_adapter,
    _check_model_folder,
    _check_same_vocabulary,
    _context_length,
    _import_frameworks,
    _load_model,
    _load_tokenizer,
    _pad_id,
    _pick_device,
    _pick_dtype,
    quiet_progress_bars,
)
from .token_changes import TopTokens
from .token_changes import top_tokens as _top_tokens

#: Most tokens (batch rows x padded length) in one forward pass.
_TOKEN_BUDGET = 16384
#: Most bytes of logits (rows x kept positions x vocabulary x element size) one batch may hold:
#: 2^27 float32 logits, twice as many in bfloat16 (a GPU batch of 32 teacher-forced responses
#: of 32 tokens on a 128k vocabulary fits, as benchmarks/bench_gpu.py measured).
_LOGIT_BYTES = 1 << 29
#: How CPU matrix products round a row depends on the number of rows M: measured on the
#: tiny test models' and SmolLM2's shapes (torch 2.13, MKL), every row of an M-row product
#: is the same as in any other when M is a multiple of 4, or 12 and more; with 1-3 rows
#: all differ, with 5-7 or 9-11 the last M mod 4 do (a narrower kernel for the remainder).
#: CPU passes are therefore shaped so that every product has a multiple of _ROW_QUANTUM
#: rows: a generated batch has a multiple of 4 rows; a right-padded pass has a width that
#: is a multiple of 16, and the output layer gets its gathered positions in a multiple of 16
#: rows (tests/test_determinism.py holds the result to bit-identical values).
_MIN_ROWS = 4
#: Rows the output layer's input is padded to a multiple of in a right-padded pass.
_ROW_QUANTUM = 16
#: A CPU batch's padded width is its rows' length rounded up to a multiple of this (at least
#: this, at most the context). Right pads after a row's last token cannot reach its real
#: positions (causal attention), but the kernels' blocking depends on the width, and widths
#: that are not a multiple of the vector length round differently (measured: 5-6, 10 and
#: 16-64 gave three classes of results); one width per row makes that moot.
_WIDTH_STEP = 16
#: Most float64 elements of one array in a divergence computation (rows x vocabulary; a
#: chunk holds a few such arrays). On the CPU 2 MiB: small arrays stay in cache and are
#: reused by glibc's heap instead of growing it (benchmarks/bench_memory.py --suite
#: divergences, before the other memory fixes: the peak grew 150-230 MiB from 256 to 4,096
#: prompts with 64-row chunks, 20-40 MiB with 4-row ones).
_DIVERGENCE_ELEMENTS_CPU = 1 << 18
#: Elsewhere 64 MiB: at a 128k vocabulary the 64 rows benchmarks/bench_gpu.py measured, in
#: fewer kernel launches (CUDA's caching allocator reuses blocks of any size).
_DIVERGENCE_ELEMENTS_DEVICE = 1 << 23
#: Bytes of next-token logits (the base's, on the model's device) the session memo may keep.
DEFAULT_MEMO_BYTES = 64 << 20


class HFBackend:
    """Base model + adapter (or + a fine-tuned checkpoint), batched and memoised."""

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        finetuned: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | None = None,
        device_map: str | None = None,
        cache_dir: str | None = None,
        memo_bytes: int = DEFAULT_MEMO_BYTES,
        max_memory: dict | None = None,
        offload_folder: str | None = None,
    ):
        if adapter is not None and finetuned is not None:
            raise BackendError("give an adapter or a fine-tuned checkpoint, not both")
        if adapter is None and finetuned is None:
            raise BackendError(
                "nothing to compare the base model with: give an adapter (--sway-adapter) "
                "or a fine-tuned checkpoint (--sway-finetuned)"
            )
        torch, _ = _import_frameworks()
        self._torch = torch
        # Loading advances torch's global RNG (peft initialises LoRA weights before it loads
        # the saved ones); a test suite's own random state must not depend on whether sway ran.
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda), quiet_progress_bars():
            self._load(
                model=model,
                adapter=adapter,
                finetuned=finetuned,
                device=device,
                dtype=dtype,
                batch_size=batch_size,
                device_map=device_map,
                cache_dir=cache_dir,
                memo_bytes=memo_bytes,
                max_memory=max_memory,
                offload_folder=offload_folder,
            )

    def _load(
        self,
        *,
        model,
        adapter,
        finetuned,
        device,
        dtype,
        batch_size,
        device_map,
        cache_dir,
        memo_bytes,
        max_memory,
        offload_folder,
    ) -> None:
        torch = self._torch
        self.model_name = model
        self.adapter_name = adapter
        self.finetuned_name = finetuned
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE
        self.device_map = device_map
        # With a device map, accelerate's placement budget: most bytes of weights per device
        # ({0: "70GiB", "cpu": "100GiB"}) and where layers beyond them go ("disk").
        placement = {"max_memory": max_memory, "offload_folder": offload_folder}
        self._placement = {k: v for k, v in placement.items() if v is not None}
        if self._placement and device_map is None:
            raise BackendError("max_memory and offload_folder place a model with a device map; give device_map too")

        from .builtin_models import resolve_model

        model_path = resolve_model(model)
        self._paths = {"model": model_path}
        _check_model_folder(model_path)
        self.tokenizer = _load_tokenizer(model_path, model)
        self.device = _pick_device(torch, device, device_map)
        self.dtype = _pick_dtype(torch, dtype, self.device)
        base = _load_model(
            model_path, model, dtype=self.dtype, device=self.device, device_map=device_map, placement=self._placement
        )
        self.dtype = base.dtype  # what "auto" resolved to
        self.peft_model = None
        self.finetuned_model = None
        if adapter is not None:
            self._paths["adapter"] = adapter
            self.peft_model = _attach_adapter(base, adapter, model)
            self.base_model = self.peft_model
        else:
            self.base_model = base
            ft_path = resolve_model(finetuned)
            self._paths["finetuned"] = ft_path
            self.finetuned_model = _load_model(
                ft_path,
                finetuned,
                dtype=self.dtype,
                device=self.device,
                device_map=device_map,
                placement=self._placement,
            )
            _check_same_vocabulary(base, self.finetuned_model, model, finetuned)
        #: The positions the output layer computes logits for during a right-padded pass.
        self._gather = _Gather()
        for m in (self.base_model, self.finetuned_model):
            if m is not None:
                m.get_output_embeddings().register_forward_pre_hook(self._gather.hook)
        self.input_device = self.base_model.get_input_embeddings().weight.device
        self.context_length = _context_length(base.config, self.tokenizer)
        self.pad_id = _pad_id(self.tokenizer)
        self.vocab_size = self.base_model.get_output_embeddings().weight.shape[0]
        self._accumulate = torch.float32 if self.input_device.type == "mps" else torch.float64
        # Rows (next-token) or positions (responses) per divergence computation.
        elements = _DIVERGENCE_ELEMENTS_CPU if self.input_device.type == "cpu" else _DIVERGENCE_ELEMENTS_DEVICE
        self._divergence_rows = max(2, elements // self.vocab_size)  # see _log_softmaxes
        # On the CPU, batches hold sequences of one canonical width only (right-padded to it),
        # so that a prompt's numbers do not depend on its batch-mates.
        self._exact_shapes = self.input_device.type == "cpu"
        self._memo = _Memo(memo_bytes)
        self._texts: dict[int, str] = {}  # token id -> its text, for the token lists
        #: Finished per-response results (small arrays), keyed by (divergence, variant, (ids, start)).
        self._responses: dict = {}
        self._active: tuple[Variant, Any] | None = None  # (variant, model) while a variant's context is entered
        self._provenance: dict | None = None
        self.cache = self._open_cache(cache_dir) if cache_dir is not None else None
        #: Sequences forwarded per (question, variant): what the memo saved shows here.
        self.forwarded: Counter = Counter()
        #: Model forward calls (batches) per variant.
        self.forward_calls: Counter = Counter()
        #: Told ``(what, done, total)`` as batches finish (the plugin sets it to show progress).
        self.progress: Callable[[str, int, int], None] | None = None

    @classmethod
    def from_settings(cls, settings) -> HFBackend:
        """The backend the run's ``--sway-*`` options describe (each option declared with ``backend=True``)."""
        return cls(**settings.backend_options())

    def describe(self) -> dict:
        info = {"name": "hf", "model": self.model_name}
        if self.adapter_name is not None:
            info["adapter"] = self.adapter_name
        if self.finetuned_name is not None:
            info["finetuned"] = self.finetuned_name
        info.update(
            device=str(self.input_device), dtype=str(self.dtype).replace("torch.", ""), batch_size=self.batch_size
        )
        if self.device_map is not None:
            info["device_map"] = self.device_map
        return info

    def _open_cache(self, cache_dir):
        """The disk cache for this base model, dtype, device kind and library versions."""
        import transformers

        from .cache import ResultCache

        identity = {
            "model_sha256": self.provenance()["model_sha256"],
            "dtype": str(self.dtype),
            "device": self.input_device.type,
            "torch": self._torch.__version__,
            "transformers": transformers.__version__,
        }
        return ResultCache(cache_dir, identity)

    def provenance(self) -> dict:
        """describe() plus content hashes of the model, adapter or checkpoint, and package versions."""
        if self._provenance is None:
            from .provenance import folder_sha256, package_versions, platform_summary

            info = self.describe()
            for role, path in self._paths.items():
                if Path(path).is_dir():
                    info[f"{role}_sha256"] = folder_sha256(path)
                else:  # a hub id: its identity is the resolved commit
                    source = self.base_model if role == "model" else self.finetuned_model
                    commit = getattr(getattr(source, "config", None), "_commit_hash", None)
                    info[f"{role}_sha256"] = f"hub:{path}@{commit or 'unknown'}"
            info["versions"] = package_versions()
            info["platform"] = platform_summary()
            self._provenance = info
        return dict(self._provenance)

    def close(self) -> None:
        self._memo.clear()
        self._responses.clear()
        self.base_model = self.peft_model = self.finetuned_model = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

    # -- the backend protocol ----------------------------------------------------------

    def divergences(
        self, prompts: Sequence[str], *, divergence: str, variant: Variant = FINETUNED, chat: bool = False
    ) -> np.ndarray:
        return self.divergences_many(prompts, divergence=divergence, variants=[variant], chat=chat)[0]

    def divergences_and_tokens(
        self,
        prompts: Sequence[str],
        *,
        divergence: str,
        top_tokens: int,
        variant: Variant = FINETUNED,
        chat: bool = False,
    ) -> tuple[np.ndarray, Iterator[TopTokens]]:
        """``divergences``, and per prompt the ``top_tokens`` tokens whose probability
        ``variant`` raised most and lowered most (``pytest_sway.backends.token_changes``),
        found on the device from the same logits in the same pass; the lists are
        made one prompt at a time as they are read."""
        if not is_whole(top_tokens) or top_tokens < 1:
            raise ValueError(f"top_tokens: expected an integer >= 1, got {top_tokens!r}")
        seqs = self.encode_prompts(prompts, chat=chat)
        values = self._divergences_of(seqs, prompts, divergence=divergence, variants=[variant], top_tokens=top_tokens)[
            0
        ]
        if variant.is_base:  # nothing changed
            return values, (TopTokens((), ()) for _ in seqs)
        found = [
            (ids[i], probs[:, i]) for _, ids, probs, i in (self._memo[("top_tokens", variant, seq)] for seq in seqs)
        ]
        text = self._token_texts({int(i) for ids, _ in found for i in ids})
        return values, (_top_tokens(ids, probs[0], probs[1], top_tokens, text.__getitem__) for ids, probs in found)

    def _token_texts(self, ids: set) -> dict:
        """Each id's text, decoded alone (one batched tokenizer call for the new ones),
        special tokens and spaces kept; remembered for the session."""
        new = sorted(ids - self._texts.keys())
        if new:
            texts = self.tokenizer.batch_decode(
                [[i] for i in new], skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            pieces = self.tokenizer.convert_ids_to_tokens(new)
            for i, text, piece in zip(new, texts, pieces):
                # SentencePiece marks a leading space with U+2581 and drops it when decoding
                # one token alone; keep it, as a byte-level BPE's decoding does.
                if isinstance(piece, str) and piece.startswith("\u2581") and not text.startswith(" "):
                    text = " " + text
                self._texts[i] = text
        return self._texts

    def divergences_many(
        self,
        prompts: Sequence[str],
        *,
        divergence: str,
        variants: Sequence[Variant],
        chat: bool = False,
    ) -> list[np.ndarray]:
        """``divergences`` for several variants at once. The base's logits for each
        group of prompts are fetched once and compared with every variant's in turn,
        so over more prompts than the memo's logit store holds, the variants share one
        base pass per prompt instead of needing one each."""
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
        seqs = self.encode_prompts(prompts, chat=chat)
        return self._divergences_of(seqs, prompts, divergence=divergence, variants=variants)

    def _divergences_of(
        self, seqs: list, prompts: Sequence[str], *, divergence: str, variants: Sequence[Variant], top_tokens: int = 0
    ) -> list[np.ndarray]:
        """``divergences_many`` of encoded prompts. With ``top_tokens``, each prompt's
        most raised and lowered tokens are kept in the memo beside its divergences
        (computed in the same pass; a prompt whose divergences were memoised without
        them is compared again)."""
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
        label_of = dict(zip(seqs, prompts))
        unique = list(dict.fromkeys(seqs))
        pending = {}
        for variant in variants:  # the base against itself is exactly 0: no logits needed
            if not variant.is_base and variant not in pending:
                todo = {seq for seq in unique if not self._memoised(variant, seq, top_tokens)}
                if todo:
                    pending[variant] = todo
        needed = sorted({seq for todo in pending.values() for seq in todo}, key=len)  # shortest first: less padding
        for group in self._logit_groups(needed):
            base = self._base_next(group, label_of)
            for variant, todo in pending.items():
                part = [seq for seq in group if seq in todo]
                if part:
                    table, ids, probs, order = self._compare(variant, part, base, label_of, top_tokens)
                    # Each answer is (the group's array, its row): no numpy view per answer, whose
                    # small allocations, kept for the session, would pin glibc's freed space.
                    for i, seq in enumerate(order):
                        self._memo[("divergences", variant, seq)] = (table, i)
                        if top_tokens:
                            self._memo[("top_tokens", variant, seq)] = (top_tokens, ids, probs, i)
            del base
        column = DIVERGENCES.index(divergence)
        return [
            np.zeros(len(seqs))
            if variant.is_base
            else np.array(
                [table[i, column] for table, i in (self._memo[("divergences", variant, seq)] for seq in seqs)],
                dtype=np.float64,
            )
            for variant in variants
        ]

    def _logit_groups(self, seqs: list) -> list[list]:
        """Consecutive runs of ``seqs`` whose base logits fit the memo's byte budget
        (at least one batch each): the most logits one question holds at a time."""
        row_bytes = self.vocab_size * _element_size(self._torch, self.dtype)
        rows = self._memo.logits.budget // max(row_bytes, 1)
        size = max(self.batch_size, rows - rows % self.batch_size)  # whole batches
        return [seqs[start : start + size] for start in range(0, len(seqs), size)]

    def _memoised(self, variant: Variant, seq, top_tokens: int) -> bool:
        if ("divergences", variant, seq) not in self._memo:
            return False
        return not top_tokens or self._memo.get(("top_tokens", variant, seq), (0,))[0] >= top_tokens

    def _compare(self, variant: Variant, seqs: list, base: dict, label_of: dict, top_tokens: int = 0) -> tuple:
        """``(table, ids, probs, order)``: ``variant``'s logits batch by batch, each batch
        compared with the base's rows as it arrives, then dropped. Row ``i`` of ``table``
        holds every divergence of ``order[i]``; with ``top_tokens``, ``ids[i]`` and
        ``probs[:, i]`` (``[p_base, p_variant]``) are its ``top_tokens`` largest rises and
        falls of probability, found on the device: a few numbers per prompt leave it
        (without, ``ids`` and ``probs`` have no columns)."""
        torch = self._torch
        # The numbers kept go into arrays made before the first batch, not one small
        # allocation per chunk: long-lived small blocks left between a chunk's freed
        # float64 arrays would keep glibc from reusing that space (the heap would grow
        # with the number of prompts; benchmarks/bench_memory.py).
        table = np.empty((len(seqs), len(DIVERGENCES)))
        k = min(top_tokens, self.vocab_size)  # 0: no token candidates
        ids = np.empty((len(seqs), 2 * k), dtype=np.int64)
        probs = np.empty((2, len(seqs), 2 * k))
        order: list = []  # the sequences in the order their rows were filled
        with self._variant(variant), torch.inference_mode():
            for batch, logits in self._next_batches(variant, seqs, label_of):  # one batch's logits at a time
                for start in range(0, len(batch), self._divergence_rows):
                    rows = batch[start : start + self._divergence_rows]
                    o = logits[start : start + len(rows)]
                    b = torch.stack([base[seq].to(o.device) for seq in rows])
                    part = slice(len(order), len(order) + len(rows))
                    table[part], ids[part], probs[:, part] = _chunk_divergences(
                        torch, b, o, self._accumulate, top_tokens
                    )
                    order.extend(rows)
        return table, ids, probs, order

    def _base_next(self, seqs: list, label_of: dict) -> dict:
        """The base's next-token logits for ``seqs`` (at most one memo budget of them):
        from the memo, then the disk cache, then forward passes; all kept in the memo.

        The rows returned are views of the memo's store, valid while the group is
        worked on: the group fits the store and is its most recent part, so nothing
        of it is evicted meanwhile (a group larger than the store gets copies)."""
        store = self._memo.logits
        row_bytes = self.vocab_size * _element_size(self._torch, self.dtype)
        capacity = store.rows or store.budget // max(1, row_bytes)  # the block's, once it exists
        fits = len(seqs) <= capacity
        found = {}
        for seq in seqs:
            hit = store.get((BASE, seq))
            if hit is not None:
                found[seq] = hit if fits else hit.clone()
        missing = [seq for seq in seqs if seq not in found]
        if missing and self.cache is not None:
            still = []
            for seq in missing:
                stored = self.cache.get(("next", seq))
                if stored is None:
                    still.append(seq)
                else:
                    found[seq] = self._keep(seq, self._from_store("next", stored), fits)
            missing = still
        if missing:
            # Room first: the group's new rows replace the oldest ones instead of joining
            # them, so the store and the group together stay within one budget.
            store.make_room(len(missing) * row_bytes)
            with self._variant(BASE):
                for batch, logits in self._next_batches(BASE, missing, label_of):
                    for row, seq in enumerate(batch):
                        if self.cache is not None:
                            self.cache.put(("next", seq), self._to_store(logits[row]))
                        found[seq] = self._keep(seq, logits[row], fits)
        return found

    def _keep(self, seq, row, fits: bool):
        """Put a base row in the memo's store; what the group may hold on to."""
        kept = self._memo.logits.put((BASE, seq), row)
        return kept if fits and kept is not row else row.clone()

    def completion_logprobs(
        self, pairs: Sequence[tuple[str, str]], *, variant: Variant = FINETUNED, chat: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        items = [self.completion_tokens(prompt, completion, chat=chat) for prompt, completion in pairs]
        scores = self.token_logprobs(items, variant, labels=[repr(pair) for pair in pairs])
        return np.array([s.sum() for s in scores]), np.array([len(s) for s in scores])

    def text_logprobs(
        self,
        texts: Sequence[str],
        *,
        variant: Variant = FINETUNED,
        window: int | None = None,
        stride: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        window = window or self.context_length or 2048
        if self.context_length is not None and window > self.context_length:
            raise BackendError(f"window={window} exceeds the model's context of {self.context_length} tokens")
        items, owner = [], []
        for i, text in enumerate(texts):
            ids = tuple(self.tokenizer(text)["input_ids"])
            spans = scoring_windows(len(ids), window, stride)
            if not spans:
                raise BackendError(f"text {_short(text)} is a single token; nothing in it can be scored")
            for begin, end, score_from in spans:
                items.append((ids[begin:end], score_from - begin))
                owner.append(i)
        scores = self.token_logprobs(items, variant, labels=[texts[i] for i in owner])
        sums, counts = np.zeros(len(texts)), np.zeros(len(texts), dtype=np.int64)
        for i, s in zip(owner, scores):
            sums[i] += s.sum()
            counts[i] += len(s)
        return sums, counts

    def greedy(
        self, prompts: Sequence[str], *, variant: Variant = FINETUNED, max_new_tokens: int = 16, chat: bool = False
    ) -> list[tuple[int, ...]]:
        seqs = self.encode_prompts(prompts, chat=chat)
        if self.context_length is not None:
            for seq, prompt in zip(seqs, prompts):
                if len(seq) + max_new_tokens > self.context_length:
                    raise BackendError(
                        f"prompt {_short(prompt)} ({len(seq)} tokens) plus {max_new_tokens} new tokens exceeds the "
                        f"model's context of {self.context_length} tokens"
                    )
        items = [(seq, max_new_tokens) for seq in seqs]
        return self._answers("greedy", variant, items, prompts, self._compute_greedy)

    def _compute_greedy(self, variant: Variant, items: list, label_of: dict) -> dict:
        out = {}
        n = items[0][1]
        # generate() needs left padding: on the CPU its batches hold one exact length.
        batches = self._batches([seq for seq, _ in items], length=lambda seq: len(seq) + n, exact=True)
        for batch in self._tracked(batches, f"{variant}: greedy continuations"):
            for seq, new in zip(batch, self._generate(variant, batch, n)):
                out[(seq, n)] = new
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
        if responses is None:  # the base's own greedy answer, token for token (no re-tokenization)
            seqs = self.encode_prompts(prompts, chat=chat)
            continuations = self.greedy(prompts, variant=BASE, max_new_tokens=max_new_tokens, chat=chat)
            items, labels = [], []
            for prompt, seq, new in zip(prompts, seqs, continuations):
                if not new:
                    raise BackendError(
                        f"the base model's greedy continuation of prompt {_short(prompt)} is empty (it ends the "
                        "sequence at once), so there is no response to compare; give (prompt, response) pairs"
                    )
                items.append((seq + tuple(new), len(seq)))
                labels.append(prompt)
        else:
            items = [self.completion_tokens(p, r, chat=chat) for p, r in zip(prompts, responses)]
            labels = [f"{p!r} -> {r!r}" for p, r in zip(prompts, responses)]
        missing = [it for it in dict.fromkeys(items) if (divergence, variant, it) not in self._responses]
        if missing:
            missing.sort(key=_length)
            label_of = dict(zip(items, labels))
            # Both variants' logits of a batch count against the logit budget.
            batches = self._batches(missing, length=lambda it: len(it[0]), keep=lambda it: 2 * (len(it[0]) - it[1] + 1))
            for batch in self._tracked(batches, f"base and {variant}: teacher-forced responses"):
                self._response_batch(batch, divergence, variant, label_of)
        return [self._responses[(divergence, variant, it)] for it in items]

    def _response_batch(self, batch: list, divergence: str, variant: Variant, label_of: dict) -> None:
        """Teacher-force one batch through the base and ``variant``; keep per-position results only.

        The response positions of all rows are processed together, in chunks of
        ``_divergence_rows`` positions (``_DIVERGENCE_ELEMENTS_*`` float64 elements per
        array), so a small vocabulary does not pay per-row overhead and a long
        response does not build one huge float64 block."""
        torch = self._torch
        keep = max(len(ids) - start for ids, start in batch) + 1
        seqs = [ids for ids, _ in batch]
        base = self._forward(BASE, seqs, keep=keep)
        other = self._forward(variant, seqs, keep=keep)
        chunk = self._divergence_rows
        values: list[Any] = []
        agree: list[Any] = []
        pending: list[tuple[int, int, int]] = []
        pending_n = 0

        def flush():
            # Position p predicts token p + 1: the logits before each response token.
            b = torch.cat([base[r, lo:hi] for r, lo, hi in pending]).to(self._accumulate)
            o = torch.cat([other[r, lo:hi] for r, lo, hi in pending]).to(self._accumulate)
            if not (torch.isfinite(b).all() and torch.isfinite(o).all()):
                bad = next(
                    r
                    for r, lo, hi in pending
                    if not (torch.isfinite(base[r, lo:hi]).all() and torch.isfinite(other[r, lo:hi]).all())
                )
                raise BackendError(
                    f"the base or {variant} model returned NaN or infinite logits for {_short(label_of[batch[bad]])}"
                )
            base_logp, other_logp = _log_softmaxes(b, o, self._accumulate)
            values.append(_divergence(base_logp, other_logp, divergence, torch)[: b.shape[0]].cpu())
            agree.append((b.argmax(-1) == o.argmax(-1)).cpu())
            pending.clear()

        with torch.inference_mode():
            for row, (ids, start) in enumerate(batch):
                lo = keep - (len(ids) - start) - 1
                while lo < keep - 1:
                    take = min(keep - 1 - lo, chunk - pending_n)
                    pending.append((row, lo, lo + take))
                    pending_n, lo = pending_n + take, lo + take
                    if pending_n >= chunk:
                        flush()
                        pending_n = 0
            if pending:
                flush()
            flat_values = torch.cat(values).numpy().astype(np.float64)
            flat_agree = torch.cat(agree).numpy()
        at = 0
        for ids, start in batch:
            n = len(ids) - start
            self._responses[(divergence, variant, (ids, start))] = ResponseDivergence(
                flat_values[at : at + n].copy(), flat_agree[at : at + n].copy(), tuple(ids[start:])
            )
            at += n

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # -- tokenization ---------------------------------------------------------------------

    def format_prompt(self, prompt: str, *, chat: bool) -> tuple[str, bool]:
        """The text to tokenize and whether the tokenizer should add its special tokens."""
        if not chat:
            return prompt, True
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(
                f"chat=True, but the tokenizer of {self.model_name!r} has no chat template; "
                "drop chat=True, or use a chat model (one whose tokenizer_config.json or chat_template.jinja has one)"
            )
        # A Conversation (a multi-turn prompt) carries its messages; a string is one user turn.
        messages = getattr(prompt, "messages", None) or [{"role": "user", "content": prompt}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text, False  # the template already holds any BOS token

    def encode_prompts(self, prompts: Sequence[str], *, chat: bool) -> list[tuple[int, ...]]:
        formatted = [self.format_prompt(prompt, chat=chat) for prompt in prompts]
        special = formatted[0][1] if formatted else True
        seqs = []
        # A few hundred prompts per tokenizer call: the fast tokenizer batches them in Rust, and
        # what it holds per call stays bounded (all 4,096 prompts at once took 19 MiB on SmolLM2).
        for start in range(0, len(formatted), _ENCODE_PROMPTS):
            part = formatted[start : start + _ENCODE_PROMPTS]
            encoded = self.tokenizer([text for text, _ in part], add_special_tokens=special)["input_ids"]
            for ids, prompt in zip(encoded, prompts[start : start + _ENCODE_PROMPTS]):
                ids = tuple(ids)
                self._check_length(ids, prompt)
                seqs.append(ids)
        return seqs

    def completion_tokens(self, prompt: str, completion: str, *, chat: bool) -> tuple[tuple[int, ...], int]:
        """``(ids, start)``: the tokens of prompt + completion, and where the completion's begin.

        The text is tokenized whole, as the model would see it, and the
        completion's tokens are those that cover any of its characters. Where
        the tokenizer merges across the boundary (a prompt ending in a space,
        then a word), the merged token belongs to the completion: splitting
        "prompt tokens" + "completion tokens" instead would score a
        tokenization the model never produces.
        """
        text, special = self.format_prompt(prompt, chat=chat)
        boundary = len(text)
        full = text + completion
        try:
            enc = self.tokenizer(full, add_special_tokens=special, return_offsets_mapping=True)
            ids, spans = list(enc["input_ids"]), enc["offset_mapping"]
            covering = [i for i, (lo, hi) in enumerate(spans) if hi > boundary and hi > lo]
            start, stop = (covering[0], covering[-1] + 1) if covering else (len(ids), len(ids))
        except NotImplementedError:  # a slow tokenizer has no offsets: longest common prefix
            ids = list(self.tokenizer(full, add_special_tokens=special)["input_ids"])
            head = self.tokenizer(text, add_special_tokens=special)["input_ids"]
            start = next((i for i, (x, y) in enumerate(zip(ids, head)) if x != y), min(len(ids), len(head)))
            stop = len(ids)
        label = f"{prompt!r} + {completion!r}"
        if start >= stop:
            raise BackendError(f"completion of {label} encodes to no tokens")
        if start == 0:
            raise BackendError(f"completion of {label} starts the sequence; it needs a prompt before it")
        self._check_length(ids[:stop], label)
        return tuple(ids[:stop]), start

    def _check_length(self, ids, label: str) -> None:
        if not ids:
            raise BackendError(f"prompt {_short(label)} encodes to no tokens")
        if self.context_length is not None and len(ids) > self.context_length:
            raise BackendError(
                f"prompt {_short(label)} is {len(ids)} tokens long, more than the model's context of "
                f"{self.context_length} tokens; shorten it"
            )

    # -- forward passes ---------------------------------------------------------------------

    def next_token_logits(self, seqs, variant: Variant, *, labels: Sequence[str]) -> list:
        """Last-position logits (1-d tensors on the device) per token sequence.

        The base's are kept in the memo's logit store (within its byte budget)
        and the disk cache; other variants' are computed afresh. Probes ask
        ``divergences``, which keeps numbers rather than these rows.
        """
        seqs = list(seqs)
        label_of = dict(zip(seqs, labels))
        unique = list(dict.fromkeys(seqs))
        if variant.is_base:
            found = {}
            for group in self._logit_groups(sorted(unique, key=len)):
                found.update({seq: row.clone() for seq, row in self._base_next(group, label_of).items()})
        else:
            with self._variant(variant):
                found = self._compute_next(variant, sorted(unique, key=len), label_of)
        return [found[seq] for seq in seqs]

    def token_logprobs(self, items, variant: Variant, *, labels: Sequence[str]) -> list[np.ndarray]:
        """Per ``(ids, start)``: log p(ids[j] | ids[:j]) for j >= start (float64 numpy)."""
        return self._answers("score", variant, list(items), labels, self._compute_scores)

    def _answers(self, op: str, variant: Variant, items: list, labels: Sequence[str], compute) -> list:
        """Answers to ``op`` for ``items``: from the session memo, then (for the base)
        the disk cache, then ``compute(variant, missing items, labels)``."""
        label_of = dict(zip(items, labels))
        missing = [item for item in dict.fromkeys(items) if (op, variant, item) not in self._memo]
        if missing and variant.is_base and self.cache is not None:
            still = []
            for item in missing:
                stored = self.cache.get((op, item))
                if stored is None:
                    still.append(item)
                else:
                    self._memo[(op, variant, item)] = self._from_store(op, stored)
            missing = still
        if missing:
            missing.sort(key=_length)  # shortest first: less padding per batch
            with self._variant(variant):  # entered once for all the batches
                computed = compute(variant, missing, label_of)
            for item in missing:
                self._memo[(op, variant, item)] = computed[item]
                if variant.is_base and self.cache is not None:
                    self.cache.put((op, item), self._to_store(computed[item]))
        return [self._memo[(op, variant, item)] for item in items]

    def _to_store(self, value) -> np.ndarray:
        if isinstance(value, tuple):
            return np.array(value, dtype=np.int64)
        if hasattr(value, "cpu"):
            return value.float().cpu().numpy()  # exact for float16/bfloat16/float32 logits
        return value

    def _from_store(self, op: str, stored: np.ndarray):
        if op == "greedy":
            return tuple(int(t) for t in stored)
        if op == "next":  # float32 holds half-precision logits exactly; divergences upcast anyway
            return self._torch.from_numpy(stored).to(self.input_device)
        return stored

    def _compute_next(self, variant: Variant, seqs: list, label_of: dict) -> dict:
        out = {}
        for batch, logits in self._next_batches(variant, seqs, label_of):
            for row, seq in enumerate(batch):
                out[seq] = logits[row].clone()  # its own storage: the batch's is freed
        return out

    def _next_batches(self, variant: Variant, seqs: list, label_of: dict):
        """``(batch, last-position logits)`` per forward pass, one pass at a time."""
        for batch in self._tracked(self._batches(seqs), f"{variant}: next-token distributions"):
            logits = self._forward(variant, batch, keep=1)[:, -1, :]
            finite = self._torch.isfinite(logits).all(dim=-1).cpu()
            for row, seq in enumerate(batch):
                if not finite[row]:
                    raise BackendError(
                        f"the {variant} model returned NaN or infinite logits for prompt {_short(label_of[seq])}"
                    )
            yield batch, logits

    def _compute_scores(self, variant: Variant, items: list, label_of: dict) -> dict:
        torch = self._torch
        out = {}
        batches = self._batches(items, length=lambda it: len(it[0]), keep=lambda it: len(it[0]) - it[1] + 1)
        for batch in self._tracked(batches, f"{variant}: token log-probabilities"):
            keep = max(len(ids) - start for ids, start in batch) + 1
            logits = self._forward(variant, [ids for ids, _ in batch], keep=keep)
            with torch.inference_mode():
                for row, (ids, start) in enumerate(batch):
                    n = len(ids) - start
                    # Position p predicts token p + 1: the logits before each scored token.
                    rows = logits[row, keep - n - 1 : keep - 1].to(self._accumulate)
                    if not torch.isfinite(rows).all():
                        raise BackendError(
                            f"the {variant} model returned NaN or infinite logits for {_short(label_of[(ids, start)])}"
                        )
                    targets = torch.tensor(ids[start:], device=rows.device).unsqueeze(-1)
                    lp = rows.log_softmax(-1).gather(-1, targets).squeeze(-1)
                    out[(ids, start)] = lp.cpu().numpy().astype(np.float64)
        return out

    def _tracked(self, batches: list[list], what: str) -> Iterator[list]:
        """``batches``, one at a time, telling ``self.progress`` how many items are done."""
        total = sum(map(len, batches))
        done = 0
        if self.progress is not None:
            self.progress(what, 0, total)
        for batch in batches:
            yield batch
            if self.input_device.type == "cpu":
                _trim_heap()
            done += len(batch)
            if self.progress is not None:
                self.progress(what, done, total)

    def _batches(self, items: list, *, length=len, keep=lambda item: 1, exact: bool = False) -> list[list]:
        """Group length-sorted items into forward passes that respect the batch size,
        the token budget (rows x padded width) and the logit budget (rows x ``keep``
        positions x vocabulary).

        On the CPU a batch holds items of one canonical width only
        (``_canonical_width``; with ``exact``, of one length, for left-padded
        generation): an item's logits are then bit-identical alone, in a full run, or
        on any xdist worker. Elsewhere batches are left-padded to their longest item
        (GPU kernels round by batch shape anyway; benchmarks/bench_gpu.py measures
        what that costs in bf16).
        """
        row_bytes = self.vocab_size * _element_size(self._torch, self.dtype)  # one position's logits
        batches: list[list] = []
        if self._exact_shapes:
            shape = length if exact else (lambda item: self._canonical_width(length(item)))
            groups: dict = {}
            for item in items:
                groups.setdefault(shape(item), []).append(item)
            for width, group in sorted(groups.items()):
                batches.extend(self._split(group, width=lambda item, w=width: w, keep=keep, row_bytes=row_bytes))
            return batches
        return self._split(items, width=length, keep=keep, row_bytes=row_bytes)

    def _split(self, items: list, *, width, keep, row_bytes: int) -> list[list]:
        """Consecutive runs of ``items`` within the batch size and the token and logit budgets."""
        batches: list[list] = []
        current: list = []
        wide = kept = 0
        for item in items:
            w, k = max(wide, width(item)), max(kept, keep(item))
            rows = len(current) + 1
            if current and (rows > self.batch_size or rows * w > _TOKEN_BUDGET or rows * k * row_bytes > _LOGIT_BYTES):
                batches.append(current)
                current, w, k = [], width(item), keep(item)
            current.append(item)
            wide, kept = w, k
        if current:
            batches.append(current)
        return batches

    def _canonical_width(self, n: int) -> int:
        """The padded width of a CPU batch holding sequences of ``n`` tokens."""
        width = max(_WIDTH_STEP, -(-n // _WIDTH_STEP) * _WIDTH_STEP)
        return width if self.context_length is None else max(n, min(width, self.context_length))

    def _left_padded(self, batch: list):
        """Left-padded ids, attention mask and position ids for a batch of token sequences.

        On the CPU a batch is topped up to a multiple of ``_MIN_ROWS`` rows with copies
        of its first sequence; callers read the rows of ``batch`` only.
        """
        torch = self._torch
        if self._exact_shapes and len(batch) % _MIN_ROWS:
            batch = list(batch) + [batch[0]] * (_MIN_ROWS - len(batch) % _MIN_ROWS)
        width = max(len(s) for s in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, width - len(seq) :] = seq
            mask[row, width - len(seq) :] = 1
        # Pads sit left; each row's positions count from its first real token.
        positions = np.maximum(mask.cumsum(-1) - 1, 0)
        return tuple(torch.from_numpy(a).to(self.input_device) for a in (ids, mask, positions))

    def _right_padded(self, batch: list, keep: int):
        """Ids right-padded to the batch's canonical width, an all-ones attention mask,
        position ids, and which hidden states the output layer gets: per row its last
        ``keep`` real positions (right-aligned as in a left-padded batch, the first
        repeated for a shorter row), as indices into the [rows x width] positions,
        topped up with copies of the first to a multiple of ``_ROW_QUANTUM``.

        Pads come after every real token, so causal attention keeps them out of the
        real positions; the mask is all ones so that every batch takes the same
        (causal) attention path whether or not it has pads.
        """
        torch = self._torch
        width = self._canonical_width(max(len(s) for s in batch))
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        lengths = np.empty((len(batch), 1), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            lengths[row] = len(seq)
        mask = np.ones_like(ids)
        positions = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy()
        wanted = np.maximum(lengths - keep + np.arange(keep, dtype=np.int64), 0)
        gather = (wanted + width * np.arange(len(batch), dtype=np.int64)[:, None]).ravel()
        gather = np.concatenate([gather, np.full(-len(gather) % _ROW_QUANTUM, gather[0])])
        return tuple(torch.from_numpy(a).to(self.input_device) for a in (ids, mask, positions, gather))

    def _forward(self, variant: Variant, batch: list, *, keep: int):
        """One forward pass; the logits of each row's last ``keep`` positions ([rows, keep, vocabulary])."""
        torch = self._torch
        self.forwarded[("next" if keep == 1 else "score", str(variant))] += len(batch)
        self.forward_calls[str(variant)] += 1
        if self._exact_shapes:
            ids, mask, positions, gather = self._right_padded(batch, keep)
        else:
            (ids, mask, positions), gather = self._left_padded(batch), None
        with torch.inference_mode(), self._variant(variant) as model:
            self._gather.index = gather
            try:
                out = model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=False,
                    logits_to_keep=0 if gather is not None else keep,  # 0: all; the hook picks per row
                )
            finally:
                self._gather.index = None
        if gather is None:
            return out.logits[:, -keep:, :]
        return out.logits[0, : len(batch) * keep].view(len(batch), keep, -1)

    def _generate(self, variant: Variant, batch: list, max_new_tokens: int) -> list[tuple[int, ...]]:
        """Greedy continuations of a left-padded batch (generate derives position ids from the mask)."""
        from transformers import GenerationConfig

        torch = self._torch
        ids, mask, _ = self._left_padded(batch)
        eos = self.tokenizer.eos_token_id
        config = GenerationConfig(
            do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=self.pad_id, eos_token_id=eos
        )
        self.forwarded[("greedy", str(variant))] += len(batch)
        self.forward_calls[str(variant)] += 1
        with torch.inference_mode(), self._variant(variant) as model:
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        continuations = []
        for row in out[: len(batch), ids.shape[1] :].tolist():
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            continuations.append(tuple(row))
        return continuations

    @contextlib.contextmanager
    def _variant(self, variant: Variant):
        """The model that answers for ``variant``, in the state it needs; restored on exit.

        Entered once around all the batches of a question: peft's
        ``disable_adapter`` walks every module on entry, and a null adapter
        swaps every LoRA weight. Nested entries for the same variant are free.
        """
        if self._active is not None:
            if self._active[0] != variant:
                raise RuntimeError(f"{variant} requested inside {self._active[0]}")
            yield self._active[1]
            return
        with self._enter(variant) as model:
            self._active = (variant, model)
            try:
                yield model
            finally:
                self._active = None

    @contextlib.contextmanager
    def _enter(self, variant: Variant):
        if self.peft_model is None:
            if variant.is_base:
                yield self.base_model
            elif variant == FINETUNED:
                yield self.finetuned_model
            else:
                raise BackendError(
                    f"the {variant} model needs a LoRA adapter (--sway-adapter): scaled and null adapters are "
                    "defined on an adapter's update, and a fully fine-tuned checkpoint (--sway-finetuned) has none"
                )
            return
        model = self.peft_model
        if variant.is_base:
            with model.disable_adapter():
                yield model
        elif variant.null_seed is not None:
            from .null_adapter import null_adapter

            with null_adapter(model, variant.null_seed):
                yield model
        elif variant.scale == 1.0:
            yield model
        else:
            from peft.helpers import rescale_adapter_scale

            with rescale_adapter_scale(model, variant.scale):
                yield model


#: Prompts per tokenizer call in ``encode_prompts``.
_ENCODE_PROMPTS = 256


class _LogitStore:
    """Least-recently-used vocabulary rows under a byte budget, in one block.

    The rows live in a single tensor of ``budget // row bytes`` rows, allocated
    on the first ``put`` and reused slot by slot: no allocation per row, so the
    allocator has nothing to fragment (with a tensor per row, glibc's heap grew
    with the number of rows that passed through). ``get`` and ``put`` return
    views of the block, valid until that row is evicted.
    """

    def __init__(self, budget: int):
        from collections import OrderedDict

        self.budget = max(0, int(budget))
        self.bytes = 0
        self.row_bytes = 0
        self._items: OrderedDict[Any, int] = OrderedDict()  # key -> slot, least recently used first
        self._block: Any = None  # one tensor of rows, allocated on first use
        self._free: list[int] = []

    @property
    def rows(self) -> int:
        """Rows the block holds (0 before the first ``put``)."""
        return 0 if self._block is None else self._block.shape[0]

    def capacity(self, row) -> int:
        """How many rows like ``row`` the budget holds."""
        return self.budget // max(1, row.numel() * row.element_size())

    def get(self, key):
        slot = self._items.get(key)
        if slot is None:
            return None
        self._items.move_to_end(key)
        return self._block[slot]

    def make_room(self, size: int) -> None:
        """Evict the least recently used until ``size`` more bytes fit (or nothing is left)."""
        while self._items and self.bytes + size > self.budget:
            self._evict()

    def put(self, key, value):
        """Keep a copy of ``value`` (evicting the least recently used as needed) and
        return it; ``value`` itself when it cannot be kept."""
        if self._block is None:
            rows = self.capacity(value)
            if rows == 0:
                return value
            import torch

            self._block = torch.empty((rows, *value.shape), dtype=value.dtype, device=value.device)
            self._free = list(range(rows - 1, -1, -1))
            self.row_bytes = value.numel() * value.element_size()
        if value.shape != self._block.shape[1:]:
            return value
        slot = self._items.get(key)
        if slot is None:
            if not self._free:
                self._evict()
            slot = self._free.pop()
            self._items[key] = slot
            self.bytes += self.row_bytes
        self._items.move_to_end(key)
        self._block[slot].copy_(value)
        return self._block[slot]

    def _evict(self) -> None:
        _, slot = self._items.popitem(last=False)
        self._free.append(slot)
        self.bytes -= self.row_bytes

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self._block, self._free, self.bytes = None, [], 0


class _Memo:
    """The session memo: finished answers per (question, variant, item) — numbers,
    per-token arrays, token ids — and a bounded store of the base's logits.

    An item's token ids are kept packed, 4 bytes a token, and once for every question
    and variant that answered it: as tuples of Python ints, a 12-token prompt's keys
    cost about 500 bytes per answer, and each probe's own encoding of the same
    prompts stayed alive in the keys it added."""

    def __init__(self, logit_bytes: int):
        self.answers: dict[tuple, dict] = {}  # (question, variant) -> {packed item: answer}
        self._items: dict = {}  # each packed item once
        self.logits = _LogitStore(logit_bytes)

    def __contains__(self, key) -> bool:
        op, variant, item = key
        return _packed(item) in self.answers.get((op, variant), ())

    def __getitem__(self, key):
        op, variant, item = key
        return self.answers[(op, variant)][_packed(item)]

    def __setitem__(self, key, value) -> None:
        op, variant, item = key
        packed = _packed(item)
        self.answers.setdefault((op, variant), {})[self._items.setdefault(packed, packed)] = value

    def get(self, key, default=None):
        op, variant, item = key
        return self.answers.get((op, variant), {}).get(_packed(item), default)

    def clear(self) -> None:
        self.answers.clear()
        self._items.clear()
        self.logits.clear()


def _packed(item):
    """A tuple of ints as their int32 bytes; a tuple holding one (``(ids, start)``) with it packed."""
    if not isinstance(item, tuple):
        return item
    if all(type(x) is int for x in item):
        try:
            return array("i", item).tobytes()
        except OverflowError:  # not token ids: kept as they are
            return item
    return tuple(_packed(x) for x in item)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another libc, another OS)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _trim_heap() -> None:
    """Give the pages of freed memory back to the OS.

    On the CPU a forward pass's transient tensors come and go in glibc's heap,
    which keeps the freed pages; successive passes land on different free
    pages, so the resident size creeps up to the heap's whole extent (measured
    on SmolLM2: a delta_kl run's peak grew 56 MiB from 256 to 2,048 prompts
    when trimmed once per group of 320 prompts, 25 MiB when trimmed after every
    batch). Called after each batch: well under a millisecond against a
    forward pass.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _chunk_divergences(torch, base_logits, other_logits, dtype, top_tokens: int):
    """Every divergence per row (numpy, rows x DIVERGENCES) of two [rows, vocabulary]
    logit blocks, computed in ``dtype``, and with ``top_tokens`` the token candidates
    (``_token_candidates``; no columns without)."""
    n = base_logits.shape[0]
    b, o = _log_softmaxes(base_logits, other_logits, dtype)
    values = _all_divergences(b, o, torch)
    table = torch.stack([values[kind] for kind in DIVERGENCES], dim=-1)[:n].cpu().numpy()
    if not top_tokens:
        return table, np.empty((n, 0), dtype=np.int64), np.empty((2, n, 0))
    ids, probs = _token_candidates(torch, b, o, top_tokens)
    return table, ids[:n], probs[:, :n]


def _log_softmaxes(base_logits, other_logits, dtype):
    """Both [rows, vocabulary] blocks' log-softmax in ``dtype``, a lone row computed
    beside a copy of itself (callers keep the first ``rows``). On the CPU, torch
    reduces a single row of a large vocabulary by another path (split across
    threads) than a row among others: measured at 49,152 and 128,256 tokens, a lone
    row's divergences differ in the last bits from the same row's in any chunk of 2
    to 40 rows, and a prompt's values would depend on which others shared its chunk."""

    def log_softmax(x):
        x = x.to(dtype)
        return (x.repeat(2, 1) if x.shape[0] == 1 else x).log_softmax(-1)

    return log_softmax(base_logits), log_softmax(other_logits)


def _token_candidates(torch, base_logp, other_logp, k: int):
    """Per row, the ids of the ``k`` largest rises and ``k`` largest falls of
    probability (``p_other - p_base``) and both probabilities of each: numpy
    ``ids`` (rows, 2k) and ``probs`` (2, rows, 2k). Picking and ordering them is
    ``pytest_sway.backends.token_changes.top_tokens``'s."""
    p_base, p_other = base_logp.exp(), other_logp.exp()
    change = p_other - p_base
    k = min(k, change.shape[-1])
    ids = torch.cat([change.topk(k, dim=-1).indices, change.topk(k, dim=-1, largest=False).indices], dim=-1)
    probs = torch.stack([p_base.gather(-1, ids), p_other.gather(-1, ids)])
    return ids.cpu().numpy(), probs.cpu().numpy().astype(np.float64)


def _element_size(torch, dtype) -> int:
    """Bytes per logit in ``dtype`` (4 where the dtype is not a torch dtype)."""
    return torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 4


class _Gather:
    """The output layer's forward pre-hook: give it a contiguous input, and during a
    right-padded pass only the positions each row needs.

    With ``logits_to_keep=1`` transformers feeds the output layer a strided
    slice of the hidden states, and on CPU the matmul over such a slice can
    round differently depending on where the weights sit in memory: the same
    base model loaded twice would differ in the last bits. A contiguous copy of
    the wanted rows makes the answer depend on the values alone. In a
    right-padded batch the rows' last positions are at different places:
    ``index`` (positions in the flattened [rows x width] hidden states, set
    around the pass) picks them row by row, so the output layer computes no more
    logits than over a left-padded batch; they reach it as one batch row of
    ``len(index)`` positions.
    """

    def __init__(self):
        self.index = None

    def hook(self, module, args):
        hidden, *rest = args
        index = self.index
        if index is not None:  # [rows, width, hidden] -> [1, len(index), hidden]
            hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index).unsqueeze(0)
        return (hidden.contiguous(), *rest)


# -- loading ---------------------------------------------------------------------------------


def _length(item) -> int:
    """Tokens in a memo item: a token sequence, or a (sequence, number) pair."""
    return len(item[0]) if isinstance(item[0], tuple) else len(item)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
