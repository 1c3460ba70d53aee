"""Hugging Face transformers + PEFT backend.

One model answers for both sides when the fine-tune is an adapter: the base
with the adapter attached, asked with the adapter disabled (peft's
``disable_adapter``) for the base's answers and enabled for the fine-tune's.
A fully fine-tuned checkpoint (``finetuned=``) is a second model.

The parts, one module each: ``loading`` (models, tokenizer, adapter, checked),
``batching`` (which items share a forward pass and how it is padded: on the CPU
a prompt's numbers are bit-identical alone or in any batch), ``passes`` (forward
passes and generation per variant), ``divergences`` (computed on the device from
the full-vocabulary log-softmax; only a few numbers per prompt leave it) and
``store`` (the base's logits under a byte budget). Tokenization and the memo of
answers are engine-neutral (``pytest_sway.backends.prompts`` and ``.memo``).

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

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BackendError, is_whole
from ..base import BASE, DEFAULT_BATCH_SIZE, FINETUNED, ResponseDivergence, Variant, scoring_windows
from ..divergence import DIVERGENCES
from ..memo import Memo, item_length
from ..prompts import PromptEncoder, short
from ..token_changes import TopTokens
from ..token_changes import top_tokens as _top_tokens
from .batching import BatchPlanner, element_size
from .divergences import chunk_divergences, response_divergences, rows_per_chunk
from .loading import _context_length, _import_frameworks, _pad_id, load_models, quiet_progress_bars
from .passes import Passes
from .store import LogitStore

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
        pack_shared_prompts: bool = True,
    ):
        if adapter is not None and finetuned is not None:
            raise BackendError("give an adapter or a fine-tuned checkpoint, not both")
        if adapter is None and finetuned is None:
            raise BackendError(
                "nothing to compare the base model with: give an adapter (--sway-adapter) "
                "or a fine-tuned checkpoint (--sway-finetuned)"
            )
        self.model_name = model
        self.adapter_name = adapter
        self.finetuned_name = finetuned
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE
        self.device_map = device_map
        # With a device map, accelerate's placement budget: most bytes of weights per device
        # ({0: "70GiB", "cpu": "100GiB"}) and where layers beyond them go ("disk").
        placement = {"max_memory": max_memory, "offload_folder": offload_folder}
        placement = {k: v for k, v in placement.items() if v is not None}
        if placement and device_map is None:
            raise BackendError("max_memory and offload_folder place a model with a device map; give device_map too")
        torch, _ = _import_frameworks()
        self._torch = torch
        # Loading advances torch's global RNG (peft initialises LoRA weights before it loads
        # the saved ones); a test suite's own random state must not depend on whether sway ran.
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda), quiet_progress_bars():
            loaded = load_models(
                torch,
                model,
                adapter=adapter,
                finetuned=finetuned,
                device=device,
                dtype=dtype,
                device_map=device_map,
                placement=placement,
            )
        self._paths = loaded.paths
        self.tokenizer = loaded.tokenizer
        self.dtype = loaded.dtype
        self.base_model, self.peft_model, self.finetuned_model = (
            loaded.base_model,
            loaded.peft_model,
            loaded.finetuned_model,
        )
        self.input_device = self.base_model.get_input_embeddings().weight.device
        self.context_length = _context_length(loaded.base.config, self.tokenizer)
        self.pad_id = _pad_id(self.tokenizer)
        self.vocab_size = self.base_model.get_output_embeddings().weight.shape[0]
        self._accumulate = torch.float32 if self.input_device.type == "mps" else torch.float64
        # Rows (next-token) or positions (responses) per divergence computation.
        self._divergence_rows = rows_per_chunk(self.input_device.type, self.vocab_size)
        self._prompts = PromptEncoder(self.tokenizer, model_name=model, context_length=self.context_length)
        self._planner = BatchPlanner(
            torch,
            batch_size=self.batch_size,
            context_length=self.context_length,
            pad_id=self.pad_id,
            device=self.input_device,
            row_bytes=self.vocab_size * element_size(torch, self.dtype),  # one position's logits
        )
        self._passes = Passes(
            torch,
            base_model=self.base_model,
            peft_model=self.peft_model,
            finetuned_model=self.finetuned_model,
            planner=self._planner,
            tokenizer=self.tokenizer,
            accumulate=self._accumulate,
            pack=pack_shared_prompts,  # completions after one prompt scored in one row (passes.py)
        )
        self._memo = Memo(LogitStore(memo_bytes))
        #: Finished per-response results (small arrays), keyed by (divergence, variant, (ids, start)).
        self._responses: dict = {}
        self._provenance: dict | None = None
        self.cache = self._open_cache(cache_dir) if cache_dir is not None else None

    @property
    def forwarded(self):
        """Sequences forwarded per (question, variant): what the memo saved shows here."""
        return self._passes.forwarded

    @property
    def forward_calls(self):
        """Model forward calls (batches) per variant."""
        return self._passes.forward_calls

    @property
    def progress(self) -> Callable[[str, int, int], None] | None:
        """Told ``(what, done, total)`` as batches finish (the plugin sets it to show progress)."""
        return self._passes.progress

    @progress.setter
    def progress(self, value: Callable[[str, int, int], None] | None) -> None:
        self._passes.progress = value

    @classmethod
    def from_settings(cls, settings) -> HFBackend:
        """The backend the run's ``--sway-*`` options describe (each option declared with ``backend=True``)."""
        return cls(**settings.backend_options())

    def describe(self) -> dict:
        info: dict[str, Any] = {"name": "hf", "model": self.model_name}
        if self.adapter_name is not None:
            info["adapter"] = self.adapter_name
        if self.finetuned_name is not None:
            info["finetuned"] = self.finetuned_name
        info.update(
            device=str(self.input_device), dtype=str(self.dtype).replace("torch.", ""), batch_size=self.batch_size
        )
        if self.device_map is not None:
            info["device_map"] = self.device_map
        if self._passes.packing_off is not None:
            info["packing"] = f"off: {self._passes.packing_off}"
        return info

    def _open_cache(self, cache_dir):
        """The disk cache for this base model, dtype, device kind and library versions."""
        import transformers

        from ..cache import ResultCache

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
            from ..provenance import folder_sha256, package_versions, platform_summary

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
        self._passes.release()
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
        text = self._prompts.token_texts({int(i) for ids, _ in found for i in ids})
        return values, (_top_tokens(ids, probs[0], probs[1], top_tokens, text.__getitem__) for ids, probs in found)

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
        row_bytes = self._planner.row_bytes
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
        with self._passes.variant(variant), torch.inference_mode():
            for batch, logits in self._passes.next_batches(variant, seqs, label_of):  # one batch's logits at a time
                for start in range(0, len(batch), self._divergence_rows):
                    rows = batch[start : start + self._divergence_rows]
                    o = logits[start : start + len(rows)]
                    b = torch.stack([base[seq].to(o.device) for seq in rows])
                    part = slice(len(order), len(order) + len(rows))
                    table[part], ids[part], probs[:, part] = chunk_divergences(
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
        row_bytes = self._planner.row_bytes
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
            with self._passes.variant(BASE):
                for batch, logits in self._passes.next_batches(BASE, missing, label_of):
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
        scores = self.token_logprobs(items, variant, labels=[repr(pair) for pair in pairs], pack=True)
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
                raise BackendError(f"text {short(text)} is a single token; nothing in it can be scored")
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
                        f"prompt {short(prompt)} ({len(seq)} tokens) plus {max_new_tokens} new tokens exceeds the "
                        f"model's context of {self.context_length} tokens"
                    )
        items = [(seq, max_new_tokens) for seq in seqs]
        return self._answers("greedy", variant, items, prompts, self._passes.greedy)

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
                        f"the base model's greedy continuation of prompt {short(prompt)} is empty (it ends the "
                        "sequence at once), so there is no response to compare; give (prompt, response) pairs"
                    )
                items.append((seq + tuple(new), len(seq)))
                labels.append(prompt)
        else:
            items = [self.completion_tokens(p, r, chat=chat) for p, r in zip(prompts, responses)]
            labels = [f"{p!r} -> {r!r}" for p, r in zip(prompts, responses)]
        missing = [it for it in dict.fromkeys(items) if (divergence, variant, it) not in self._responses]
        if missing:
            missing.sort(key=item_length)
            label_of = dict(zip(items, labels))
            # Both variants' logits of a batch count against the logit budget.
            batches = self._planner.batches(
                missing, length=lambda it: len(it[0]), keep=lambda it: 2 * (len(it[0]) - it[1] + 1)
            )
            for batch in self._passes.tracked(batches, f"base and {variant}: teacher-forced responses"):
                self._response_batch(batch, divergence, variant, label_of)
        return [self._responses[(divergence, variant, it)] for it in items]

    def _response_batch(self, batch: list, divergence: str, variant: Variant, label_of: dict) -> None:
        """Teacher-force one batch through the base and ``variant``; keep per-position results only."""
        keep = max(len(ids) - start for ids, start in batch) + 1
        seqs = [ids for ids, _ in batch]
        base = self._passes.forward(BASE, seqs, keep=keep)
        other = self._passes.forward(variant, seqs, keep=keep)
        results = response_divergences(
            self._torch,
            base,
            other,
            batch,
            keep=keep,
            kind=divergence,
            chunk=self._divergence_rows,
            dtype=self._accumulate,
            variant=variant,
            label_of=label_of,
        )
        for item, result in zip(batch, results):
            self._responses[(divergence, variant, item)] = result

    def decode(self, ids) -> str:
        return self._prompts.decode(ids)

    def format_prompt(self, prompt: str, *, chat: bool) -> tuple[str, bool]:
        return self._prompts.format_prompt(prompt, chat=chat)

    def encode_prompts(self, prompts: Sequence[str], *, chat: bool) -> list[tuple[int, ...]]:
        return self._prompts.encode_prompts(prompts, chat=chat)

    def completion_tokens(self, prompt: str, completion: str, *, chat: bool) -> tuple[tuple[int, ...], int]:
        return self._prompts.completion_tokens(prompt, completion, chat=chat)

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
            with self._passes.variant(variant):
                found = self._passes.next_logits(variant, sorted(unique, key=len), label_of)
        return [found[seq] for seq in seqs]

    def token_logprobs(self, items, variant: Variant, *, labels: Sequence[str], pack: bool = False) -> list[np.ndarray]:
        """Per ``(ids, start)``: log p(ids[j] | ids[:j]) for j >= start (float64 numpy); with ``pack``,
        items that share a prompt ``ids[:start]`` in this call are scored in one packed row."""
        compute = functools.partial(self._passes.token_scores, pack=pack)
        return self._answers("score", variant, list(items), labels, compute)

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
            missing.sort(key=item_length)  # shortest first: less padding per batch
            with self._passes.variant(variant):  # entered once for all the batches
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
