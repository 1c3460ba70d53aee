"""Running a probe: validate, measure, bootstrap, wrap in a ProbeResult.

``run_probe`` is the programmatic entry point (``pytest_sway.sway.Sway`` binds
it to one backend, registry and seed); ``derive_seed`` gives each test its seed.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import replace
from typing import Any

import numpy as np

from ..backends.topk import DivergenceBounds
from ..errors import ProbeError, ProbeParamError, SwayError, is_whole, short_repr
from ..probes import Measurement, ProbeRegistry, default_registry
from ..stats.bootstrap import Bootstrap, Interval
from ..stats.drivers import DEFAULT_DRIVERS
from ..stats.methods import DEFAULT_CONFIDENCE
from ..stats.shapes import few_levels
from ..stats.slices import count_groups, layout_of, locate, slice_results
from .result import BoundedEnds, ProbeResult


def run_probe(
    kind: str,
    backend,
    *,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int | None = None,
    method: str | None = None,
    registry: ProbeRegistry | None = None,
    base_dir=None,
    drivers: int = DEFAULT_DRIVERS,
    **params: Any,
) -> ProbeResult:
    """Measure probe ``kind`` on ``backend`` and bootstrap a CI for its mean.

    ``params`` are the probe's own parameters (e.g. ``prompts=[...]``); items
    given as a string are read from that JSONL file, relative to ``base_dir``
    (default: the current folder); items given as a mapping of names to lists
    are slices, each with its own estimate and interval; ``groups=[...]`` (one
    label per item) makes the bootstrap resample whole groups. ``drivers`` is
    how many items a failed gate on the result names per side (0: none).
    Unknown kinds and unknown, missing or ill-typed parameters raise
    ``ValueError`` naming the kind and the parameter.
    """
    registry = registry if registry is not None else default_registry()
    probe = registry.get(kind)
    checked = probe.validate(params, base_dir=base_dir)
    if not is_whole(drivers) or drivers < 0:
        raise ProbeParamError(f"{kind}: drivers: expected a whole number >= 0, got {short_repr(drivers)}")
    try:
        bootstrap = Bootstrap(confidence=confidence, resamples=resamples, method=method, seed=seed)
    except ValueError as exc:
        raise ProbeParamError(f"{kind}: {exc}") from None
    return measure(probe, checked, backend, bootstrap, drivers=int(drivers))


def measure(probe, params: dict, backend, bootstrap: Bootstrap, *, drivers: int = DEFAULT_DRIVERS) -> ProbeResult:
    """Run an already-validated probe request.

    Whatever a probe (a built-in or yours) does wrong ends in a ``ProbeError``
    that names the probe and, where one is to blame, the item.
    """
    start = time.perf_counter()
    try:
        m = probe.measure(backend, params, bootstrap)
    except SwayError:
        raise
    except Exception as exc:
        raise ProbeError(f"probe {probe.kind!r} raised {type(exc).__name__}: {exc} ({_where(exc)})") from exc
    if not isinstance(m, Measurement):
        raise ProbeError(f"probe {probe.kind!r} returned {type(m).__name__}, not a pytest_sway.Measurement")
    items = tuple(str(item) for item in m.items)  # plain str, even for a Conversation
    try:
        values = np.asarray(m.values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ProbeError(f"probe {probe.kind!r} returned values that are not numbers ({exc})") from None
    if values.ndim != 1 or values.size != len(items):
        raise ProbeError(
            f"probe {probe.kind!r} returned {values.size} value(s) (shape {values.shape}) for {len(items)} items; "
            "a probe must return one value per item, in the items' order"
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raise ProbeError(
            locate(
                probe,
                params,
                f"probe {probe.kind!r} returned {values[i]} for item {i} ({short_repr(items[i])})"
                + (f" and {bad.size - 1} more non-finite value(s)" if bad.size > 1 else "")
                + "; every value must be a finite number",
            )
        )
    support = (0.0, 1.0) if m.binary else _checked_support(probe.kind, m.support)
    low, high = support if support is not None else (-math.inf, math.inf)
    outside = np.flatnonzero((values < low) | (values > high))
    if outside.size:
        i = int(outside[0])
        raise ProbeError(
            locate(
                probe,
                params,
                f"probe {probe.kind!r} returned {values[i]!r} for item {i} ({short_repr(items[i])}), outside its "
                f"declared support {support!r}",
            )
        )
    if m.binary and not np.all((values == 0) | (values == 1)):
        i = int(np.flatnonzero((values != 0) & (values != 1))[0])
        raise ProbeError(
            locate(
                probe,
                params,
                f"probe {probe.kind!r} declared binary values (0/1 outcomes) and returned {values[i]!r} for item {i} "
                f"({short_repr(items[i])}); return 0 or 1 per item, or declare support=(low, high) instead of "
                "binary=True",
            )
        )
    highs = None if m.bounds is None else _checked_highs(probe, params, items, values, m.bounds, support)
    layout = layout_of(probe, params)
    if layout.groups is not None and m.interval is not None:
        raise ProbeError(
            f"probe {probe.kind!r} returned values for a closed-form interval ({m.interval_method or 'closed-form'}), "
            "which assumes independent items, and its items have groups; declare the probe with "
            "Probe(clusters=False) so that groups= is refused when it is parsed, or let pytest-sway choose the interval"
        )

    def interval(part, part_bootstrap, groups):
        if m.interval is not None:
            ci = m.interval(part, confidence=part_bootstrap.confidence)
            return ci, m.interval_method or getattr(m.interval, "__name__", "closed-form"), 0
        return part_bootstrap.estimate(part, support=support, groups=groups)

    def high_interval(part, part_bootstrap, groups):
        # An unbounded upper end leaves the mean of the upper ends unbounded: nothing to resample.
        if not np.all(np.isfinite(part)):
            return Interval(-math.inf if support is None else support[0], math.inf), "", 0
        return interval(part, part_bootstrap, groups)

    bounds = None
    try:
        ci, method, resamples = interval(values, bootstrap, layout.groups)
        slices = slice_results(values, layout, bootstrap, interval)
        if highs is not None and m.bounds is not None:
            ci_of_high = high_interval(highs, bootstrap, layout.groups)[0]
            bounds = BoundedEnds(
                k=int(m.bounds.k),
                mean_low=float(values.mean()),
                mean_high=float(highs.mean()),
                ci_of_low=ci,
                ci_of_high=ci_of_high,
                high=highs,
            )
            ci = Interval(ci.low, ci_of_high.high)  # above= judges the low ends' interval, below= the high ends'
            upper = slice_results(highs, layout, bootstrap, high_interval)
            slices = {name: replace(s, ci=Interval(s.ci.low, upper[name].ci.high)) for name, s in slices.items()}
    except ValueError as exc:
        raise ProbeError(f"probe {probe.kind!r}: {exc}") from None
    return ProbeResult(
        kind=probe.kind,
        estimate=float(values.mean()),
        ci=ci,
        confidence=bootstrap.confidence,
        n=int(values.size),
        values=values,
        method=method,
        resamples=resamples,
        seed=bootstrap.seed,
        params=params,
        details=m.details,
        items=items,
        label=probe.label(params),
        duration_s=time.perf_counter() - start,
        max_drivers=drivers,
        groups=layout.groups,
        n_groups=None if layout.groups is None else count_groups(layout.groups),
        slices=slices,
        item_slices=layout.slices,
        support=support,
        notes=_notes(probe.kind, values, m),
        bounds=bounds,
    )


def _checked_highs(probe, params, items, values: np.ndarray, bounds, support) -> np.ndarray:
    """A bounded measurement's upper ends as a float64 array, or ``ProbeError``: one per item, each at
    or above its lower end (which ``values`` holds) and inside the support, or ``inf`` (unbounded)."""
    kind = probe.kind
    if not isinstance(bounds, DivergenceBounds):
        raise ProbeError(
            f"probe {kind!r} returned bounds={short_repr(bounds)}; bounds are a "
            "pytest_sway.backends.topk.DivergenceBounds(low, high, k), or None for exact values"
        )
    try:
        lows = np.asarray(bounds.low, dtype=np.float64)
        highs = np.asarray(bounds.high, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ProbeError(f"probe {kind!r} returned bounds that are not numbers ({exc})") from None
    if lows.shape != values.shape or highs.shape != values.shape or not np.array_equal(lows, values):
        raise ProbeError(
            f"probe {kind!r} returned {highs.size} upper and {lows.size} lower end(s) for {values.size} values; a "
            "bounded measurement has one (low, high) per item and its values are the low ends (bounds.low)"
        )
    if not is_whole(bounds.k) or bounds.k < 1:
        raise ProbeError(f"probe {kind!r} returned bounds with k={short_repr(bounds.k)}; k counts log-probabilities")
    top = math.inf if support is None else support[1]
    bad = np.flatnonzero(np.isnan(highs) | (highs < lows) | ((highs > top) & (highs != math.inf)))
    if bad.size:
        i = int(bad[0])
        raise ProbeError(
            locate(
                probe,
                params,
                f"probe {kind!r} returned the interval [{lows[i]!r}, {highs[i]!r}] for item {i} "
                f"({short_repr(items[i])})"
                + (f" and {bad.size - 1} more bad one(s)" if bad.size > 1 else "")
                + "; each item's upper end must be a number at or above its lower end"
                + (f" and within the support {support!r}" if support is not None else "")
                + " (inf where unbounded)",
            )
        )
    return highs


def _notes(kind: str, values: np.ndarray, m: Measurement) -> tuple[str, ...]:
    """What the reader should know about the interval: a bootstrap of values with few distinct
    levels, from a probe that declared no support (so the rule could not choose for them)."""
    if m.support is not None or m.binary or m.interval is not None:
        return ()
    if np.all(values == values[0]):
        return (
            f"{kind} returned {values.size} values all equal to {values[0]:.4g} and declares no support, so its "
            "interval is (-inf, inf): equal values cannot bound a mean whose range is unknown; declare the range "
            "its values can take, Measurement(..., support=(low, high)) (binary=True for 0/1 outcomes)",
        )
    levels = few_levels(values)
    if levels is None:
        return ()
    return (
        f"{kind} returned {values.size} values with only {levels} distinct level(s) and declares no support, so "
        "its interval is a bootstrap that treats them as continuous and can be too narrow; declare the range "
        "its values can take, Measurement(..., support=(low, high)) (binary=True for 0/1 outcomes), and "
        "pytest-sway chooses an interval that stays honest for them",
    )


def _checked_support(kind: str, support) -> tuple[float, float] | None:
    """A probe's declared support as a pair of floats (or None), or ``ProbeError``."""
    if support is None:
        return None
    try:
        low, high = (float(x) for x in support)
    except (TypeError, ValueError):
        raise ProbeError(
            f"probe {kind!r} declared support={short_repr(support)}; a support is a (low, high) pair of numbers "
            "(float('inf') for an open side), or None"
        ) from None
    if math.isnan(low) or math.isnan(high) or not low < high:
        raise ProbeError(f"probe {kind!r} declared support={short_repr(support)}; its low must be below its high")
    return low, high


def derive_seed(base_seed: int, test_id: str) -> int:
    """A test's bootstrap seed: a stable hash of the run's seed and the test id,
    so a test gets the same CI alone, in a full run, in any order, on any worker."""
    digest = hashlib.blake2b(f"{base_seed}\0{test_id}".encode(), digest_size=4, person=b"sway-seed").digest()
    return int.from_bytes(digest, "little")


def _where(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame that raised ``exc``."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "no traceback"
    code = tb.tb_frame.f_code
    return f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}"
