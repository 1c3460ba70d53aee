"""Bootstrap confidence intervals for the mean of per-item values.

Pure numpy/scipy: nothing here knows about pytest, probes or models.

Every probe in pytest-sway reduces to "one number per item (prompt, case,
text)" and an estimate that is the mean of those numbers, so the bootstrap
here is specialised to the mean. That keeps it exact and fast: the jackknife
needed by BCa has a closed form, and resampled means and standard deviations
come from one gather per batch of resamples.

Intervals use order statistics of the bootstrap distribution (the
``(B + 1) * p``-th value, no interpolation), which is why the default number
of resamples is 9999: the 2.5% and 97.5% points fall on exact ranks.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import is_number, is_whole, short_repr
from ..items import label as as_label
from . import shapes
from .methods import (
    DEFAULT_CONFIDENCE,
    DEFAULT_METHOD,
    METHODS,
    MIN_GROUPS,
    auto_resamples,
    check_resamples,
    resamples_needed,
)

# Upper bound on the elements of one (datasets x resamples x items) gather:
# 2**18 indices (0.5 MiB as uint16, 2 MiB as int64) and as many complex values (4 MiB).
# Small enough that a bootstrap's memory does not grow with the number of items
# (benchmarks/bench_memory.py --suite bootstrap: 8 MiB at 256 values, 6 at 4,096; with
# 2**22 it was 44 and 136), large enough that numpy, not the loop, does the work.
_MAX_BATCH_ELEMENTS = 1 << 18
# Above this many drawn elements the work is split over threads.
_PARALLEL_ELEMENTS = 1 << 20
# At most this many chunks are in flight at once, whatever the machine: each holds about 5 MB,
# so the peak is about 20 MB on 4 cores or 64 (one thread per core made it grow with the
# number of items on a 16-core machine, to 68 MB at 4,096 values).
_MAX_THREADS = 4


class Interval(NamedTuple):
    """A confidence interval ``[low, high]``."""

    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def __str__(self) -> str:
        return f"[{self.low:.4g}, {self.high:.4g}]"


@dataclass(frozen=True)
class Bootstrap:
    """How to turn per-item values into an interval: validated once, reused.

    ``resamples=None`` and ``method=None`` mean the defaults (9999, or more
    where the confidence level needs more; and ``DEFAULT_METHOD``); after
    construction both hold the concrete values.
    """

    confidence: float = DEFAULT_CONFIDENCE
    resamples: int | None = None
    method: str | None = None
    seed: int = 0

    def __post_init__(self):
        confidence, resamples, method = check_arguments(self.confidence, self.resamples, self.method)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "resamples", resamples)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "seed", int(self.seed))

    def interval(self, values, *, support: tuple[float, float] | None = None, groups=None) -> Interval:
        """The interval for the mean of ``values`` (see :func:`bootstrap_ci`)."""
        return self.estimate(values, support=support, groups=groups).ci

    def estimate(self, values, *, support: tuple[float, float] | None = None, groups=None) -> Chosen:
        """The interval for the mean of ``values``, the method the rule chose for them
        (:func:`pytest_sway.stats.shapes.choose_method`), and the resamples it used (0: none)."""
        data = check_values(values)
        low, high = _check_support(support, data)
        bounded = (low, high) if math.isfinite(low) and math.isfinite(high) else None
        codes = None if groups is None else check_groups(groups, data.size)
        chosen = shapes.choose_method(data, bounded, confidence=self.confidence)
        if (
            codes is not None
            and chosen == shapes.CLOPPER_PEARSON
            and not shapes.piled(data, bounded, confidence=self.confidence)
        ):
            # 0/1 values in groups are not binomial counts; where they do not pile on one level the
            # cluster bootstrap covers, and betting on size-weighted group means would be needlessly wide.
            chosen = shapes.BOOTSTRAP
        if chosen == shapes.ALL_EQUAL:
            # Groups are the independent units: n equal values in G groups are G pieces of evidence.
            n = data.size if codes is None else int(codes.max()) + 1
            a, b = shapes.all_equal_bounds(float(data[0]), n, (low, high), confidence=self.confidence)
            return Chosen(Interval(a, b), chosen, 0)
        if chosen != shapes.BOOTSTRAP and bounded is not None:
            x = (data - low) / (high - low)
            if codes is None and chosen == shapes.CLOPPER_PEARSON:
                at_high = shapes.at_ends(data, bounded)  # not None: the rule chose Clopper-Pearson for it
                assert at_high is not None
                successes = int(at_high.sum())
                bounds01 = shapes.clopper_pearson(successes, data.size, confidence=self.confidence)
            else:
                weights = None
                if codes is not None:  # group means, each bet scaled by its group's size
                    sizes = np.bincount(codes).astype(np.float64)
                    x, weights = np.bincount(codes, weights=x) / sizes, sizes / sizes.max()
                    chosen = shapes.BETTING
                bounds01 = shapes.betting_bounds01(
                    np.clip(x, 0.0, 1.0)[None, :], confidence=self.confidence, seed=self.seed, weights=weights
                )[0]
            return Chosen(
                Interval(low + (high - low) * float(bounds01[0]), low + (high - low) * float(bounds01[1])), chosen, 0
            )
        method, resamples = str(self.method), int(self.resamples or 0)  # concrete after __post_init__
        bounds = batch_intervals(
            data[None, :],
            confidence=self.confidence,
            resamples=resamples,
            methods=(method,),
            seed=self.seed,
            groups=codes,
        )[method][0]
        if codes is not None and np.ptp(np.bincount(codes)) > 0:
            # In groups of unequal size a large group pulls the mean towards itself and the cluster
            # bootstrap's standard error misses it: widen to the CR2 / Bell-McCaffrey t interval where
            # that is wider. (Equal groups: the cluster bootstrap-t alone covers.)
            cr2 = shapes.cr2_t_bounds(data[None, :], codes, confidence=self.confidence)[0]
            bounds = np.array([min(bounds[0], cr2[0]), max(bounds[1], cr2[1])])
        # The mean of values confined to [low, high] lies in [low, high] too.
        return Chosen(
            Interval(float(np.clip(bounds[0], low, high)), float(np.clip(bounds[1], low, high))), method, resamples
        )


class Chosen(NamedTuple):
    """An interval, the method that computed it, and the bootstrap resamples it used (0: none)."""

    ci: Interval
    method: str
    resamples: int


def bootstrap_ci(
    values,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int | None = None,
    method: str | None = None,
    seed: int = 0,
    support: tuple[float, float] | None = None,
    groups=None,
) -> Interval:
    """Bootstrap confidence interval for the mean of ``values``.

    ``method`` is ``"studentized"`` (bootstrap-t, the default), ``"bca"``
    (bias-corrected and accelerated) or ``"percentile"``; ``resamples``
    defaults to 9999, raised where the confidence level needs more. Too few
    resamples for the level (fewer than ``2 / (1 - confidence) - 1``, where a
    bound would be the most extreme resample or beyond it) raise
    ``ValueError`` saying how many are needed: an interval is never silently
    narrower than its level. The result depends only on the values, the arguments
    and ``seed``: the random generator is local, never numpy's global one.

    The interval follows the shape of the values (:func:`pytest_sway.stats.shapes.choose_method`):
    ``method`` is the bootstrap used where a bootstrap is honest; every value equal, values at the
    two ends of ``support``, or values piled on one level of a finite ``support`` get the exact
    all-equal bound, Clopper-Pearson or the betting interval instead (``Bootstrap.estimate`` says
    which). Twelve values of 1 on ``support=(-1, 1)`` give ``[-1 + 2 * 0.025 ** (1 / 12), 1]``,
    ``[0.4707, 1]``: never zero width.

    ``support=(low, high)`` is the range the values can take (``(0, ln 2)``
    for Jensen-Shannon divergences): the interval lies inside it, since
    the mean cannot leave it. Bootstrap-t bounds otherwise can, at small n.

    ``groups`` (one label per value: a string, an integer, or None for a
    value that is a group of its own) makes it a cluster bootstrap: whole
    groups are resampled with replacement, the statistic is the mean over all
    values of the resampled groups, and the bootstrap-t studentizes with the
    cluster-robust standard error; in groups of unequal size the interval is widened
    to the CR2 t interval where that is wider (one large group). Values in one group (paraphrases of one
    question, turns of one conversation) are not independent evidence, and
    resampling them one by one makes the interval too narrow. Fewer than
    ``MIN_GROUPS`` groups, or one group holding so many values that fewer than
    ``MIN_EFFECTIVE_GROUPS`` effective groups remain, raise ``ValueError``.

    Bad input raises ``ValueError`` naming the argument.
    """
    bootstrap = Bootstrap(confidence=confidence, resamples=resamples, method=method, seed=seed)
    return bootstrap.interval(values, support=support, groups=groups)


def check_groups(groups, n: int) -> np.ndarray:
    """Each of ``n`` values' group as an index 0..G-1 (in order of first appearance), or ``ValueError``.

    A label is a string or an integer, in the one form ``pytest_sway.items.label`` gives (an
    integer is its text: 1 and "1" are one group); None makes the value a group of its own.
    """
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__len__"):
        raise ValueError(f"groups: expected a list of group labels, one per item, got {short_repr(groups, 40)}")
    labels = list(groups)
    if len(labels) != n:
        raise ValueError(f"groups: {len(labels)} group label(s) for {n} items; give one label per item, in order")
    codes = np.empty(n, dtype=np.int64)
    seen: dict = {}
    for i, label in enumerate(labels):
        if label is None:
            codes[i] = len(seen)
            seen[object()] = codes[i]
            continue
        key = as_label(label, "group", f"groups: label {i}")  # the one form: 1 and "1" are one group
        codes[i] = seen.setdefault(key, len(seen))
    if len(seen) < MIN_GROUPS:
        raise ValueError(
            f"groups: {len(seen)} group(s) among {n} items; a cluster bootstrap needs at least {MIN_GROUPS} groups "
            f"(from fewer, resampling whole groups cannot show how much they vary, and the interval would be "
            f"too narrow): add groups, or leave groups out if the items are independent"
        )
    sizes = np.bincount(codes)
    effective = shapes.effective_groups(sizes)
    if effective < shapes.MIN_EFFECTIVE_GROUPS:
        raise ValueError(
            f"groups: one group holds {sizes.max()} of the {n} items, which leaves {effective:.2f} effective groups "
            f"(Kish: (sum of sizes)^2 / sum of squared sizes); an interval needs at least "
            f"{shapes.MIN_EFFECTIVE_GROUPS:g}, since the data cannot show how much groups vary: split the large "
            "group, or add items in other groups"
        )
    return codes


def check_values(values) -> np.ndarray:
    """Return ``values`` as a 1-d float64 array, or raise ``ValueError``."""
    try:
        data = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"values: expected a sequence of numbers ({exc})") from None
    if data.ndim != 1:
        raise ValueError(f"values: expected a 1-d sequence of numbers, got shape {data.shape}")
    if data.size == 0:
        raise ValueError("values: empty; a confidence interval needs at least 2 values")
    if data.size == 1:
        raise ValueError("values: only 1 value; a confidence interval needs at least 2 values")
    bad = np.flatnonzero(~np.isfinite(data))
    if bad.size:
        raise ValueError(
            f"values: {bad.size} non-finite value(s) (first at index {bad[0]}: {data[bad[0]]}); "
            "every per-item value must be a finite number"
        )
    return data


def _check_support(support, data) -> tuple[float, float]:
    if support is None:
        return -math.inf, math.inf
    try:
        low, high = (float(x) for x in support)
    except (TypeError, ValueError):
        raise ValueError(f"support: expected a (low, high) pair of numbers, got {support!r}") from None
    if not low < high:
        raise ValueError(f"support: low must be below high, got {support!r}")
    outside = np.flatnonzero((data < low) | (data > high))
    if outside.size:
        raise ValueError(
            f"values: value {data[outside[0]]!r} at index {outside[0]} lies outside the support {support!r}"
        )
    return low, high


def check_arguments(confidence, resamples, method) -> tuple[float, int, str]:
    """Validate and fill in defaults; raise ``ValueError`` naming the argument."""
    if not is_number(confidence):
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence: must lie strictly between 0 and 1, got {confidence!r}")
    if resamples is None:
        resamples = auto_resamples(float(confidence))
    elif not is_whole(resamples):
        raise ValueError(f"resamples: expected a positive integer, got {resamples!r}")
    elif resamples < 1:
        raise ValueError(f"resamples: must be at least 1, got {resamples!r}")
    check_resamples(int(resamples), float(confidence))
    if method is None:
        method = DEFAULT_METHOD
    elif method not in METHODS:
        raise ValueError(f"method: unknown CI method {method!r}; choose one of {', '.join(METHODS)}")
    return float(confidence), int(resamples), method


def batch_intervals(
    data: np.ndarray,
    *,
    confidence: float,
    resamples: int,
    methods: tuple[str, ...],
    seed: int,
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Intervals for the mean of each row of ``data`` (k x n), one (k, 2) array per method.

    Validated inputs only (see :func:`check_values`, :func:`check_arguments`,
    :func:`check_groups`). ``groups`` (the group index of each column, shared
    by every row) makes it a cluster bootstrap. All methods share the same
    resamples. Rows whose values are all equal get the zero-width interval at
    that value.
    """
    k = data.shape[0]
    alpha = 1.0 - confidence
    mean = data.mean(axis=1)
    constant = np.all(data == data[:, :1], axis=1)
    live = np.flatnonzero(~constant)
    out = {}
    for method in methods:
        out[method] = np.empty((k, 2))
        out[method][constant] = mean[constant, None]
    if live.size == 0:
        return out
    data = data[live]
    mean = mean[live]
    need_t = "studentized" in methods
    if groups is None:
        n = data.shape[1]
        boot_mean, boot_sd = _resampled_moments(data, resamples, seed, need_sd=need_t)
        se = data.std(axis=1, ddof=1) / math.sqrt(n)
        boot_se = None if boot_sd is None else boot_sd / math.sqrt(n)
        # Jackknife of the mean in closed form: leave-one-out means.
        jackknife = (data.sum(axis=1, keepdims=True) - data) / (n - 1)
    else:
        sums, sizes = _group_sums(data - mean[:, None], groups)
        boot_mean, boot_se = _cluster_moments(sums, sizes, resamples, seed, need_se=need_t)
        boot_mean += mean[:, None]
        se = _cluster_se(sums, sizes)
        # Leave one group out: the mean of the other groups' values (the sums are centred).
        jackknife = mean[:, None] - sums / (sizes.sum() - sizes)
    for method in methods:
        if method == "percentile":
            bounds = _order_statistics(boot_mean, np.array([alpha / 2, 1 - alpha / 2]))
        elif method == "bca":
            bounds = _order_statistics(boot_mean, _bca_levels(jackknife, mean, boot_mean, alpha))
        else:
            bounds = _studentized(mean, se, boot_mean, boot_se, alpha)
        out[method][live] = bounds
    return out


def _studentized(mean, se, boot_mean, boot_se, alpha):
    """Equal-tailed bootstrap-t: quantiles of t* = (mean* - mean) / se*.

    A resample whose values are all equal has no spread of its own (se* = 0);
    its t uses the sample's standard error instead of dividing by zero. With
    continuous data such resamples are rare, but per-item values often pile
    up at a bound (a rank correlation of exactly 1, a divergence saturated at
    ln 2), and then infinite t values would stretch the interval to the whole
    range, whatever the data say.
    """
    # Rounding leaves ~1e-17 instead of 0 for some all-equal resamples.
    spread = np.where(boot_se > 1e-9 * se[:, None], boot_se, se[:, None])
    t = (boot_mean - mean[:, None]) / spread
    return mean[:, None] - _order_statistics(t, np.array([1 - alpha / 2, alpha / 2])) * se[:, None]


def _chunks(k: int, width: int, resamples: int, seed: int):
    """``(start, stop, seed)`` of each chunk of resamples: no gather of ``k x chunk x width`` elements
    exceeds ``_MAX_BATCH_ELEMENTS``, large jobs are split in at least two chunks (they run on threads),
    and each chunk draws from its own child of ``seed``."""
    per_chunk = max(1, _MAX_BATCH_ELEMENTS // (k * width))
    if k * width * resamples > _PARALLEL_ELEMENTS:
        per_chunk = min(per_chunk, -(-resamples // 2))
    bounds = [(start, min(resamples, start + per_chunk)) for start in range(0, resamples, per_chunk)]
    seeds = np.random.SeedSequence(seed).spawn(len(bounds))
    return [(a, b, s) for (a, b), s in zip(bounds, seeds)]


def _run_chunks(chunk, chunks) -> np.ndarray:
    """``chunk(start, stop, seed)`` for every chunk, on threads when there are several
    (numpy releases the GIL), concatenated along axis 1."""
    workers = min(len(chunks), os.cpu_count() or 1, _MAX_THREADS)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            return np.concatenate(list(pool.map(chunk, *zip(*chunks))), axis=1)
    return np.concatenate([chunk(*c) for c in chunks], axis=1)


def _picks(chunk_seed, k: int, count: int, width: int) -> np.ndarray:
    """``count`` resamples of ``width`` indices below ``width`` for each of ``k`` rows."""
    # Small index types are drawn faster.
    index_type = np.uint16 if k == 1 and width <= np.iinfo(np.uint16).max else np.int64
    return np.random.default_rng(chunk_seed).integers(0, width, size=(k, count, width), dtype=index_type)


def _resampled_moments(data, resamples, seed, *, need_sd):
    """Means (and sds) of ``resamples`` bootstrap resamples of each row.

    Resamples are drawn in chunks (see :func:`_chunks`), so the result does
    not depend on how many threads ran them. One gather per resample does it
    all: each centred value ``v`` rides with its square as the complex number
    ``v + i v^2``, so one sum gives both moments.
    """
    k, n = data.shape
    center = data.mean(axis=1, keepdims=True)
    centred = (data - center).ravel()  # centred, so the sum of squares loses no precision
    values = centred + 1j * (centred * centred) if need_sd else centred
    offsets = (np.arange(k, dtype=np.int64) * n)[:, None, None]  # rows of a batch of datasets

    def chunk(start, stop, chunk_seed):
        picks = _picks(chunk_seed, k, stop - start, n)
        if k > 1:
            picks += offsets
        return values[picks].sum(axis=2)

    sums = _run_chunks(chunk, _chunks(k, n, resamples, seed))
    boot_mean = sums.real / n + center
    if not need_sd:
        return boot_mean, None
    spread = sums.imag - sums.real * sums.real / n
    return boot_mean, np.sqrt(np.maximum(spread, 0.0) / (n - 1))


def _group_sums(centred: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the sum of each group's values (k x G), and each group's size (G,)."""
    order = np.argsort(groups, kind="stable")
    sizes = np.bincount(groups)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return np.add.reduceat(centred[:, order], starts, axis=1), sizes.astype(np.float64)


def _cluster_se(sums: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Cluster-robust standard error of the mean of all values, from centred group sums.

    The mean is the ratio ``sum(S_g) / sum(m_g)`` of group sums to group sizes;
    linearised, its variance is ``G / (G - 1) * sum(e_g^2) / (sum m_g)^2`` with
    residual totals ``e_g = S_g - mean * m_g`` (= ``S_g`` for centred sums). With
    groups of one this is ``s / sqrt(n)``, the plain standard error.
    """
    g = sizes.size
    return np.sqrt(g / (g - 1) * (sums * sums).sum(axis=1)) / sizes.sum()


def _cluster_moments(sums, sizes, resamples, seed, *, need_se):
    """Means (and cluster-robust standard errors) of ``resamples`` cluster-bootstrap resamples.

    ``sums`` are centred group sums (k x G), ``sizes`` the group sizes. Each
    resample draws G groups with replacement; its mean is the ratio of the
    drawn sums to the drawn sizes, and its standard error that of
    :func:`_cluster_se` computed on the drawn groups:
    ``sum (S - t m)^2 = sum S^2 - 2 t sum S m + t^2 sum m^2``.
    """
    k, g = sums.shape
    offsets = (np.arange(k, dtype=np.int64) * g)[:, None, None]
    flat = sums.ravel()

    def chunk(start, stop, chunk_seed):
        picks = _picks(chunk_seed, k, stop - start, g)
        m = sizes[picks]
        if k > 1:
            picks += offsets
        s = flat[picks]
        total_m = m.sum(axis=2)
        mean = s.sum(axis=2) / total_m
        if not need_se:
            return mean[..., None]
        residual = (s * s).sum(axis=2) - 2 * mean * (s * m).sum(axis=2) + mean * mean * (m * m).sum(axis=2)
        se = np.sqrt(g / (g - 1) * np.maximum(residual, 0.0)) / total_m
        return np.stack([mean, se], axis=-1)

    out = _run_chunks(chunk, _chunks(k, g, resamples, seed))  # (k, resamples, 1 or 2)
    return out[..., 0], (out[..., 1] if need_se else None)


def _order_statistics(samples: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The ``(B + 1) * p``-th smallest of each row, for each level ``p``.

    ``levels`` is either one row of levels for every dataset (shape (L,)) or
    one row per dataset (shape (k, L)). Where ``(B + 1) * p`` is not a whole
    number the rank is rounded outwards (down below the median, up above it),
    so an interval is never narrower than its level. A rank outside ``1..B``
    would silently clip to the most extreme resample: that raises
    ``ValueError`` naming the resamples needed.
    """
    k, b = samples.shape
    levels = np.broadcast_to(levels, (k, np.shape(levels)[-1]))
    exact = np.round((b + 1) * levels, 6)  # 250.00000000000003 is rank 250
    ranks = np.where(levels < 0.5, np.floor(exact), np.ceil(exact)).astype(np.int64)
    if ranks.min() < 1 or ranks.max() > b:
        tail = float(np.min(np.minimum(levels, 1 - levels)))
        needed = resamples_needed(1.0 - 2.0 * tail) if tail > 0 else None
        raise ValueError(
            f"resamples: {b} resamples cannot resolve the interval's {tail:.3g} tail level"
            + (f"; it needs at least {needed} resamples" if needed else "")
        )
    ordered = np.sort(samples, axis=1)
    return np.take_along_axis(ordered, ranks - 1, axis=1)


def _bca_levels(jackknife, mean, boot_mean, alpha):
    """Adjusted percentile levels of the BCa interval, shape (k, 2), from the leave-one-out
    (or leave-one-group-out) estimates ``jackknife`` (k x n)."""
    from scipy.special import ndtr, ndtri  # only BCa needs it; it takes 0.3 s to import

    k = jackknife.shape[0]
    b = boot_mean.shape[1]
    # A resample that is a permutation of the sample has its mean up to rounding (one in
    # n!/n^n resamples: 1 in 400 at n = 8): a tie, whichever way the last bit fell.
    diff = boot_mean - mean[:, None]
    tie = np.abs(diff) <= 1e-12 * np.abs(boot_mean).max(axis=1, keepdims=True)
    below = ((diff < 0) & ~tie).sum(axis=1) + 0.5 * tie.sum(axis=1)
    z0 = ndtri(np.clip(below / b, 1.0 / (b + 1), b / (b + 1)))
    dev = jackknife.mean(axis=1, keepdims=True) - jackknife
    denom = 6.0 * (dev**2).sum(axis=1) ** 1.5
    accel = np.divide((dev**3).sum(axis=1), denom, out=np.zeros(k), where=denom > 0)
    z = ndtri(np.array([alpha / 2, 1 - alpha / 2]))[None, :]
    shifted = z0[:, None] + z
    return ndtr(z0[:, None] + shifted / (1 - accel[:, None] * shifted))
