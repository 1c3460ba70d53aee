"""Coverage and width of intervals for the mean, by the shape of the per-item values.

Today's intervals (the bootstrap-t clipped to the support, and Wilson's for 0/1 values) against
the candidates of ``interval_candidates.py`` (Clopper-Pearson, the betting interval, the exact
bound for all-equal values, and the rule that picks among them), on 0/1 outcomes, a rank
correlation, ordinal scores, all-equal values and continuous values; with ``--clustered``, the
cluster bootstrap-t against the CR2 / Bell-McCaffrey t interval on items in groups of very
unequal size. Evidence for issue #22: the library does not use the candidates yet.

    python benchmarks/interval_shapes.py                   # the tables in docs/intervals.md
    python benchmarks/interval_shapes.py --datasets 200    # a quick look
    python benchmarks/interval_shapes.py --clustered       # items in groups of unequal size
    python benchmarks/interval_shapes.py --families binary-0.97,rank-correlation --sizes 12

Every method sees the same datasets; each cell's datasets depend only on the seed, the family
and n, so a run on a few families reproduces those rows of a full run. The run times at the
defaults are in docs/intervals.md.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import interval_candidates as candidates
import numpy as np
import scipy

from pytest_sway.stats.bootstrap import batch_intervals, wilson_interval

LN2 = math.log(2)
Sampler = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]


@dataclass(frozen=True)
class Family:
    """Per-item values: how to draw a (datasets x n) array of them, their true mean, their support."""

    title: str
    sample: Sampler
    mean: float
    support: tuple[float, float] | None
    binary: bool = False  # 0/1 values: Wilson (what today's 0/1 probes use) and Clopper-Pearson apply


def _levels(levels, probabilities) -> tuple[Sampler, float]:
    levels, probabilities = np.asarray(levels, dtype=float), np.asarray(probabilities, dtype=float)
    return (lambda rng, shape: rng.choice(levels, size=shape, p=probabilities)), float(levels @ probabilities)


def _binary(p: float) -> Family:
    return Family(f"0/1, p = {p}", lambda rng, shape: (rng.random(shape) < p).astype(float), p, (0.0, 1.0), True)


#: Spearman's rho between six adapter scales and a prompt's divergences (adapter_ablation's
#: per-item value, on [-1, 1]): 1 when the divergence grows with the scale, 33/35 with one
#: adjacent pair swapped, a uniformly random order otherwise (mean 0).
SPEARMAN_MONOTONE, SPEARMAN_ONE_SWAP = 0.85, 0.10


def _spearman(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    u = rng.random(shape)
    order = np.argsort(rng.random(shape + (6,)), axis=-1)  # a uniformly random order of the six scales
    shuffled = (35 - ((order - np.arange(6)) ** 2).sum(axis=-1)) / 35  # 1 - 6 sum d^2 / (6 (6^2 - 1))
    return np.where(u < SPEARMAN_MONOTONE, 1.0, np.where(u < SPEARMAN_MONOTONE + SPEARMAN_ONE_SWAP, 33 / 35, shuffled))


def _families() -> dict[str, Family]:
    out = {f"binary-{p}": _binary(p) for p in (0.5, 0.9, 0.97, 0.1, 0.03)}
    out["rank-correlation"] = Family(
        "Spearman ρ of 6 scales (85% 1, 10% 33/35, 5% shuffled)",
        _spearman,
        SPEARMAN_MONOTONE + SPEARMAN_ONE_SWAP * 33 / 35,
        (-1.0, 1.0),
    )
    for key, title, levels, probabilities in (
        ("ordinal-5-top", "scores 1-5 (1%, 2%, 4%, 13%, 80%)", [1, 2, 3, 4, 5], [0.01, 0.02, 0.04, 0.13, 0.80]),
        ("ordinal-5-spread", "scores 1-5 (5%, 10%, 20%, 30%, 35%)", [1, 2, 3, 4, 5], [0.05, 0.10, 0.20, 0.30, 0.35]),
        ("ordinal-4", "scores 0, ⅓, ⅔, 1 (10%, 20%, 30%, 40%)", [0, 1 / 3, 2 / 3, 1], [0.1, 0.2, 0.3, 0.4]),
        ("ordinal-3-top", "scores 0, ½, 1 (5%, 15%, 80%)", [0, 0.5, 1], [0.05, 0.15, 0.80]),
        ("ordinal-3-middle", "scores 0, ½, 1 (25%, 50%, 25%)", [0, 0.5, 1], [0.25, 0.50, 0.25]),
    ):
        sample, mean = _levels(levels, probabilities)
        out[key] = Family(title, sample, mean, (float(levels[0]), float(levels[-1])))
    out["all-equal"] = Family("all 1 on [-1, 1]", lambda rng, shape: np.ones(shape), 1.0, (-1.0, 1.0))
    out["lognormal"] = Family(
        "lognormal(0,1), no support", lambda rng, shape: rng.lognormal(0.0, 1.0, shape), math.exp(0.5), None
    )
    out["beta"] = Family("beta(2,5) on [0, 1]", lambda rng, shape: rng.beta(2.0, 5.0, shape), 2 / 7, (0.0, 1.0))
    out["js-beta"] = Family(
        "ln2·beta(0.7,6) on [0, ln 2]", lambda rng, shape: LN2 * rng.beta(0.7, 6.0, shape), LN2 * 0.7 / 6.7, (0.0, LN2)
    )
    return out


FAMILIES = _families()
SIZES = (8, 12, 32)
TODAY = "today: bootstrap-t"
METHODS = (TODAY, "today: Wilson", "Clopper-Pearson", "betting", "bootstrap-t + all-equal bound", "rule")


@dataclass(frozen=True)
class Stat:
    """One method on one cell's datasets."""

    coverage: float  # share of intervals that contain the true mean
    width: float  # mean width
    zero_width: float  # share of intervals of width 0


@dataclass(frozen=True)
class Cell:
    """One family at one n: each method's Stat (methods that do not apply are absent), and the rule's choices."""

    family: str
    n: int
    stats: dict[str, Stat]
    choices: dict[str, float]  # share of datasets on each of the rule's methods


def _stat(bounds: np.ndarray, true_mean: float) -> Stat:
    eps = 1e-12 * max(1.0, abs(true_mean))  # a bound computed as the true mean, up to rounding, covers it
    covers = (bounds[:, 0] <= true_mean + eps) & (true_mean - eps <= bounds[:, 1])
    width = bounds[:, 1] - bounds[:, 0]
    return Stat(float(covers.mean()), float(width.mean()), float(np.mean(width <= 0)))


def measure_cell(key: str, n: int, *, datasets: int, resamples: int, confidence: float, seed: int) -> Cell:
    """Every method that applies to family ``key``, on the same ``datasets`` datasets of ``n`` values."""
    family = FAMILIES[key]
    rng = np.random.default_rng([seed, zlib.crc32(key.encode()), n])
    data = family.sample(rng, (datasets, n)).astype(np.float64)
    low, high = family.support or (-math.inf, math.inf)
    today = batch_intervals(data, confidence=confidence, resamples=resamples, methods=("studentized",), seed=seed)
    bounds = {TODAY: np.clip(today["studentized"], low, high)}  # clipped to the support, as the plugin does
    if family.binary:
        successes = (data == 1.0).sum(axis=1)
        wilson = np.array([wilson_interval([1.0] * k + [0.0] * (n - k), confidence=confidence) for k in range(n + 1)])
        bounds["today: Wilson"] = wilson[successes]
        bounds["Clopper-Pearson"] = candidates.clopper_pearson(successes, n, confidence=confidence)
    if family.support is not None:
        x = (data - low) / (high - low)
        bounds["betting"] = low + (high - low) * candidates.betting_bounds01(x, confidence=confidence, seed=seed)
    all_equal = np.all(data == data[:, :1], axis=1)
    fixed = bounds[TODAY].copy()
    for i in np.flatnonzero(all_equal):
        fixed[i] = candidates.constant_interval(float(data[i, 0]), n, family.support, confidence=confidence)
    bounds["bootstrap-t + all-equal bound"] = fixed
    bounds["rule"], chosen = candidates.rule_bounds(
        data, family.support, bounds[TODAY], confidence=confidence, seed=seed
    )
    choices = {m: float(np.mean(chosen == m)) for m in candidates.METHOD_NAMES if np.any(chosen == m)}
    return Cell(key, n, {m: _stat(b, family.mean) for m, b in bounds.items()}, choices)


def _ratio(width: float, today: float) -> str:
    if today > 0:
        return f"{width / today:.2f}×"
    return "∞" if width > 0 else "1.00×"


def print_tables(cells: list[Cell]) -> None:
    print("## Coverage\n")
    print("| values | n | " + " | ".join(METHODS) + " | rule chose |")
    print("|---|---|" + "---|" * (len(METHODS) + 1))
    for cell in cells:
        shown = " | ".join(f"{cell.stats[m].coverage:.3f}" if m in cell.stats else "—" for m in METHODS)
        chose = ", ".join(f"{m} {share:.0%}" if share >= 0.01 else f"{m} <1%" for m, share in cell.choices.items())
        print(f"| {FAMILIES[cell.family].title} | {cell.n} | {shown} | {chose} |")
    print("\n## Mean width (× today's bootstrap-t)\n")
    print(f"| values | n | {TODAY} | its zero-width share | " + " | ".join(METHODS[1:]) + " |")
    print("|---|---|---|---|" + "---|" * (len(METHODS) - 1))
    for cell in cells:
        today = cell.stats[TODAY]
        shown = " | ".join(
            f"{cell.stats[m].width:.3g} ({_ratio(cell.stats[m].width, today.width)})" if m in cell.stats else "—"
            for m in METHODS[1:]
        )
        print(f"| {FAMILIES[cell.family].title} | {cell.n} | {today.width:.3g} | {today.zero_width:.0%} | {shown} |")


def print_exact_binary(sizes, ps, confidence: float) -> None:
    """Coverage of Wilson and Clopper-Pearson on 0/1 values by binomial sums: exact, no simulation."""
    from scipy.stats import binom

    print("\n## 0/1 values: exact coverage (binomial sums, no simulation)\n")
    print("| n | p | today: Wilson | Clopper-Pearson | mean width: Wilson / Clopper-Pearson |")
    print("|---|---|---|---|---|")
    grid = np.linspace(0.001, 0.999, 999)
    for n in sizes:
        k = np.arange(n + 1)
        wilson = np.array([wilson_interval([1.0] * j + [0.0] * (n - j), confidence=confidence) for j in k])
        cp = candidates.clopper_pearson(k, n, confidence=confidence)

        def coverage(bounds, p):
            return float(binom.pmf(k, n, p)[(bounds[:, 0] <= p) & (p <= bounds[:, 1])].sum())

        for p in ps:
            pk = binom.pmf(k, n, p)
            widths = f"{pk @ (wilson[:, 1] - wilson[:, 0]):.3f} / {pk @ (cp[:, 1] - cp[:, 0]):.3f}"
            print(f"| {n} | {p} | {coverage(wilson, p):.3f} | {coverage(cp, p):.3f} | {widths} |")
        lowest = []
        for bounds in (wilson, cp):
            by_p = np.array([coverage(bounds, p) for p in grid])
            lowest.append(f"{by_p.min():.3f} (p = {grid[by_p.argmin()]:.3f})")
        print(f"| {n} | lowest over p in [0.001, 0.999] | {lowest[0]} | {lowest[1]} | |")


# -- items in groups --------------------------------------------------------------------------------------

#: 40 items: one group holding 30-90% of them beside groups of one item, and equal groups.
CLUSTER_ITEMS = 40
DESIGNS = {
    "one group of 30% + 28 singletons": [12] + [1] * 28,
    "one group of 45% + 22 singletons": [18] + [1] * 22,
    "one group of 60% + 16 singletons": [24] + [1] * 16,
    "one group of 75% + 10 singletons": [30] + [1] * 10,
    "one group of 90% + 4 singletons": [36] + [1] * 4,
    "20 groups of 2": [2] * 20,
    "10 groups of 4": [4] * 10,
    "5 groups of 8": [8] * 5,
}
#: A value is its group's effect plus its own noise, with equal variances (intra-class correlation
#: 0.5): name -> (draw of both, true mean).
CLUSTER_MODELS: dict[str, tuple[Sampler, float]] = {
    "normal": (lambda rng, shape: rng.normal(0.0, 1.0, shape), 0.0),
    "skewed (exponential)": (lambda rng, shape: rng.exponential(1.0, shape), 2.0),
}
CLUSTER_METHODS = ("today: cluster bootstrap-t", "CR2-BM t", "hull")


@dataclass(frozen=True)
class ClusterCell:
    model: str
    design: str
    groups: int
    effective_groups: float  # Kish
    degrees_of_freedom: float  # Bell-McCaffrey
    stats: dict[str, Stat]


def measure_cluster_cell(
    model: str, design: str, *, datasets: int, resamples: int, confidence: float, seed: int
) -> ClusterCell:
    draw, true_mean = CLUSTER_MODELS[model]
    sizes = np.array(DESIGNS[design])
    codes = np.repeat(np.arange(sizes.size), sizes)
    rng = np.random.default_rng([seed, zlib.crc32(model.encode()), zlib.crc32(design.encode())])
    data = draw(rng, (datasets, sizes.size))[:, codes] + draw(rng, (datasets, codes.size))
    today = batch_intervals(
        data, confidence=confidence, resamples=resamples, methods=("studentized",), seed=seed, groups=codes
    )["studentized"]
    cr2 = candidates.cr2_t_bounds(data, codes, confidence=confidence)
    hull = np.stack([np.minimum(today[:, 0], cr2[:, 0]), np.maximum(today[:, 1], cr2[:, 1])], axis=1)
    stats = {m: _stat(b, true_mean) for m, b in zip(CLUSTER_METHODS, (today, cr2, hull))}
    return ClusterCell(
        model,
        design,
        int(sizes.size),
        candidates.effective_groups(sizes),
        candidates.bm_degrees_of_freedom(sizes),
        stats,
    )


def print_cluster_table(cells: list[ClusterCell]) -> None:
    print(f"## {CLUSTER_ITEMS} items in groups, intra-class correlation 0.5: coverage\n")
    print(
        "| values | design | G | G_eff (Kish) | BM df | "
        + " | ".join(CLUSTER_METHODS)
        + " | candidate | mean width: "
        + " / ".join(CLUSTER_METHODS)
        + " |"
    )
    print("|---|---|---|---|---|" + "---|" * (len(CLUSTER_METHODS) + 2))
    for c in cells:
        cover = " | ".join(f"{c.stats[m].coverage:.3f}" for m in CLUSTER_METHODS)
        width = " / ".join(f"{c.stats[m].width:.3g}" for m in CLUSTER_METHODS)
        refused = c.effective_groups < candidates.MIN_EFFECTIVE_GROUPS
        verdict = f"refused (G_eff < {candidates.MIN_EFFECTIVE_GROUPS})" if refused else "hull"
        print(
            f"| {c.model} | {c.design} | {c.groups} | {c.effective_groups:.2f} | {c.degrees_of_freedom:.2f} | "
            f"{cover} | {verdict} | {width} |"
        )


# -- the command ------------------------------------------------------------------------------------------


def _header(args, argv: list[str]) -> None:
    print("# Intervals for the mean by shape of values: coverage and width\n")
    print(f"command: python benchmarks/interval_shapes.py {shlex.join(argv)}".rstrip())
    stderr = math.sqrt(args.confidence * (1 - args.confidence) / args.datasets)
    what = f"groups of {CLUSTER_ITEMS} items" if args.clustered else f"n = {', '.join(map(str, args.sizes))}"
    print(
        f"settings: nominal {args.confidence:.0%}, {args.datasets} datasets per cell, {what}, bootstrap-t with "
        f"{args.resamples} resamples, seed {args.seed}; Monte Carlo s.e. of a coverage near the level {stderr:.3f}"
    )
    if not args.clustered:
        print(
            f"candidates: betting with {candidates.BETTING_ORDERS} orders, truncation {candidates.BETTING_TRUNCATION}; "
            f"rule with SATURATION_SHARE {candidates.SATURATION_SHARE}, "
            f"INTERIOR_MIN_OTHERS {candidates.INTERIOR_MIN_OTHERS}"
        )
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, Python {sys.version.split()[0]}\n")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=1000, help="datasets per cell (default 1000)")
    parser.add_argument(
        "--sizes",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=SIZES,
        help="comma-separated numbers of items (default 8,12,32; --clustered always has 40)",
    )
    parser.add_argument(
        "--families",
        type=lambda s: tuple(s.split(",")),
        default=tuple(FAMILIES),
        help=f"comma-separated families (default all: {','.join(FAMILIES)})",
    )
    parser.add_argument(
        "--resamples", type=int, default=9999, help="bootstrap resamples per interval (default 9999, as the plugin)"
    )
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clustered", action="store_true", help="items in groups of unequal size: cluster bootstrap-t against CR2-BM"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    return args


def main(argv: list[str] | None = None) -> list[Cell] | list[ClusterCell]:
    """Print the tables; return the measured cells (for tests)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    settings = dict(datasets=args.datasets, resamples=args.resamples, confidence=args.confidence, seed=args.seed)
    start = time.perf_counter()
    _header(args, argv)
    if args.clustered:
        cluster_cells = [measure_cluster_cell(m, d, **settings) for m in CLUSTER_MODELS for d in DESIGNS]
        print_cluster_table(cluster_cells)
        print(f"\n({time.perf_counter() - start:.0f} s)")
        return cluster_cells
    cells = [measure_cell(key, n, **settings) for key in args.families for n in args.sizes]
    print_tables(cells)
    binary = [FAMILIES[key].mean for key in args.families if FAMILIES[key].binary]
    if binary:
        print_exact_binary(args.sizes, binary, args.confidence)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return cells


if __name__ == "__main__":
    main()
