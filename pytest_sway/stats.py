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

from .ci_methods import DEFAULT_CONFIDENCE, DEFAULT_METHOD, METHODS, auto_resamples, check_resamples, resamples_needed
from .errors import is_number, is_whole

# Upper bound on the elements of one (datasets x resamples x items) gather:
# 2**22 indices (8 MiB as uint16, 32 MiB as int64) and as many complex values.
_MAX_BATCH_ELEMENTS = 1 << 22
# Above this many drawn elements the work is split over threads.
_PARALLEL_ELEMENTS = 1 << 20


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

    def interval(self, values, *, support: tuple[float, float] | None = None) -> Interval:
        """Bootstrap interval for the mean of ``values`` (see :func:`bootstrap_ci`)."""
        data = check_values(values)
        low, high = _check_support(support, data)
        method, resamples = str(self.method), int(self.resamples or 0)  # concrete after __post_init__
        bounds = batch_intervals(
            data[None, :], confidence=self.confidence, resamples=resamples, methods=(method,), seed=self.seed
        )[method]
        # The mean of values confined to [low, high] lies in [low, high] too.
        return Interval(float(np.clip(bounds[0, 0], low, high)), float(np.clip(bounds[0, 1], low, high)))


def bootstrap_ci(
    values,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int | None = None,
    method: str | None = None,
    seed: int = 0,
    support: tuple[float, float] | None = None,
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

    ``support=(low, high)`` is the range the values can take (``(0, ln 2)``
    for Jensen-Shannon divergences): the interval is clipped to it, since
    the mean cannot leave it. Bootstrap-t bounds otherwise can, at small n.

    All-equal values give the zero-width interval at that value. Bad input
    raises ``ValueError`` naming the argument.
    """
    bootstrap = Bootstrap(confidence=confidence, resamples=resamples, method=method, seed=seed)
    return bootstrap.interval(values, support=support)


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


def wilson_interval(values, *, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Wilson score interval for the rate of 1s among 0/1 ``values``.

    Unlike a bootstrap of 0/1 values, it does not collapse to a zero-width
    interval when every value is the same: 0 of 16 gives [0, 0.19].
    """
    data = check_values(values)
    if not np.all((data == 0) | (data == 1)):
        raise ValueError("values: the Wilson interval needs 0/1 values")
    confidence, _, _ = check_arguments(confidence, None, None)
    from statistics import NormalDist

    n, p = data.size, float(data.mean())
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(max(0.0, center - half), min(1.0, center + half))


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
    data: np.ndarray, *, confidence: float, resamples: int, methods: tuple[str, ...], seed: int
) -> dict[str, np.ndarray]:
    """Intervals for the mean of each row of ``data`` (k x n), one (k, 2) array per method.

    Validated inputs only (see :func:`check_values`, :func:`check_arguments`).
    All methods share the same resamples. Rows whose values are all equal get
    the zero-width interval at that value.
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
    boot_mean, boot_sd = _resampled_moments(data, resamples, seed, need_sd=need_t)
    for method in methods:
        if method == "percentile":
            bounds = _order_statistics(boot_mean, np.array([alpha / 2, 1 - alpha / 2]))
        elif method == "bca":
            bounds = _order_statistics(boot_mean, _bca_levels(data, mean, boot_mean, alpha))
        else:
            bounds = _studentized(data, mean, boot_mean, boot_sd, alpha)
        out[method][live] = bounds
    return out


def _studentized(data, mean, boot_mean, boot_sd, alpha):
    """Equal-tailed bootstrap-t: quantiles of t* = (mean* - mean) / se*.

    A resample whose values are all equal has no spread of its own (se* = 0);
    its t uses the sample's standard error instead of dividing by zero. With
    continuous data such resamples are rare, but per-item values often pile
    up at a bound (a rank correlation of exactly 1, a divergence saturated at
    ln 2), and then infinite t values would stretch the interval to the whole
    range, whatever the data say.
    """
    n = data.shape[1]
    sd = data.std(axis=1, ddof=1)
    # Rounding leaves ~1e-17 instead of 0 for some all-equal resamples.
    spread = np.where(boot_sd > 1e-9 * sd[:, None], boot_sd, sd[:, None])
    t = (boot_mean - mean[:, None]) / (spread / math.sqrt(n))
    return mean[:, None] - _order_statistics(t, np.array([1 - alpha / 2, alpha / 2])) * (sd / math.sqrt(n))[:, None]


def _resampled_moments(data, resamples, seed, *, need_sd):
    """Means (and sds) of ``resamples`` bootstrap resamples of each row.

    Resamples are drawn in chunks so that no gather exceeds
    ``_MAX_BATCH_ELEMENTS`` elements, whatever the data size, and large jobs
    are split in at least two chunks that run on threads (numpy releases the
    GIL). Each chunk draws from its own child of ``seed``, so the result does
    not depend on how many threads ran them. One gather per resample does it
    all: each centred value ``v`` rides with its square as the complex number
    ``v + i v^2``, so one sum gives both moments.
    """
    k, n = data.shape
    center = data.mean(axis=1, keepdims=True)
    centred = (data - center).ravel()  # centred, so the sum of squares loses no precision
    values = centred + 1j * (centred * centred) if need_sd else centred
    per_chunk = max(1, _MAX_BATCH_ELEMENTS // (k * n))
    if k * n * resamples > _PARALLEL_ELEMENTS:
        per_chunk = min(per_chunk, -(-resamples // 2))
    bounds = [(start, min(resamples, start + per_chunk)) for start in range(0, resamples, per_chunk)]
    seeds = np.random.SeedSequence(seed).spawn(len(bounds))
    # Small index types are drawn faster; rows of a batch of datasets need offsets.
    index_type = np.uint16 if k == 1 and n <= np.iinfo(np.uint16).max else np.int64
    offsets = (np.arange(k, dtype=np.int64) * n)[:, None, None]

    def chunk(start, stop, chunk_seed):
        picks = np.random.default_rng(chunk_seed).integers(0, n, size=(k, stop - start, n), dtype=index_type)
        if k > 1:
            picks += offsets
        return values[picks].sum(axis=2)

    workers = min(len(bounds), os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            sums = np.concatenate(list(pool.map(chunk, *zip(*bounds), seeds)), axis=1)
    else:
        sums = np.concatenate([chunk(a, b, s) for (a, b), s in zip(bounds, seeds)], axis=1)
    boot_mean = sums.real / n + center
    if not need_sd:
        return boot_mean, None
    spread = sums.imag - sums.real * sums.real / n
    return boot_mean, np.sqrt(np.maximum(spread, 0.0) / (n - 1))


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


def _bca_levels(data, mean, boot_mean, alpha):
    """Adjusted percentile levels of the BCa interval, shape (k, 2)."""
    from scipy.special import ndtr, ndtri  # only BCa needs it; it takes 0.3 s to import

    k, n = data.shape
    b = boot_mean.shape[1]
    below = (boot_mean < mean[:, None]).sum(axis=1) + 0.5 * (boot_mean == mean[:, None]).sum(axis=1)
    z0 = ndtri(np.clip(below / b, 1.0 / (b + 1), b / (b + 1)))
    # Jackknife of the mean in closed form: leave-one-out means.
    loo = (data.sum(axis=1, keepdims=True) - data) / (n - 1)
    dev = loo.mean(axis=1, keepdims=True) - loo
    denom = 6.0 * (dev**2).sum(axis=1) ** 1.5
    accel = np.divide((dev**3).sum(axis=1), denom, out=np.zeros(k), where=denom > 0)
    z = ndtri(np.array([alpha / 2, 1 - alpha / 2]))[None, :]
    shifted = z0[:, None] + z
    return ndtr(z0[:, None] + shifted / (1 - accel[:, None] * shifted))
