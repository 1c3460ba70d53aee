"""Divergences computed on the model's device, from the full-vocabulary log-softmax.

Both sides' logits of a chunk of rows are turned into log-probabilities in
float64 (float32 on MPS, which has no float64) and compared with
``pytest_sway.backends.divergence``; only a few numbers per row leave the device:
every divergence, and with ``top_tokens`` the ids and probabilities of the
tokens whose probability moved most.
"""

from __future__ import annotations

import numpy as np

from ...errors import BackendError
from ..base import ResponseDivergence
from ..divergence import DIVERGENCES, all_divergences, divergence
from ..prompts import short

#: Most float64 elements of one array in a divergence computation (rows x vocabulary; a
#: chunk holds a few such arrays). On the CPU 2 MiB: small arrays stay in cache and are
#: reused by glibc's heap instead of growing it (benchmarks/bench_memory.py --suite
#: divergences, before the other memory fixes: the peak grew 150-230 MiB from 256 to 4,096
#: prompts with 64-row chunks, 20-40 MiB with 4-row ones).
ELEMENTS_CPU = 1 << 18
#: Elsewhere 64 MiB: at a 128k vocabulary the 64 rows benchmarks/bench_gpu.py measured, in
#: fewer kernel launches (CUDA's caching allocator reuses blocks of any size).
ELEMENTS_DEVICE = 1 << 23


def rows_per_chunk(device_type: str, vocab_size: int) -> int:
    """Rows (next-token) or positions (responses) per divergence computation on ``device_type``."""
    elements = ELEMENTS_CPU if device_type == "cpu" else ELEMENTS_DEVICE
    return max(2, elements // vocab_size)  # see log_softmaxes


def chunk_divergences(torch, base_logits, other_logits, dtype, top_tokens: int):
    """Every divergence per row (numpy, rows x DIVERGENCES) of two [rows, vocabulary]
    logit blocks, computed in ``dtype``, and with ``top_tokens`` the token candidates
    (``token_candidates``; no columns without)."""
    n = base_logits.shape[0]
    b, o = log_softmaxes(base_logits, other_logits, dtype)
    values = all_divergences(b, o, torch)
    table = torch.stack([values[kind] for kind in DIVERGENCES], dim=-1)[:n].cpu().numpy()
    if not top_tokens:
        return table, np.empty((n, 0), dtype=np.int64), np.empty((2, n, 0))
    ids, probs = token_candidates(torch, b, o, top_tokens)
    return table, ids[:n], probs[:, :n]


def log_softmaxes(base_logits, other_logits, dtype):
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


def token_candidates(torch, base_logp, other_logp, k: int):
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


def response_divergences(
    torch, base, other, batch: list, *, keep: int, kind: str, chunk: int, dtype, variant, label_of: dict
) -> list[ResponseDivergence]:
    """Per ``(ids, start)`` of ``batch``, the ``kind`` divergence and whether the two greedy
    picks agree at each response position, from both sides' teacher-forced logits
    (``[rows, keep, vocabulary]``, each row's last ``keep`` positions).

    The response positions of all rows are processed together, in chunks of
    ``chunk`` positions, so a small vocabulary does not pay per-row overhead and
    a long response does not build one huge float64 block."""
    values: list = []
    agree: list = []
    pending: list[tuple[int, int, int]] = []
    pending_n = 0

    def flush():
        # Position p predicts token p + 1: the logits before each response token.
        b = torch.cat([base[r, lo:hi] for r, lo, hi in pending]).to(dtype)
        o = torch.cat([other[r, lo:hi] for r, lo, hi in pending]).to(dtype)
        if not (torch.isfinite(b).all() and torch.isfinite(o).all()):
            bad = next(
                r
                for r, lo, hi in pending
                if not (torch.isfinite(base[r, lo:hi]).all() and torch.isfinite(other[r, lo:hi]).all())
            )
            raise BackendError(
                f"the base or {variant} model returned NaN or infinite logits for {short(label_of[batch[bad]])}"
            )
        base_logp, other_logp = log_softmaxes(b, o, dtype)
        values.append(divergence(base_logp, other_logp, kind, torch)[: b.shape[0]].cpu())
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
    out = []
    at = 0
    for ids, start in batch:
        n = len(ids) - start
        out.append(
            ResponseDivergence(flat_values[at : at + n].copy(), flat_agree[at : at + n].copy(), tuple(ids[start:]))
        )
        at += n
    return out
