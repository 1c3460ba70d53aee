"""Forward passes and generation: one variant of the model at a time, batch by batch.

A :class:`Passes` object holds the loaded models and answers for a
:class:`~pytest_sway.backends.base.Variant`: the base (the adapter disabled with
peft's ``disable_adapter``), the fine-tune, the adapter's update scaled, or a
null adapter. Each state switch is a context manager that restores the model on
exit. It counts what it forwards, tells ``progress`` how far a question is, and
on the CPU gives freed memory back to the OS after every batch.

Token scores of items that share a prompt (a question's choices) are computed in
packed rows (``BatchPlanner.packed``): the prompt is forwarded once per group
instead of once per item. Packing is used only where the attention takes a
custom 4D mask (eager and sdpa), and the first packed group of a session is
also scored unpacked: on disagreement the rest of the session scores unpacked.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ...errors import BackendError
from ..base import FINETUNED, Variant
from ..prompts import short
from .batching import PACKED_WIDTH, BatchPlanner, packed_keep, packed_length, shared_prompt_groups

#: Attention implementations that apply a 4D attention mask as given (transformers' masking_utils
#: returns a 4D mask unchanged; flash attention takes none).
PACKABLE_ATTENTION = ("eager", "sdpa")
#: Most a packed score may differ from the unpacked one (nats per token) in the first group's
#: check, by the model's dtype: float32 rounds both ways alike to ~1e-6; the half-precision
#: bounds are guesses, wide of rounding and narrow of a mask that leaks one completion into another.
PACKING_TOLERANCE = {"float32": 1e-4, "float64": 1e-4, "float16": 0.05, "bfloat16": 0.25}


class Passes:
    """The models behind the variants, run through ``planner``'s batches."""

    def __init__(
        self,
        torch,
        *,
        base_model,
        peft_model,
        finetuned_model,
        planner: BatchPlanner,
        tokenizer,
        accumulate,
        pack: bool = True,
    ):
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
        #: Sequences forwarded per (question, variant): what the memo saved shows here. A packed
        #: row counts the items it scores (each is one sequence's worth of answers).
        self.forwarded: Counter = Counter()
        #: Model forward calls (batches) per variant.
        self.forward_calls: Counter = Counter()
        #: Token positions forwarded (rows x padded width) per variant, generation not counted.
        self.forwarded_tokens: Counter = Counter()
        #: Why token scores are not packed (None while they are): asked not to, an attention
        #: implementation that takes no 4D mask, or the first packed group's check failed.
        self.packing_off: str | None = None if pack else "turned off"
        for m in (base_model, finetuned_model):
            impl = getattr(getattr(m, "config", None), "_attn_implementation", None)
            if m is not None and self.packing_off is None and impl not in PACKABLE_ATTENTION:
                self.packing_off = f"attention {impl!r} takes no custom 4D mask"
        self._pack_checked = False
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

    def token_scores(self, variant: Variant, items: list, label_of: dict, *, pack: bool = False) -> dict:
        """Per ``(ids, start)``: log p(ids[j] | ids[:j]) for j >= start (float64 numpy).

        With ``pack`` (completions: choice_accuracy's, completion_lift's), items that
        share their prompt ``ids[:start]`` with another item of the call are packed
        (unless ``packing_off``): their numbers then depend on which items share the
        call with them, in the last bits. Other items are scored one row each, as ever
        (text windows too: the first windows of texts share their first token).
        """
        if not pack or self.packing_off is not None:
            return self._scores_unpacked(variant, items, label_of)
        context = self.planner.context_length
        groups, singles = shared_prompt_groups(items, min(PACKED_WIDTH, context or PACKED_WIDTH))
        out: dict = {}
        if groups and not self._pack_checked:
            out.update(self._check_packing(variant, groups[0], label_of))
            groups = groups[1:]
            if self.packing_off is not None:  # the rest unpacked, shortest first as they came
                singles = sorted([it for _, members in groups for it in members] + singles, key=lambda it: len(it[0]))
                groups = []
        if groups:
            out.update(self._scores_packed(variant, groups, label_of))
        if singles:
            out.update(self._scores_unpacked(variant, singles, label_of))
        return out

    def _scores_unpacked(self, variant: Variant, items: list, label_of: dict) -> dict:
        """Token scores, one right-padded (CPU) or left-padded (elsewhere) row per item."""
        out = {}
        batches = self.planner.batches(items, length=lambda it: len(it[0]), keep=lambda it: len(it[0]) - it[1] + 1)
        for batch in self.tracked(batches, f"{variant}: token log-probabilities"):
            keep = max(len(ids) - start for ids, start in batch) + 1
            logits = self.forward(variant, [ids for ids, _ in batch], keep=keep)
            for row, (ids, start) in enumerate(batch):
                # Position p predicts token p + 1: the logits before each scored token.
                n = len(ids) - start
                out[(ids, start)] = self._logprobs(
                    variant, logits[row, keep - n - 1 : keep - 1], (ids, start), label_of
                )
        return out

    def _scores_packed(self, variant: Variant, groups: list, label_of: dict) -> dict:
        """Token scores of ``shared_prompt_groups``' groups, one packed row per group."""
        out = {}
        # Packed rows are right-padded to a canonical width on every device: budget that width.
        width = lambda group: self.planner.canonical_width(packed_length(group))  # noqa: E731
        batches = self.planner.batches(sorted(groups, key=packed_length), length=width, keep=packed_keep)
        for batch in self.tracked(batches, f"{variant}: token log-probabilities, shared prompts packed"):
            logits, picks = self.forward_packed(variant, batch)
            for (_, members), where in zip(batch, picks):
                for item, rows in zip(members, where):
                    index = self._torch.from_numpy(rows).to(logits.device)
                    out[item] = self._logprobs(variant, logits.index_select(0, index), item, label_of)
        return out

    def _logprobs(self, variant: Variant, logits, item: tuple, label_of: dict) -> np.ndarray:
        """log p of ``item``'s scored tokens from the logits before each ([tokens, vocabulary])."""
        torch = self._torch
        ids, start = item
        with torch.inference_mode():
            rows = logits.to(self.accumulate)
            if not torch.isfinite(rows).all():
                raise BackendError(f"the {variant} model returned NaN or infinite logits for {short(label_of[item])}")
            targets = torch.tensor(ids[start:], device=rows.device).unsqueeze(-1)
            lp = rows.log_softmax(-1).gather(-1, targets).squeeze(-1)
            return lp.cpu().numpy().astype(np.float64)

    def _check_packing(self, variant: Variant, group: tuple, label_of: dict) -> dict:
        """Score ``group`` packed and unpacked; on disagreement turn packing off, warn, and
        answer the unpacked scores. Run on the session's first packed group."""
        packed = self._scores_packed(variant, [group], label_of)
        plain = self._scores_unpacked(variant, list(group[1]), label_of)
        self._pack_checked = True  # only once both were computed (either may raise on NaN logits)
        worst = max(float(np.max(np.abs(packed[it] - plain[it]))) for it in group[1])
        assert self._active is not None  # token_scores runs inside the variant's context
        dtype = str(self._active[1].get_input_embeddings().weight.dtype).replace("torch.", "")
        tolerance = PACKING_TOLERANCE.get(dtype, max(PACKING_TOLERANCE.values()))
        if worst <= tolerance:
            return packed
        self.packing_off = (
            f"packed scores differed from unpacked ones by {worst:.3g} nats on a token of the first shared prompt "
            f"(over {tolerance:g} in {dtype})"
        )
        warnings.warn(f"pytest-sway: {self.packing_off}; scoring every completion in a row of its own", stacklevel=2)
        return plain

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
        self.forwarded_tokens[str(variant)] += ids.numel()
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

    def forward_packed(self, variant: Variant, batch: list):
        """One forward pass over packed rows: the gathered logits ([positions, vocabulary]) and
        ``BatchPlanner.packed``'s indices into them per group and item."""
        torch = self._torch
        self.forwarded[("score", str(variant))] += sum(len(members) for _, members in batch)
        self.forward_calls[str(variant)] += 1
        with torch.inference_mode(), self.variant(variant) as model:
            dtype = model.get_input_embeddings().weight.dtype
            ids, mask, positions, gather, picks = self.planner.packed(batch, dtype)
            self.forwarded_tokens[str(variant)] += ids.numel()
            self._gather.index = gather
            try:
                out = model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=0
                )
            finally:
                self._gather.index = None
        return out.logits[0], picks

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
