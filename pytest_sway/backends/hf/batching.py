"""How items become forward passes: which items share a batch, and how a batch is padded.

Prompts are scored in batches sorted by length. On the CPU a batch is
right-padded to a canonical width that depends on each row's own length (its
length rounded up to a multiple of ``WIDTH_STEP``) and holds rows of one such
width only, and the output layer sees only the positions each row needs
(gathered row by row, in a multiple of ``ROW_QUANTUM`` rows): a prompt's
numbers are then bit-identical alone, in any batch, in any order. Elsewhere
batches are left-padded with ``position_ids`` from the attention mask (GPU
kernels round by batch shape anyway).

Completions scored after one shared prompt (the choices of a multiple-choice
question) are packed into one row: the prompt once, then every completion,
each completion seeing the prompt and itself only (a 4D attention mask, and
position ids that restart after the prompt for each completion). Packed rows are
right-padded and gathered on every device, and batched by the same budgets.
"""

from __future__ import annotations

import numpy as np

#: Most tokens (batch rows x padded length) in one forward pass.
TOKEN_BUDGET = 16384
#: Most bytes of logits (rows x kept positions x vocabulary x element size) one batch may hold:
#: 2^27 float32 logits, twice as many in bfloat16 (a GPU batch of 32 teacher-forced responses
#: of 32 tokens on a 128k vocabulary fits, as benchmarks/bench_gpu.py measured).
LOGIT_BYTES = 1 << 29
#: How CPU matrix products round a row depends on the number of rows M: measured on the
#: tiny test models' and SmolLM2's shapes (torch 2.13, MKL), every row of an M-row product
#: is the same as in any other when M is a multiple of 4, or 12 and more; with 1-3 rows
#: all differ, with 5-7 or 9-11 the last M mod 4 do (a narrower kernel for the remainder).
#: CPU passes are therefore shaped so that every product has a multiple of ROW_QUANTUM
#: rows: a generated batch has a multiple of 4 rows; a right-padded pass has a width that
#: is a multiple of 16, and the output layer gets its gathered positions in a multiple of 16
#: rows (tests/test_determinism.py holds the result to bit-identical values).
MIN_ROWS = 4
#: Rows the output layer's input is padded to a multiple of in a right-padded pass.
ROW_QUANTUM = 16
#: A CPU batch's padded width is its rows' length rounded up to a multiple of this (at least
#: this, at most the context). Right pads after a row's last token cannot reach its real
#: positions (causal attention), but the kernels' blocking depends on the width, and widths
#: that are not a multiple of the vector length round differently (measured: 5-6, 10 and
#: 16-64 gave three classes of results); one width per row makes that moot.
WIDTH_STEP = 16
#: Longest packed row (a prompt and the completions that share it): a packed batch's attention
#: mask holds rows x width x width numbers, so longer groups are split over several rows.
PACKED_WIDTH = 1024


def shared_prompt_groups(items: list, limit: int) -> tuple[list, list]:
    """``(groups, singles)``: the ``(ids, start)`` items whose prompt ``ids[:start]`` some other
    item shares, as ``(prompt, (item, ...))`` groups of at most ``limit`` tokens packed, and the
    rest, in their order. A group too long for one row is split; a part of one item is a single.
    """
    by_prompt: dict = {}
    for item in items:
        by_prompt.setdefault(item[0][: item[1]], []).append(item)
    groups, packed = [], set()
    for prompt, members in by_prompt.items():
        part: list = []
        length = len(prompt)
        for item in members + [None]:
            n = 0 if item is None else len(item[0]) - item[1]
            if item is None or (part and length + n > limit):
                if len(part) > 1:
                    groups.append((prompt, tuple(part)))
                    packed.update(part)
                part, length = [], len(prompt)
            if item is not None:
                part.append(item)
                length += n
    return groups, [item for item in items if item not in packed]


def packed_length(group) -> int:
    """Tokens in a packed row: the prompt once and every completion."""
    prompt, items = group
    return len(prompt) + sum(len(ids) - start for ids, start in items)


def packed_keep(group) -> int:
    """Logit positions a packed row needs: the prompt's last and each completion's all but last."""
    return 1 + sum(len(ids) - start - 1 for ids, start in group[1])


class BatchPlanner:
    """Batches and padded tensors for one model: its batch size, context, pad token and device.

    ``exact_shapes`` (the CPU) gives every item the same numbers alone or in any batch;
    ``row_bytes`` is the size of one position's logits, for the logit budget."""

    def __init__(self, torch, *, batch_size: int, context_length, pad_id: int, device, row_bytes: int):
        self._torch = torch
        self.batch_size = batch_size
        self.context_length = context_length
        self.pad_id = pad_id
        self.device = device
        self.row_bytes = row_bytes
        self.exact_shapes = device.type == "cpu"

    def batches(self, items: list, *, length=len, keep=lambda item: 1, exact: bool = False) -> list[list]:
        """Group length-sorted items into forward passes that respect the batch size,
        the token budget (rows x padded width) and the logit budget (rows x ``keep``
        positions x vocabulary).

        With ``exact_shapes`` a batch holds items of one canonical width only
        (``canonical_width``; with ``exact``, of one length, for left-padded
        generation): an item's logits are then bit-identical alone, in a full run, or
        on any xdist worker. Otherwise batches are left-padded to their longest item
        (GPU kernels round by batch shape anyway; benchmarks/bench_gpu.py measures
        what that costs in bf16).
        """
        if not self.exact_shapes:
            return self._split(items, width=length, keep=keep)
        shape = length if exact else (lambda item: self.canonical_width(length(item)))
        groups: dict = {}
        for item in items:
            groups.setdefault(shape(item), []).append(item)
        batches: list[list] = []
        for width, group in sorted(groups.items()):
            batches.extend(self._split(group, width=lambda item, w=width: w, keep=keep))
        return batches

    def _split(self, items: list, *, width, keep) -> list[list]:
        """Consecutive runs of ``items`` within the batch size and the token and logit budgets."""
        batches: list[list] = []
        current: list = []
        wide = kept = 0
        for item in items:
            w, k = max(wide, width(item)), max(kept, keep(item))
            rows = len(current) + 1
            if current and (
                rows > self.batch_size or rows * w > TOKEN_BUDGET or rows * k * self.row_bytes > LOGIT_BYTES
            ):
                batches.append(current)
                current, w, k = [], width(item), keep(item)
            current.append(item)
            wide, kept = w, k
        if current:
            batches.append(current)
        return batches

    def canonical_width(self, n: int) -> int:
        """The padded width of a CPU batch holding sequences of ``n`` tokens."""
        width = max(WIDTH_STEP, -(-n // WIDTH_STEP) * WIDTH_STEP)
        return width if self.context_length is None else max(n, min(width, self.context_length))

    def left_padded(self, batch: list):
        """Left-padded ids, attention mask and position ids for a batch of token sequences.

        With ``exact_shapes`` a batch is topped up to a multiple of ``MIN_ROWS`` rows
        with copies of its first sequence; callers read the rows of ``batch`` only.
        """
        if self.exact_shapes and len(batch) % MIN_ROWS:
            batch = list(batch) + [batch[0]] * (MIN_ROWS - len(batch) % MIN_ROWS)
        width = max(len(s) for s in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, width - len(seq) :] = seq
            mask[row, width - len(seq) :] = 1
        # Pads sit left; each row's positions count from its first real token.
        positions = np.maximum(mask.cumsum(-1) - 1, 0)
        return self._tensors(ids, mask, positions)

    def right_padded(self, batch: list, keep: int):
        """Ids right-padded to the batch's canonical width, an all-ones attention mask,
        position ids, and which hidden states the output layer gets: per row its last
        ``keep`` real positions (right-aligned as in a left-padded batch, the first
        repeated for a shorter row), as indices into the [rows x width] positions,
        topped up with copies of the first to a multiple of ``ROW_QUANTUM``.

        Pads come after every real token, so causal attention keeps them out of the
        real positions; the mask is all ones so that every batch takes the same
        (causal) attention path whether or not it has pads.
        """
        width = self.canonical_width(max(len(s) for s in batch))
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        lengths = np.empty((len(batch), 1), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            lengths[row] = len(seq)
        mask = np.ones_like(ids)
        positions = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy()
        wanted = np.maximum(lengths - keep + np.arange(keep, dtype=np.int64), 0)
        gather = (wanted + width * np.arange(len(batch), dtype=np.int64)[:, None]).ravel()
        gather = np.concatenate([gather, np.full(-len(gather) % ROW_QUANTUM, gather[0])])
        return self._tensors(ids, mask, positions, gather)

    def packed(self, batch: list, dtype):
        """Ids, a 4D additive attention mask in ``dtype``, position ids and the gathered hidden
        positions for a batch of packed rows (``shared_prompt_groups``' groups), and per group
        and item the indices, into the gathered positions, of the logits that score the item.

        A row is the prompt (positions 0..s-1), then each completion in turn, its positions
        counting on from s as if it followed the prompt alone. The mask (0 allowed, the
        dtype's minimum not) is causal, except that a completion's tokens do not see the
        completions before it. Right pads see everything before them; nothing reads them.
        The output layer gets the prompt's last position (it predicts every completion's
        first token) and every completion position but the last, in a multiple of
        ``ROW_QUANTUM`` rows as in ``right_padded``.
        """
        width = self.canonical_width(max(map(packed_length, batch)))
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        positions = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy()
        allowed = np.broadcast_to(np.tri(width, dtype=bool), (len(batch), width, width)).copy()
        gather: list[int] = []
        picks: list[list[np.ndarray]] = []
        for row, (prompt, items) in enumerate(batch):
            s = len(prompt)
            ids[row, :s] = prompt
            shared = len(gather)  # the prompt's last position, read by every item of the row
            gather.append(row * width + s - 1)
            at, group_picks = s, []
            for seq, start in items:
                n = len(seq) - start
                ids[row, at : at + n] = seq[start:]
                positions[row, at : at + n] = np.arange(s, s + n)
                allowed[row, at : at + n, s:at] = False  # not the completions before this one
                first = len(gather)
                gather.extend(row * width + at + np.arange(n - 1))
                group_picks.append(np.concatenate([[shared], np.arange(first, first + n - 1)]).astype(np.int64))
                at += n
            positions[row, at:] = np.arange(at, width)
            picks.append(group_picks)
        index = np.array(gather, dtype=np.int64)
        index = np.concatenate([index, np.full(-len(index) % ROW_QUANTUM, index[0])])
        ids, positions, index, allowed = self._tensors(ids, positions, index, allowed)
        torch = self._torch
        mask = torch.zeros(allowed.shape, dtype=dtype, device=self.device)
        mask = mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)
        return ids, mask, positions, index, picks

    def _tensors(self, *arrays):
        return tuple(self._torch.from_numpy(a).to(self.device) for a in arrays)


def element_size(torch, dtype) -> int:
    """Bytes per logit in ``dtype`` (4 where the dtype is not a torch dtype)."""
    return torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 4
