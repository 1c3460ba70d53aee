"""Intervals for per-item values whose shape defeats the bootstrap, and the rule that picks one.

Pure numpy/scipy: nothing here knows about pytest, probes or models.

The studentized bootstrap is honest on continuous values, but per-item values are often not
continuous: 0/1 outcomes, rank correlations that are mostly exactly 1, scores piled at the top of
their range, or every value equal. Its resamples then repeat a handful of configurations, many
with no spread of their own, and the interval is far too narrow (zero width when every value is
equal; ``benchmarks/coverage.py --shapes`` measures it). The rule (:func:`choose_method`) looks at
the values and their declared support only, and picks:

- ``"all-equal"`` (:func:`all_equal_bounds`): every value equal, an exact distribution-free bound;
- ``"clopper-pearson"`` (:func:`clopper_pearson`): every value at one of the support's two ends;
- ``"betting"`` (:func:`betting_bounds01`): values on a finite support with one level holding so
  many of them that bootstrap resamples often have no spread; Waudby-Smith and Ramdas'
  hedged-capital interval, valid at every n for any distribution on the support;
- ``"bootstrap"``: everything else (continuous values always), the bootstrap the caller chose.

For items in groups (paraphrases of one question) the bounded methods work on group means,
each weighted by its group's size (:func:`betting_bounds01` ``weights=``), and
:func:`cr2_t_bounds` widens the cluster bootstrap where one group holds most items.
"""

from __future__ import annotations

import math

import numpy as np

from .methods import BETTING_ORDERS

ALL_EQUAL = "all-equal"
CLOPPER_PEARSON = "clopper-pearson"
BETTING = "betting"
BOOTSTRAP = "bootstrap"
#: The methods that are not a bootstrap, in the rule's order.
BOUNDED_METHODS = (ALL_EQUAL, CLOPPER_PEARSON, BETTING)

#: The rule sends bounded values to the betting interval when a bootstrap resample would too often
#: have every value on the most common level: probability ``(mode / n) ** n`` of at least
#: ``SATURATION_SHARE * alpha / 2``. Such resamples have no spread of their own, and at that share
#: they make up the bootstrap-t's tail. At 95% it allows about 4 values off the mode from n = 32,
#: 2 of 8.
SATURATION_SHARE = 0.25
#: ... and when at least half the values sit on one level with values on both sides of it (paired
#: differences with many exact ties, a middle score most items get) and fewer than this many values
#: differ from it. A pile at the end of the observed values is left to the first criterion.
INTERIOR_MIN_OTHERS = 20

#: Each bet is at most this fraction of the largest bet that cannot go bankrupt. Any value below 1
#: keeps the capital a nonnegative martingale; Waudby-Smith and Ramdas suggest 1/2 or 3/4, and 0.9
#: gave narrower intervals on saturated values at 8-32 items.
BETTING_TRUNCATION = 0.9
#: Bisection steps on [0, 1] for each bound of the betting interval: a resolution of 2**-48.
_BISECTION_STEPS = 48


def finite_support(support) -> bool:
    return support is not None and all(math.isfinite(float(s)) for s in support)


# -- all values equal -----------------------------------------------------------------------------


def all_equal_bounds(value: float, n: int, support, *, confidence: float) -> tuple[float, float]:
    """The exact distribution-free interval for the mean when all ``n`` values equal ``value``.

    For any distribution on ``[a, b]`` with mean ``mu < value``, Markov's inequality applied to
    ``X - a`` gives ``P(X >= value) <= (mu - a) / (value - a)``, so n values all at least ``value``
    have probability at most ``((mu - a) / (value - a)) ** n``. Asking that it be at least
    ``alpha / 2``, on both sides, gives, with ``q = (alpha / 2) ** (1 / n)``::

        low = a + (value - a) * q        high = b - (b - value) * q

    The two-point distributions on ``{a, value}`` and ``{value, b}`` attain the bounds, so no valid
    interval is narrower. At ``value = b`` the lower bound is Clopper-Pearson's for n successes in
    n trials, rescaled to ``[a, b]``: twelve 1s on ``[-1, 1]`` give ``-1 + 2 * 0.025 ** (1 / 12)``,
    0.4707 at 95%. An infinite side of the support stays infinite: without a bound, n equal values
    say nothing about how far the mean may lie (a rare, large value is never seen).
    """
    a, b = (-math.inf, math.inf) if support is None else (float(support[0]), float(support[1]))
    q = (0.5 * (1.0 - confidence)) ** (1.0 / n)
    low = a + (value - a) * q if math.isfinite(a) else -math.inf
    high = b - (b - value) * q if math.isfinite(b) else math.inf
    return low, high


# -- values at the two ends of the support ----------------------------------------------------------


def clopper_pearson(successes, n, *, confidence: float) -> np.ndarray:
    """Clopper-Pearson interval for a binomial rate, for each count in ``successes``: shape (..., 2).

    Its coverage is at least its level at every rate and every n (it inverts two one-sided
    binomial tests). At ``successes = n`` its lower bound is ``(alpha / 2) ** (1 / n)``, the
    bound of :func:`all_equal_bounds`. Counts need not be whole (n-needed asks at a held rate).
    """
    from scipy.special import betaincinv

    k = np.asarray(successes, dtype=np.float64)
    total = np.broadcast_to(np.asarray(n, dtype=np.float64), k.shape)
    alpha = 1.0 - confidence
    with np.errstate(all="ignore"):  # betaincinv is evaluated at k = 0 and k = n too, then discarded
        low = np.where(k > 0, betaincinv(k, total - k + 1, alpha / 2), 0.0)
        high = np.where(k < total, betaincinv(k + 1, total - k, 1 - alpha / 2), 1.0)
    return np.stack([low, high], axis=-1)


# -- betting (Waudby-Smith and Ramdas, JRSS-B 2024) ---------------------------------------------------


def _orders(n: int, count: int, seed: int) -> np.ndarray:
    """``count`` fixed orders of n items: the given order, then seeded permutations."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, n]))
    return np.stack([np.arange(n)] + [rng.permutation(n) for _ in range(count - 1)])


def _plug_in_bets(x: np.ndarray, alpha: float) -> np.ndarray:
    """Waudby-Smith and Ramdas' predictable plug-in bets for a fixed n, per position (last axis).

    ``lambda_t = sqrt(2 log(2 / alpha) / (n sigma2_{t-1}))``, with sigma2 the running variance
    (one fake observation of variance 1/4, around a running mean with one fake observation at 1/2).
    A bet uses only the values before it, so the capital is a martingale in every order.
    """
    n = x.shape[-1]
    t = np.arange(1, n + 1)
    mu = (0.5 + np.cumsum(x, axis=-1)) / (t + 1)
    sigma2 = (0.25 + np.cumsum((x - mu) ** 2, axis=-1)) / (t + 1)
    before = np.concatenate([np.full(x.shape[:-1] + (1,), 0.25), sigma2[..., :-1]], axis=-1)
    return np.sqrt(2.0 * math.log(2.0 / alpha) / (n * before))


def _log_capital(x, w, bets, m: np.ndarray, sign: int, truncation: float) -> np.ndarray:
    """Log of the capital averaged over the orders, for one candidate mean per row.

    ``x``, ``w`` and ``bets`` are (k, orders, n), values in [0, 1] and weights in (0, 1]; ``m`` is
    (k,). ``sign = +1`` bets that the mean is above m (a bet of at most ``truncation / m``), ``-1``
    that it is below (at most ``truncation / (1 - m)``). Each factor is at least ``1 - truncation``.
    """
    mm = m[:, None, None]
    with np.errstate(divide="ignore"):
        largest = truncation / (mm if sign > 0 else 1.0 - mm)
    logs = np.log1p(sign * np.minimum(bets, largest) * w * (x - mm)).sum(axis=-1)  # (k, orders)
    top = logs.max(axis=1)
    return top + np.log(np.exp(logs - top[:, None]).mean(axis=1))


def betting_bounds01(
    x: np.ndarray,
    *,
    confidence: float,
    seed: int = 0,
    weights: np.ndarray | None = None,
    orders: int = BETTING_ORDERS,
    truncation: float = BETTING_TRUNCATION,
) -> np.ndarray:
    """Hedged-capital interval for the mean of each row of ``x`` (k x n, values in [0, 1]): (k, 2).

    For a candidate mean m, one gambler bets on the values (in a fixed order) that the mean is
    above m, another that it is below. Under the true mean each one's capital is a nonnegative
    martingale starting at 1, and so is its average over fixed orders; by Markov's inequality it
    reaches ``2 / alpha`` with probability at most ``alpha / 2``. The interval is every m where
    neither gambler's average capital reaches ``2 / alpha``. The first capital falls and the
    second rises with m, so each bound is one root, found by bisection and rounded outwards.
    Valid at every n for every distribution on [0, 1]; never zero width; deterministic for a seed.

    ``weights`` (n values in (0, 1], shared by the rows) scale each bet: for groups of items,
    ``x`` holds group means and ``weights`` the group sizes over the largest. The payoff
    ``w_g (x_g - m)`` has mean zero when m is the mean over all items (``sum m_g x_g / sum m_g``
    in expectation), so the bound is for the item mean, whatever the sizes.
    """
    x = np.asarray(x, dtype=np.float64)
    k, n = x.shape
    alpha = 1.0 - confidence
    order = _orders(n, orders, seed)
    xs = x[:, order]  # (k, orders, n)
    ws = np.ones(1) if weights is None else np.asarray(weights, dtype=np.float64)[order][None]
    bets = _plug_in_bets(xs, alpha)
    threshold = math.log(2.0 / alpha)
    out = np.empty((k, 2))
    for side, sign in ((0, +1), (1, -1)):
        # Lower bound: the largest m the first gambler rejects; upper: the smallest the second rejects.
        lo, hi = np.zeros(k), np.ones(k)
        rejects_end = _log_capital(xs, ws, bets, lo if sign > 0 else hi, sign, truncation) >= threshold
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            rejected = _log_capital(xs, ws, bets, mid, sign, truncation) >= threshold
            if sign > 0:
                lo, hi = np.where(rejected, mid, lo), np.where(rejected, hi, mid)
            else:
                lo, hi = np.where(rejected, lo, mid), np.where(rejected, mid, hi)
        out[:, side] = np.where(rejects_end, lo, 0.0) if sign > 0 else np.where(rejects_end, hi, 1.0)
    return out


# -- the rule ---------------------------------------------------------------------------------------


def _tolerance(data: np.ndarray, support) -> float:
    """Values closer than this are one level (a rank correlation of 0.9999999999999998 is 1)."""
    if finite_support(support):
        scale = max(abs(support[0]), abs(support[1]), support[1] - support[0])
    else:
        scale = float(np.max(np.abs(data), initial=0.0))
    return 1e-12 * max(scale, 1e-300)


def level_counts(values, support=None) -> tuple[np.ndarray, np.ndarray]:
    """The distinct levels of ``values`` (within a relative 1e-12), ascending, and how many values sit on each."""
    data = np.sort(np.asarray(values, dtype=np.float64))
    starts = np.flatnonzero(np.concatenate(([True], np.diff(data) > _tolerance(data, support))))
    return data[starts], np.diff(np.append(starts, data.size))


def at_ends(values, support) -> np.ndarray | None:
    """Whether each value is at the support's upper end, if every value is at one end; else None."""
    if not finite_support(support):
        return None
    data = np.asarray(values, dtype=np.float64)
    tol = _tolerance(data, support)
    low, high = np.abs(data - support[0]) <= tol, np.abs(data - support[1]) <= tol
    return high if bool(np.all(low | high)) else None


def choose_method(values, support=None, *, confidence: float) -> str:
    """Which interval the rule uses for the mean of ``values``: a function of the values, the
    declared support and the level only. With ``mode`` the number of values on the most common
    level and ``n`` the number of values:

    - every value equal: ``"all-equal"`` (:func:`all_equal_bounds`);
    - no finite support: ``"bootstrap"`` (no other method applies);
    - every value at one of the support's two ends: ``"clopper-pearson"``;
    - ``mode >= 2`` and either ``(mode / n) ** n >= SATURATION_SHARE * alpha / 2``, or
      ``mode >= n / 2`` with values on both sides of that level and fewer than
      ``INTERIOR_MIN_OTHERS`` values off it: ``"betting"``;
    - otherwise ``"bootstrap"`` (continuous values, with no repeated value, always).
    """
    data = np.asarray(values, dtype=np.float64)
    bounded = finite_support(support)
    levels, counts = level_counts(data, support if bounded else None)
    if levels.size == 1:
        return ALL_EQUAL
    if not bounded:
        return BOOTSTRAP
    if at_ends(data, support) is not None:
        return CLOPPER_PEARSON
    return BETTING if _piled(levels, counts, confidence) else BOOTSTRAP


def piled(values, support, *, confidence: float) -> bool:
    """Whether the betting criteria of :func:`choose_method` hold for ``values`` on ``support``:
    so many values on one level that bootstrap resamples too often have no spread."""
    return _piled(*level_counts(values, support), confidence)


def _piled(levels: np.ndarray, counts: np.ndarray, confidence: float) -> bool:
    top = int(counts.argmax())
    mode, n = int(counts[top]), int(counts.sum())
    if mode < 2:
        return False
    if (mode / n) ** n >= SATURATION_SHARE * (1.0 - confidence) / 2:
        return True
    return 2 * mode >= n and 0 < top < levels.size - 1 and n - mode < INTERIOR_MIN_OTHERS


def few_levels(values) -> int | None:
    """The number of distinct values when it is small for their count (at most 3, or at most
    a quarter of them with some value repeated): values a bootstrap treats as continuous, which
    they are not. None otherwise."""
    levels, counts = level_counts(values)
    if levels.size <= 3 or (counts.max() > 1 and 4 * levels.size <= len(values)):
        return int(levels.size)
    return None


# -- items in groups of unequal size ---------------------------------------------------------------------

#: A grouped interval is refused below this many effective groups (Kish): with one group holding
#: 90% of the items the data cannot show how much groups vary, and no interval measured covers.
MIN_EFFECTIVE_GROUPS = 1.5


def effective_groups(sizes) -> float:
    """Kish's effective number of groups, ``(sum n_g) ** 2 / sum n_g ** 2``.

    The mean over all items weights group g by ``n_g / N``; this is the number of equal groups
    with the same concentration of weight: G for G equal groups, 1.23 for 36 items in one group
    and 4 in groups of their own.
    """
    s = np.asarray(sizes, dtype=np.float64)
    return float(s.sum() ** 2 / (s * s).sum())


def bm_degrees_of_freedom(sizes) -> float:
    """Bell and McCaffrey's degrees of freedom for the CR2 variance of a mean over groups of ``sizes``.

    Under the working model of independent items with equal variance, the CR2 variance is a
    weighted sum of chi-squares whose weights are the eigenvalues of ``W = C^(1/2) A C^(1/2)``,
    with ``A_gh = n_g [g == h] - n_g n_h / N`` and ``c_g = 1 / (1 - n_g / N)``; the degrees of
    freedom are ``tr(W) ** 2 / tr(W ** 2)``. In closed form, without the G x G matrix:
    ``tr(W) = N`` and ``tr(W ** 2) = sum c_g^2 n_g^2 - (2 / N) sum c_g^2 n_g^3 + (sum c_g n_g^2) ** 2 / N^2``.
    Equal groups give G - 1.
    """
    m = np.asarray(sizes, dtype=np.float64)
    n = m.sum()
    c = 1.0 / (1.0 - m / n)
    trace_w2 = (c * c * m * m).sum() - 2.0 / n * (c * c * m**3).sum() + ((c * m * m).sum() / n) ** 2
    return float(n * n / trace_w2)


def cr2_t_bounds(data: np.ndarray, codes: np.ndarray, *, confidence: float) -> np.ndarray:
    """CR2 / Bell-McCaffrey t interval for the mean of each row of ``data`` (k x n): (k, 2).

    ``codes`` gives each column's group (0..G-1). For a mean the leverage of group g is
    ``n_g / N``, so the CR2 variance is ``sum_g E_g^2 / (1 - n_g / N) / N^2``, with ``E_g`` the sum
    of group g's residuals. The CR1 variance the cluster bootstrap-t divides by,
    ``G / (G - 1) sum_g E_g^2 / N^2``, under-weights a large group's residual (the group pulls the
    mean towards itself), which is why that bootstrap covers too little when one group dominates.
    """
    from scipy.stats import t as student_t

    data = np.atleast_2d(np.asarray(data, dtype=np.float64))
    sizes = np.bincount(codes).astype(np.float64)
    n = sizes.sum()
    mean = data.mean(axis=1)
    residuals = data - mean[:, None]
    sums = np.stack([np.bincount(codes, weights=row, minlength=sizes.size) for row in residuals])
    se = np.sqrt((sums * sums / (1.0 - sizes / n)).sum(axis=1)) / n
    q = float(student_t.ppf(0.5 + confidence / 2, bm_degrees_of_freedom(sizes)))
    return np.stack([mean - q * se, mean + q * se], axis=1)


# -- how many items an inconclusive gate needs, by the same method -------------------------------------

#: The betting interval's n-needed is searched on the values repeated up to this many items; beyond
#: it, the half-width at this size is extrapolated as 1 / sqrt(n).
_BETTING_SEARCH_ITEMS = 4096
#: Larger answers are not searched for: "more than" this many items.
MAX_ITEMS_NEEDED = 10**9


def items_needed(method: str, values, support, *, confidence: float, threshold: float, side: str, seed: int = 0):
    """The fewest items at which ``method``'s interval, with the values' distribution held as it is,
    clears ``threshold`` on ``side`` (``"above"``: the low bound reaches it; ``"below"``: the high
    bound). None where no number of items would (the estimate on the threshold or beyond it, or an
    open side of the support); ``MAX_ITEMS_NEEDED`` where it is more than that. ``method`` is one
    of the rule's bounded methods; the bootstrap's n-needed is the gate's 1 / sqrt(n) rule.
    """
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean())
    if (mean <= threshold) if side == "above" else (mean >= threshold):
        return None
    low, high = float(support[0]), float(support[1])
    if method == ALL_EQUAL:
        end = low if side == "above" else high
        if not math.isfinite(end) or mean == end:  # the bound is the mean itself: n changes nothing
            return None
        ratio = (threshold - end) / (mean - end)  # the bound is end + (mean - end) * q; it needs q >= ratio
        if ratio <= 0:
            return data.size
        return min(MAX_ITEMS_NEEDED, max(1, math.ceil(round(math.log(0.5 * (1 - confidence)) / math.log(ratio), 9))))

    def clears(n: int) -> bool:
        bound = _bound_at(method, data, (low, high), n, confidence=confidence, seed=seed, side=side)
        return bound >= threshold if side == "above" else bound <= threshold

    cap = MAX_ITEMS_NEEDED if method == CLOPPER_PEARSON else _BETTING_SEARCH_ITEMS
    lo, hi = data.size, data.size
    while not clears(hi):
        if hi >= cap:
            break
        lo, hi = hi, min(cap, 2 * hi)
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if clears(mid) else (mid, hi)
        return hi
    if method == CLOPPER_PEARSON:
        return MAX_ITEMS_NEEDED
    # Beyond the searched size: half-widths shrink as 1 / sqrt(n) from there.
    bound = _bound_at(method, data, (low, high), cap, confidence=confidence, seed=seed, side=side)
    spread, margin = abs(mean - bound), abs(mean - threshold)
    return min(MAX_ITEMS_NEEDED, math.ceil(cap * (spread / margin) ** 2))


def needed_by(method: str, values, support, *, confidence: float, seed: int = 0):
    """A gate's ``needed(threshold, side)`` by :func:`items_needed` for ``values`` on ``support``,
    where ``method`` is one of the rule's bounded methods; None (the gate's 1 / sqrt(n) rule) otherwise."""
    if method not in BOUNDED_METHODS:
        return None
    support = support if support is not None else (-math.inf, math.inf)

    def needed(threshold: float, side: str):
        return items_needed(method, values, support, confidence=confidence, threshold=threshold, side=side, seed=seed)

    return needed


def _bound_at(method: str, data: np.ndarray, support, n: int, *, confidence: float, seed: int, side: str) -> float:
    """``method``'s bound on ``side`` for ``n`` items distributed as ``data``."""
    low, high = support
    x = np.clip((data - low) / (high - low), 0.0, 1.0)
    if method == CLOPPER_PEARSON:
        bounds = clopper_pearson(float(x.mean()) * n, n, confidence=confidence)
    else:
        bounds = betting_bounds01(np.resize(x, n)[None, :], confidence=confidence, seed=seed)[0]
    return low + (high - low) * float(bounds[0 if side == "above" else 1])
