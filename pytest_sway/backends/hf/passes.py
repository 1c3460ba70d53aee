"""Forward passes and generation: one variant of the model at a time, batch by batch.

A :class:`Passes` object holds the loaded models and answers for a
:class:`~pytest_sway.backends.base.Variant`: the base (the adapter disabled with
peft's ``disable_adapter``), the fine-tune, the adapter's update scaled, or a
null adapter. Each state switch is a context manager that restores the model on
exit. It counts what it forwards, tells ``progress`` how far a question is, and
on the CPU gives freed memory back to the OS after every batch.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ...errors import BackendError
from ..base import FINETUNED, Variant
from ..prompts import short
from .batching import BatchPlanner


class Passes:
    """The models behind the variants, run through ``planner``'s batches."""

    def __init__(self, torch, *, base_model, peft_model, finetuned_model, planner: BatchPlanner, tokenizer, accumulate):
        self._torch = torch
        #: The dtype log-probabilities are computed in (float64; float32 on MPS).
        self.accumulate = accumulate
        self.base_model = base_model
        self.peft_model = peft_model
        self.finetuned_model = finetuned_model
        self.planner = planner
        self.tokenizer = tokenizer
        #: The positions the output layer computes logits for during a right-padded pass.
        self._gather = _Gather()
        for m in (base_model, finetuned_model):
            if m is not None:
                m.get_output_embeddings().register_forward_pre_hook(self._gather.hook)
        self._active: tuple[Variant, Any] | None = None  # (variant, model) while a variant's context is entered
        #: Sequences forwarded per (question, variant): what the memo saved shows here.
        self.forwarded: Counter = Counter()
        #: Model forward calls (batches) per variant.
        self.forward_calls: Counter = Counter()
        #: Told ``(what, done, total)`` as batches finish (the plugin sets it to show progress).
        self.progress: Callable[[str, int, int], None] | None = None

    def release(self) -> None:
        self.base_model = self.peft_model = self.finetuned_model = None

    def tracked(self, batches: list[list], what: str) -> Iterator[list]:
        """``batches``, one at a time, telling ``self.progress`` how many items are done."""
        total = sum(map(len, batches))
        done = 0
        if self.progress is not None:
            self.progress(what, 0, total)
        for batch in batches:
            yield batch
            if self.planner.device.type == "cpu":
                trim_heap()
            done += len(batch)
            if self.progress is not None:
                self.progress(what, done, total)

    def next_batches(self, variant: Variant, seqs: list, label_of: dict):
        """``(batch, last-position logits)`` per forward pass, one pass at a time."""
        for batch in self.tracked(self.planner.batches(seqs), f"{variant}: next-token distributions"):
            logits = self.forward(variant, batch, keep=1)[:, -1, :]
            finite = self._torch.isfinite(logits).all(dim=-1).cpu()
            for row, seq in enumerate(batch):
                if not finite[row]:
                    raise BackendError(
                        f"the {variant} model returned NaN or infinite logits for prompt {short(label_of[seq])}"
                    )
            yield batch, logits

    def next_logits(self, variant: Variant, seqs: list, label_of: dict) -> dict:
        """Each sequence's last-position logits, in storage of its own."""
        out = {}
        for batch, logits in self.next_batches(variant, seqs, label_of):
            for row, seq in enumerate(batch):
                out[seq] = logits[row].clone()  # its own storage: the batch's is freed
        return out

    def token_scores(self, variant: Variant, items: list, label_of: dict) -> dict:
        """Per ``(ids, start)``: log p(ids[j] | ids[:j]) for j >= start (float64 numpy)."""
        torch = self._torch
        out = {}
        batches = self.planner.batches(items, length=lambda it: len(it[0]), keep=lambda it: len(it[0]) - it[1] + 1)
        for batch in self.tracked(batches, f"{variant}: token log-probabilities"):
            keep = max(len(ids) - start for ids, start in batch) + 1
            logits = self.forward(variant, [ids for ids, _ in batch], keep=keep)
            with torch.inference_mode():
                for row, (ids, start) in enumerate(batch):
                    n = len(ids) - start
                    # Position p predicts token p + 1: the logits before each scored token.
                    rows = logits[row, keep - n - 1 : keep - 1].to(self.accumulate)
                    if not torch.isfinite(rows).all():
                        raise BackendError(
                            f"the {variant} model returned NaN or infinite logits for {short(label_of[(ids, start)])}"
                        )
                    targets = torch.tensor(ids[start:], device=rows.device).unsqueeze(-1)
                    lp = rows.log_softmax(-1).gather(-1, targets).squeeze(-1)
                    out[(ids, start)] = lp.cpu().numpy().astype(np.float64)
        return out

    def greedy(self, variant: Variant, items: list, label_of: dict) -> dict:
        """Per ``(ids, max_new_tokens)`` (one number for all): the greedy continuation's token ids."""
        out = {}
        n = items[0][1]
        # generate() needs left padding: on the CPU its batches hold one exact length.
        batches = self.planner.batches([seq for seq, _ in items], length=lambda seq: len(seq) + n, exact=True)
        for batch in self.tracked(batches, f"{variant}: greedy continuations"):
            for seq, new in zip(batch, self.generate(variant, batch, n)):
                out[(seq, n)] = new
        return out

    def forward(self, variant: Variant, batch: list, *, keep: int):
        """One forward pass; the logits of each row's last ``keep`` positions ([rows, keep, vocabulary])."""
        torch = self._torch
        self.forwarded[("next" if keep == 1 else "score", str(variant))] += len(batch)
        self.forward_calls[str(variant)] += 1
        if self.planner.exact_shapes:
            ids, mask, positions, gather = self.planner.right_padded(batch, keep)
        else:
            (ids, mask, positions), gather = self.planner.left_padded(batch), None
        with torch.inference_mode(), self.variant(variant) as model:
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

    def generate(self, variant: Variant, batch: list, max_new_tokens: int) -> list[tuple[int, ...]]:
        """Greedy continuations of a left-padded batch (generate derives position ids from the mask)."""
        from transformers import GenerationConfig

        torch = self._torch
        ids, mask, _ = self.planner.left_padded(batch)
        eos = self.tokenizer.eos_token_id
        config = GenerationConfig(
            do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=self.planner.pad_id, eos_token_id=eos
        )
        self.forwarded[("greedy", str(variant))] += len(batch)
        self.forward_calls[str(variant)] += 1
        with torch.inference_mode(), self.variant(variant) as model:
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        continuations = []
        for row in out[: len(batch), ids.shape[1] :].tolist():
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            continuations.append(tuple(row))
        return continuations

    @contextlib.contextmanager
    def variant(self, variant: Variant):
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


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another libc, another OS)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trim_heap() -> None:
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
