"""Divergences bounded from top-k log-probabilities, for engines that return only the top k.

An engine that returns each side's ``k`` most likely tokens (vLLM with a
``max_logprobs`` cap) does not determine a divergence over the full
vocabulary: the mass outside the returned tokens is known per side, its
spread is not. What it does determine is an interval per prompt that
contains the exact value. Missing mass is never spread over unseen tokens
(that guess inflates Jensen-Shannon by one to two orders of magnitude on a
real vocabulary).

The intervals hold for the distributions the returned log-probabilities come
from, taken as summing to 1 to float64 rounding; an engine that normalises in
float32 (sums off by ~1e-7) can leave the exact value outside by about that
much times a log-ratio.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import BackendError
from .divergence import DIVERGENCES, SUPPORT, all_divergences

#: How far a returned log-probability may sit above 0, or a side's returned mass above 1, before it is an error.
ROUNDING = 1e-6
#: How far a mass computed as ``1 - sum(returned)``, or an ``exp`` that underflowed, may sit below the true one
#: (float64 sums of <= 1e5 terms). Only the KL lower bounds use it: their cell terms ``x log(x / y)`` blow up as
#: ``y`` nears 0, so there every denominator-side mass is raised by it (which can only lower the bound). Without
#: it the property tests find KL lows of ``inf`` where the exact value is finite (a missing mass of 1e-34, say).
SLACK = 1e-12
_LN2 = math.log(2)


class _Side(NamedTuple):
    """One side's returned tokens, sorted by id, and what they say about the rest."""

    ids: Any  # int64, sorted, unique
    logp: Any  # float64, aligned with ids
    prob: Any  # exp(logp)
    missing: float  # mass outside ids, clipped at 0; exactly 0 when ids cover the vocabulary
    kth: float  # smallest returned probability: every unreturned token's probability is <= this
    covers: bool  # ids are the whole vocabulary


def _side(ids: Any, logp: Any, vocab_size: int, name: str) -> _Side:
    ids = np.asarray(ids)
    logp = np.asarray(logp, dtype=np.float64)
    if ids.ndim != 1 or logp.ndim != 1:
        raise ValueError(
            f"{name}: token ids and log-probabilities must be 1-D, got shapes {ids.shape} and {logp.shape}"
        )
    if len(ids) != len(logp):
        raise ValueError(f"{name}: {len(ids)} token ids but {len(logp)} log-probabilities")
    if ids.size == 0:
        ids = ids.astype(np.int64)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name}: token ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)][0]
        raise ValueError(f"{name}: token id {bad} is outside [0, {vocab_size})")
    order = np.argsort(ids, kind="stable")
    ids, logp = ids[order], logp[order]
    if ids.size > 1 and np.any(ids[1:] == ids[:-1]):
        raise ValueError(f"{name}: token id {ids[1:][ids[1:] == ids[:-1]][0]} is returned more than once")
    if np.any(np.isnan(logp)):
        raise ValueError(f"{name}: log-probabilities contain NaN")
    if logp.size and logp.max() > ROUNDING:
        raise ValueError(f"{name}: log-probability {logp.max():.3g} > 0 (a probability above 1)")
    prob = np.exp(logp)
    mass = float(prob.sum())
    if mass > 1.0 + ROUNDING:
        raise ValueError(f"{name}: returned probabilities sum to {mass:.9g} > 1")
    covers = len(ids) == vocab_size
    missing = 0.0 if covers else max(0.0, 1.0 - mass)
    kth = float(prob.min()) if prob.size else 1.0
    return _Side(ids, logp, prob, missing, kth, covers)


def _cells(kind: str, f: Any, s: Any) -> float:
    """``kind`` over a few cells with masses ``f`` (fine-tune side) and ``s`` (base side); zeros handled."""
    f = np.asarray(f, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "tv":
            return float(0.5 * np.abs(f - s).sum())
        if kind == "js":
            log_m = np.log(0.5 * (f + s))
            left = np.where(f > 0, f * (np.log(f) - log_m), 0.0)
            right = np.where(s > 0, s * (np.log(s) - log_m), 0.0)
            return float(0.5 * (left + right).sum())
        num, den = (f, s) if kind == "kl" else (s, f)
        return float(np.where(num > 0, num * (np.log(num) - np.log(den)), 0.0).sum())


def _split_min(kind: str, known: tuple[float, float], total: float, lo: float, hi: float, unknown_is_ft: bool) -> float:
    """Least ``kind`` over two cells whose masses are ``known`` on one side and ``(v, total - v)`` on the other,
    over ``v`` in ``[lo, hi]``.

    Proof: the two-cell divergence is convex in ``v`` (a sum of perspectives of a convex ``f``), and by data
    processing its unconstrained minimum is the one-cell value, reached where the ratios agree,
    ``v* = total * known[0] / sum(known)``; so the minimum over the interval is at ``v*`` clipped into it.
    """
    lo = min(lo, hi)
    k_sum = known[0] + known[1]
    v = total * known[0] / k_sum if k_sum > 0 else lo
    v = min(max(v, lo), hi)
    other = (v, max(total - v, 0.0))
    return _cells(kind, other, known) if unknown_is_ft else _cells(kind, known, other)


class DivergenceBounds(NamedTuple):
    """Per item, an interval that contains the exact divergence: ``low <= exact <= high``
    (``high`` may be ``inf``: KL has no upper bound from top-k alone)."""

    #: Lower ends, one per item (float64 numpy array).
    low: Any
    #: Upper ends, one per item (float64 numpy array; ``inf`` where unbounded).
    high: Any
    #: Log-probabilities per side the bounds came from.
    k: int


def _known(kind: str, lp: Any, lq: Any) -> float:
    """``kind``'s terms summed over the tokens both sides returned, by the expressions of ``all_divergences``
    (unclipped: a partial KL sum can be negative)."""
    p, q = np.exp(lp), np.exp(lq)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "kl":
            return float(np.where(p > 0, p * (lp - lq), 0.0).sum())
        if kind == "reverse_kl":
            return float(np.where(q > 0, q * (lq - lp), 0.0).sum())
        if kind == "tv":
            return float(0.5 * np.abs(p - q).sum())
        log_m = np.log(0.5 * (p + q))
        left = np.where(p > 0, p * (np.log(p) - log_m), 0.0)
        right = np.where(q > 0, q * (np.log(q) - log_m), 0.0)
        return float(0.5 * (left + right).sum())


def _pair(ft: _Side, base: _Side, vocab_size: int, kinds: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Bounds for one prompt. Notation: p = fine-tune, q = base, A / B their returned sets, C = A & B,
    X = A - B, Y = B - A, U = the tokens neither returned; ``m_p``, ``m_q`` the missing masses,
    ``c_p = min(p's k-th returned probability, m_p)`` caps every p outside A (likewise ``c_q``)."""
    if ft.covers and base.covers:  # both rows are known in full: the exact value, by the exact path
        full_p, full_q = np.empty(vocab_size), np.empty(vocab_size)
        full_p[ft.ids], full_q[base.ids] = ft.logp, base.logp
        with np.errstate(invalid="ignore", divide="ignore"):  # a token at -inf on both sides: 0 * nan, masked
            exact = all_divergences(full_q, full_p, np, kinds=tuple(kinds))
        return {kind: (float(exact[kind]), float(exact[kind])) for kind in kinds}
    _, in_p, in_q = np.intersect1d(ft.ids, base.ids, assume_unique=True, return_indices=True)
    only_p = np.ones(len(ft.ids), dtype=bool)
    only_p[in_p] = False
    only_q = np.ones(len(base.ids), dtype=bool)
    only_q[in_q] = False
    p_x, q_y = ft.prob[only_p], base.prob[only_q]  # known masses on X (of p) and on Y (of q)
    n_x, n_y = len(p_x), len(q_y)
    n_u = vocab_size - len(ft.ids) - n_y
    a, b = float(p_x.sum()), float(q_y.sum())
    rest_p, rest_q = a + ft.missing, b + base.missing  # P_rest = 1 - sum_C p, Q_rest = 1 - sum_C q
    out = {}
    for kind in kinds:
        known = _known(kind, ft.logp[in_p], base.logp[in_q])
        # KL's cell terms x log(x / y) blow up as a denominator mass y nears 0, and a mass inferred as 1 - sum
        # (or an exp that underflowed) can sit a hair below the truth: raise every denominator-side mass by SLACK.
        # Each term only falls as its denominator rises, so the lower bound stays valid.
        ps = SLACK if kind == "reverse_kl" else 0.0
        qs = SLACK if kind == "kl" else 0.0
        cap_p = min(max(ft.kth, ps), ft.missing + ps)
        cap_q = min(max(base.kth, qs), base.missing + qs)
        # Cell X versus everything else outside C: q(X) = t lies in [m_q - |U| c_q, min(m_q, |X| c_q)]
        # (X and U make up the tokens outside B; each holds at most c_q).
        t_lo = max(0.0, base.missing - qs - n_u * cap_q)
        t_hi = min(base.missing + qs, n_x * cap_q)
        low_x = _split_min(kind, (a + ps, ft.missing + ps), rest_q + 2 * qs, t_lo, t_hi, unknown_is_ft=False)
        # Cell Y versus everything else outside C, the same with the sides' roles swapped.
        u_lo = max(0.0, ft.missing - ps - n_u * cap_p)
        u_hi = min(ft.missing + ps, n_y * cap_p)
        low_y = _split_min(kind, (b + qs, base.missing + qs), rest_p + 2 * ps, u_lo, u_hi, unknown_is_ft=True)
        low_rest = max(low_x, low_y)
        c_p, c_q = min(ft.kth, ft.missing), min(base.kth, base.missing)
        if kind == "js":
            # JS terms are >= 0, so dropping all but X and Y keeps a lower bound; a term js(p_j, q_j) is convex in
            # q_j with its minimum at q_j = p_j, so over q_j <= c_q it is least at q_j = min(p_j, c_q).
            per_token = _cells("js", p_x, np.minimum(p_x, c_q)) + _cells("js", np.minimum(q_y, c_p), q_y)
            low_rest = max(low_rest, per_token)
        elif kind == "tv":
            # Outside C, with d = p - q: sum|d| = 2 sum d+ - (P_rest - Q_rest) = 2 sum d- + (P_rest - Q_rest), and
            # sum d+ >= sum_X (p_j - c_q)+ since q_j <= c_q on X (likewise sum d- >= sum_Y (q_j - c_p)+).
            gap = rest_p - rest_q
            over_p = float(np.clip(p_x - c_q, 0.0, None).sum())
            over_q = float(np.clip(q_y - c_p, 0.0, None).sum())
            low_rest = max(low_rest, 0.5 * max(abs(gap), 2 * over_p - gap, 2 * over_q + gap))
        if kind == "tv":  # each term 1/2 |p_j - q_j| <= 1/2 (p_j + q_j)
            high = known + 0.5 * (rest_p + rest_q)
        elif kind == "js":  # each term <= 1/2 ln 2 (p_j + q_j), equality when one of them is 0
            high = known + 0.5 * _LN2 * (rest_p + rest_q)
        else:  # an unseen token's denominator probability can be arbitrarily small
            high = math.inf
        floor, ceiling = SUPPORT[kind]
        high = min(max(high, floor), ceiling)
        low = min(max(known + low_rest, floor), high)
        out[kind] = (low, high)
    return out


def topk_bounds(
    ft_ids: Any, ft_logp: Any, base_ids: Any, base_logp: Any, *, vocab_size: int, kinds: Sequence[str] = DIVERGENCES
) -> dict[str, tuple[float, float]]:
    """One prompt: each side's returned token ids and log-probabilities -> ``{kind: (low, high)}``.

    Each side returns its top tokens with exact log-probabilities (log-softmax over the whole vocabulary).
    Lower bounds: data processing (merging cells cannot raise an f-divergence) over the cells {each token both
    sides returned} + {one or two cells for the rest}, where a rest cell whose mass is unknown on one side takes
    the least value its known caps allow; TV and JS add per-token bounds from those caps. Upper bounds: every
    TV term is <= (p + q)/2 and every JS term <= ln 2 (p + q)/2, applied to the mass outside the shared tokens;
    KL and reverse KL have none (``inf``). When both sides return the whole vocabulary, low == high == the
    exact value from ``divergence.all_divergences``.
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    for kind in kinds:
        if kind not in DIVERGENCES:
            raise ValueError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")
    ft = _side(ft_ids, ft_logp, vocab_size, "fine-tuned")
    base = _side(base_ids, base_logp, vocab_size, "base")
    return _pair(ft, base, vocab_size, kinds)


def bounds_of(rows: Iterable[Sequence[Any]], *, kind: str, vocab_size: int) -> DivergenceBounds:
    """Many prompts: rows of ``(ft_ids, ft_logp, base_ids, base_logp)`` -> ``DivergenceBounds`` for ``kind``;
    ``k`` is the fewest tokens any side of any row returned (0 for no rows)."""
    lows, highs, k = [], [], None
    for i, row in enumerate(rows):
        if len(row) != 4:
            raise ValueError(f"row {i}: expected (ft_ids, ft_logp, base_ids, base_logp), got {len(row)} items")
        ft_ids, ft_logp, base_ids, base_logp = row
        try:
            low, high = topk_bounds(ft_ids, ft_logp, base_ids, base_logp, vocab_size=vocab_size, kinds=(kind,))[kind]
        except ValueError as error:
            raise ValueError(f"row {i}: {error}") from None
        lows.append(low)
        highs.append(high)
        n = min(len(ft_ids), len(base_ids))
        k = n if k is None else min(k, n)
    return DivergenceBounds(np.asarray(lows, dtype=np.float64), np.asarray(highs, dtype=np.float64), k or 0)


def top_k(logp_full: Any, k: int) -> tuple[Any, Any]:
    """A full row's ``k`` most likely token ids and their log-probabilities (what an engine would return)."""
    logp_full = np.asarray(logp_full, dtype=np.float64)
    k = min(k, len(logp_full))
    ids = np.argpartition(-logp_full, k - 1)[:k] if k < len(logp_full) else np.arange(len(logp_full))
    return ids, logp_full[ids]


def width_cost(ft_logp_full: Any, base_logp_full: Any, k: int, kind: str) -> tuple[float, float, float]:
    """``(exact, low, high)`` for two full-vocabulary rows when only each side's top ``k`` is kept."""
    ft_logp_full = np.asarray(ft_logp_full, dtype=np.float64)
    base_logp_full = np.asarray(base_logp_full, dtype=np.float64)
    if ft_logp_full.shape != base_logp_full.shape or ft_logp_full.ndim != 1:
        raise ValueError(
            f"expected two 1-D rows of one length, got shapes {ft_logp_full.shape} and {base_logp_full.shape}"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        exact = float(all_divergences(base_logp_full, ft_logp_full, np, kinds=(kind,))[kind])
    low, high = topk_bounds(
        *top_k(ft_logp_full, k), *top_k(base_logp_full, k), vocab_size=len(ft_logp_full), kinds=(kind,)
    )[kind]
    return exact, low, high


def split_bounds(values) -> tuple[Any, DivergenceBounds | None]:
    """What a probe does with a backend's divergences: ``(per-item values, bounds)``.

    Exact values give ``(float64 array, None)``; a :class:`DivergenceBounds` gives its lower ends
    (as a float64 array) and itself, so a probe can pass the bounds on in its ``Measurement``."""
    if isinstance(values, DivergenceBounds):
        return np.asarray(values.low, dtype=np.float64), values
    return np.asarray(values, dtype=np.float64), None


def refuse_bounds(kind: str, values) -> Any:
    """``values`` as a float64 array, or ``BackendError`` when they are bounds: for probes that
    compare the divergences of several variants (a difference or a rank of intervals is not an
    interval a gate can judge on one end)."""
    if isinstance(values, DivergenceBounds):
        raise BackendError(
            f"{kind}: the backend returned divergences bounded from the top-{values.k} log-probabilities of each "
            f"side, not exact values; {kind} compares the divergences of several variants and needs exact ones. "
            "Exact divergences need the engine's full vocabulary: start the vLLM engine without a logprobs cap "
            "(--sway-vllm-args max_logprobs=-1), or use a backend that computes them (hf)"
        )
    return split_bounds(values)[0]
