"""Coverage of pytest-sway's bootstrap intervals for the mean, by simulation.

For each distribution and sample size, draw many datasets, compute a 95%
interval for the mean of each with every CI method, and count how often the
interval contains the true mean. A good method covers close to 0.95; a method
that covers 0.78 lets a gate pass on noise about one time in five.

    python benchmarks/coverage.py                 # the table in docs/intervals.md (a few minutes on 2 cores)
    python benchmarks/coverage.py --datasets 500  # a quick look
    python benchmarks/coverage.py --paired        # choice_accuracy's paired interval (docs/intervals.md)
    python benchmarks/coverage.py --clustered     # items in correlated groups: item vs cluster bootstrap
    python benchmarks/coverage.py --shapes        # the library's default, the rule, on every shape of values
    python benchmarks/coverage.py --shapes --clustered   # the rule on items in groups of unequal size
    python benchmarks/coverage.py --shapes --families binary-0.97,rank-correlation --sizes 12

Every method sees the same datasets and the same resamples, so differences
between columns are differences between methods, not between draws.

``--shapes`` measures the library's default interval, the rule of
``pytest_sway.stats.shapes.choose_method`` (the exact all-equal bound, Clopper-Pearson,
the betting interval or the bootstrap-t, by the shape of the values), against each
alternative on 0/1 outcomes, a rank correlation, ordinal scores, all-equal values and
continuous values: the bootstrap-t clipped to the support (the default before issue
#22), percentile, BCa, Wilson and Clopper-Pearson for 0/1 values, and the betting
interval. Each cell's datasets depend only on the seed, the family and n, so a run on a
few families reproduces those rows of a full run. With ``--clustered``: 0/1 and
continuous values in groups, one group holding 30-90% of the items.
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
from statistics import NormalDist

import numpy as np
import scipy

from pytest_sway.stats.bootstrap import DEFAULT_METHOD, METHODS, Bootstrap, batch_intervals, check_groups
from pytest_sway.stats.methods import BETTING_ORDERS
from pytest_sway.stats.shapes import (
    BETTING_TRUNCATION,
    BOOTSTRAP,
    INTERIOR_MIN_OTHERS,
    MIN_EFFECTIVE_GROUPS,
    SATURATION_SHARE,
    betting_bounds01,
    bm_degrees_of_freedom,
    choose_method,
    clopper_pearson,
    cr2_t_bounds,
    effective_groups,
)

# name -> (sampler(rng, shape), true mean)
DISTRIBUTIONS = {
    "lognormal(0,1)": (lambda rng, shape: rng.lognormal(0.0, 1.0, shape), math.exp(0.5)),
    "lognormal(0,0.5)": (lambda rng, shape: rng.lognormal(0.0, 0.5, shape), math.exp(0.125)),
    "exponential(1)": (lambda rng, shape: rng.exponential(1.0, shape), 1.0),
    # Bounded in [0, ln 2] like a Jensen-Shannon divergence, and as skewed.
    "ln2*Beta(0.5,5)": (lambda rng, shape: math.log(2) * rng.beta(0.5, 5.0, shape), math.log(2) * 0.5 / 5.5),
    # Values piled up at a bound, like per-prompt rank correlations that are mostly exactly 1.
    "0.7*δ(1)+0.3*U(0,1)": (lambda rng, shape: np.where(rng.random(shape) < 0.7, 1.0, rng.random(shape)), 0.85),
}
SIZES = (4, 8, 16, 32, 64)


def coverage_table(*, datasets: int, resamples: int, confidence: float, seed: int):
    """Rows of (distribution, n, {method: coverage}, {method: median width})."""
    rows = []
    for d_index, (name, (sample, true_mean)) in enumerate(DISTRIBUTIONS.items()):
        for n in SIZES:
            rng = np.random.default_rng([seed, d_index, n])
            data = sample(rng, (datasets, n))
            bounds = batch_intervals(data, confidence=confidence, resamples=resamples, methods=METHODS, seed=seed + n)
            cover = {m: float(np.mean((b[:, 0] <= true_mean) & (true_mean <= b[:, 1]))) for m, b in bounds.items()}
            width = {m: float(np.median(b[:, 1] - b[:, 0])) for m, b in bounds.items()}
            rows.append((name, n, cover, width))
    return rows


# Paired 0/1 outcomes (base, fine-tune) on the same questions, as cell probabilities
# (both right, only the fine-tune right = fixed, only the base right = broken, both wrong):
# many concordant pairs, few discordant ones, as after a fine-tune.
PAIRED = {
    "no change": (0.60, 0.00, 0.00, 0.40),
    "rare flips, -1 pt": (0.70, 0.01, 0.02, 0.27),
    "flips both ways, -3 pts": (0.60, 0.02, 0.05, 0.33),
    "flips both ways, 0": (0.50, 0.05, 0.05, 0.40),
    "forgetting, -10 pts": (0.55, 0.00, 0.10, 0.35),
}
PAIRED_SIZES = (20, 50, 100)


def paired_coverage_table(*, datasets: int, resamples: int, confidence: float, seed: int):
    """Rows of (scenario, n, {method: coverage}, {method: median width}) for the change in accuracy:
    Tango's score interval (what choice_accuracy uses) against bootstraps of the {-1, 0, 1} values."""
    from pytest_sway.stats.paired import tango_interval_counts

    rows = []
    for s_index, (name, cells) in enumerate(PAIRED.items()):
        true = cells[1] - cells[2]
        for n in PAIRED_SIZES:
            rng = np.random.default_rng([seed, 1000 + s_index, n])
            counts = rng.multinomial(n, cells, size=datasets)  # (datasets, 4)
            fixed, broken = counts[:, 1], counts[:, 2]
            values = np.zeros((datasets, n))
            for row in range(datasets):
                values[row, : fixed[row]] = 1.0
                values[row, fixed[row] : fixed[row] + broken[row]] = -1.0
            bounds = batch_intervals(
                values, confidence=confidence, resamples=resamples, methods=("studentized", "percentile"), seed=seed + n
            )
            memo = {}
            tango = np.array(
                [
                    memo.setdefault((f, b), tuple(tango_interval_counts(int(f), int(b), n, confidence=confidence)))
                    for f, b in zip(fixed, broken)
                ]
            )
            # The plugin clips every interval to the values' support, [-1, 1] here.
            bounds = {"tango": tango, **{m: np.clip(b, -1.0, 1.0) for m, b in bounds.items()}}
            cover = {
                m: float(np.mean((b[:, 0] <= true + 1e-12) & (true - 1e-12 <= b[:, 1]))) for m, b in bounds.items()
            }
            width = {m: float(np.median(b[:, 1] - b[:, 0])) for m, b in bounds.items()}
            rows.append((name, n, cover, width))
    return rows


# Items in groups (paraphrases of one question, turns of one conversation): each
# value is the group's effect plus the item's own noise, with an intra-class
# correlation of 0.5 (half the variance is shared within a group).
# name -> (sizes(rng, groups) -> group sizes, group effects(rng, shape), item noise(rng, shape), true mean)
CLUSTERED = {
    "normal, ICC 0.5, 4 items per group": (
        lambda rng, g: np.full(g, 4),
        lambda rng, shape: rng.normal(0.0, 1.0, shape),
        lambda rng, shape: rng.normal(0.0, 1.0, shape),
        0.0,
    ),
    "skewed, ICC 0.5, 1-7 items per group": (
        lambda rng, g: rng.integers(1, 8, g),
        # Exponential(1) has variance 1 and mean 1: half the variance is the group's, and both are skewed.
        lambda rng, shape: rng.exponential(1.0, shape),
        lambda rng, shape: rng.exponential(1.0, shape),
        2.0,
    ),
}
CLUSTER_COUNTS = (5, 10, 20, 40)


def clustered_coverage_table(*, datasets: int, resamples: int, confidence: float, seed: int):
    """Rows of (scenario, groups, items, {method: coverage}, {method: median width}): the item
    bootstrap (values resampled one by one) against the cluster bootstrap (whole groups), same datasets."""
    rows = []
    for s_index, (name, (sizes_of, effect, noise, true_mean)) in enumerate(CLUSTERED.items()):
        for g in CLUSTER_COUNTS:
            rng = np.random.default_rng([seed, 2000 + s_index, g])
            sizes = sizes_of(rng, g)  # one layout per cell, shared by its datasets (as batch_intervals needs)
            groups = np.repeat(np.arange(g), sizes)
            data = effect(rng, (datasets, g))[:, groups] + noise(rng, (datasets, groups.size))
            bounds = {}
            item = batch_intervals(
                data, confidence=confidence, resamples=resamples, methods=("studentized",), seed=seed
            )
            bounds["item studentized"] = item["studentized"]
            cluster = batch_intervals(
                data, confidence=confidence, resamples=resamples, methods=METHODS, seed=seed, groups=groups
            )
            bounds.update({f"cluster {m}": b for m, b in cluster.items()})
            cover = {m: float(np.mean((b[:, 0] <= true_mean) & (true_mean <= b[:, 1]))) for m, b in bounds.items()}
            width = {m: float(np.median(b[:, 1] - b[:, 0])) for m, b in bounds.items()}
            rows.append((name, g, int(groups.size), cover, width))
    return rows


# -- every shape of per-item values: the rule against each alternative (--shapes) -------------------------

LN2 = math.log(2)
Sampler = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]


@dataclass(frozen=True)
class Family:
    """Per-item values: how to draw a (datasets x n) array of them, their true mean, their support,
    and their kind ("binary": 0/1, "discrete": few levels or piled on one, "continuous")."""

    title: str
    sample: Sampler
    mean: float
    support: tuple[float, float] | None
    kind: str


def _levels(levels, probabilities) -> tuple[Sampler, float]:
    levels, probabilities = np.asarray(levels, dtype=float), np.asarray(probabilities, dtype=float)
    return (lambda rng, shape: rng.choice(levels, size=shape, p=probabilities)), float(levels @ probabilities)


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
    out = {}
    for p in (0.5, 0.9, 0.97):
        out[f"binary-{p}"] = Family(
            f"0/1, p = {p}", lambda rng, shape, p=p: (rng.random(shape) < p).astype(float), p, (0.0, 1.0), "binary"
        )
    out["rank-correlation"] = Family(
        "Spearman ρ of 6 scales (85% 1, 10% 33/35, 5% shuffled)",
        _spearman,
        SPEARMAN_MONOTONE + SPEARMAN_ONE_SWAP * 33 / 35,
        (-1.0, 1.0),
        "discrete",
    )
    for key, title, levels, probabilities in (
        ("ordinal-5-top", "scores 1-5 (1%, 2%, 4%, 13%, 80%)", [1, 2, 3, 4, 5], [0.01, 0.02, 0.04, 0.13, 0.80]),
        ("ordinal-5-spread", "scores 1-5 (5%, 10%, 20%, 30%, 35%)", [1, 2, 3, 4, 5], [0.05, 0.10, 0.20, 0.30, 0.35]),
        ("ordinal-4", "scores 0, ⅓, ⅔, 1 (10%, 20%, 30%, 40%)", [0, 1 / 3, 2 / 3, 1], [0.1, 0.2, 0.3, 0.4]),
        ("ordinal-3-top", "scores 0, ½, 1 (5%, 15%, 80%)", [0, 0.5, 1], [0.05, 0.15, 0.80]),
        ("ordinal-3-middle", "scores 0, ½, 1 (25%, 50%, 25%)", [0, 0.5, 1], [0.25, 0.50, 0.25]),
    ):
        sample, mean = _levels(levels, probabilities)
        out[key] = Family(title, sample, mean, (float(levels[0]), float(levels[-1])), "discrete")
    out["all-equal"] = Family("all 1 on [-1, 1]", lambda rng, shape: np.ones(shape), 1.0, (-1.0, 1.0), "discrete")
    out["lognormal"] = Family(
        "lognormal(0,1), no support",
        lambda rng, shape: rng.lognormal(0.0, 1.0, shape),
        math.exp(0.5),
        None,
        "continuous",
    )
    out["beta"] = Family(
        "beta(2,5) on [0, 1]", lambda rng, shape: rng.beta(2.0, 5.0, shape), 2 / 7, (0.0, 1.0), "continuous"
    )
    out["js-beta"] = Family(
        "ln2·beta(0.7,6) on [0, ln 2]",
        lambda rng, shape: LN2 * rng.beta(0.7, 6.0, shape),
        LN2 * 0.7 / 6.7,
        (0.0, LN2),
        "continuous",
    )
    return out


FAMILIES = _families()
SHAPE_SIZES = (8, 12, 32)
RULE = "rule (default)"
#: The interval before issue #22: the studentized bootstrap clipped to the support.
BOOTSTRAP_T = "bootstrap-t"
SHAPE_METHODS = (RULE, BOOTSTRAP_T, "percentile", "bca", "Wilson", "Clopper-Pearson", "betting")
#: Issue #22's goals for the rule at nominal 95%: discrete and saturated values cover at least this
#: from 12 items on, and at least the second at 8; continuous values cover at least the third at 8
#: items, with a mean width at most the last times the bootstrap-t's.
GOAL_DISCRETE, GOAL_DISCRETE_8, GOAL_CONTINUOUS_8, GOAL_WIDTH_RATIO = 0.93, 0.90, 0.88, 1.25


def wilson(successes, n: int, *, confidence: float) -> np.ndarray:
    """Wilson's score interval for a binomial rate, for each count: (..., 2). An alternative, not
    the library's (which uses Clopper-Pearson for 0/1 values): compared here, its exact coverage
    falls to 0.84 at rates near 0.98."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = np.asarray(successes, dtype=np.float64) / n
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)),
    )
    return np.clip(np.stack([centre - half, centre + half], axis=-1), 0.0, 1.0)


def rule_bounds(
    data: np.ndarray,
    support,
    studentized: np.ndarray,
    *,
    confidence: float,
    resamples: int,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The library's default interval (``Bootstrap.estimate``) for the mean of each row of ``data``,
    and the method it reports for each row.

    Items in ``groups``: every row is ``Bootstrap.estimate``'s own answer. Independent items: a row
    the rule (``choose_method``) sends to a bounded method is too; a row it leaves to the bootstrap
    gets ``studentized``, the library's bootstrap-t batched over all rows by ``batch_intervals`` (one
    call instead of one per row: the same method on other resamples; one row with the same seed
    gives estimate's bounds exactly), clipped to the support as estimate does.
    """
    low, high = support or (-math.inf, math.inf)
    bounds = np.clip(np.asarray(studentized, dtype=np.float64), low, high)
    library = Bootstrap(confidence=confidence, resamples=resamples, seed=seed)
    methods = np.full(len(data), library.method, dtype=object)
    for i, row in enumerate(data):
        if groups is not None or choose_method(row, support, confidence=confidence) != BOOTSTRAP:
            chosen = library.estimate(row, support=support, groups=groups)
            bounds[i], methods[i] = chosen.ci, chosen.method
    return bounds, methods


@dataclass(frozen=True)
class Stat:
    """One method on one cell's datasets."""

    coverage: float  # share of intervals that contain the true mean
    width: float  # mean width
    zero_width: float  # share of intervals of width 0


@dataclass(frozen=True)
class ShapeCell:
    """One family at one n: each method's Stat (methods that do not apply are absent), and the
    share of datasets on each method the rule chose."""

    family: str
    n: int
    stats: dict[str, Stat]
    choices: dict[str, float]


def _stat(bounds: np.ndarray, true_mean: float) -> Stat:
    eps = 1e-12 * max(1.0, abs(true_mean))  # a bound computed as the true mean, up to rounding, covers it
    covers = (bounds[:, 0] <= true_mean + eps) & (true_mean - eps <= bounds[:, 1])
    width = bounds[:, 1] - bounds[:, 0]
    return Stat(float(covers.mean()), float(width.mean()), float(np.mean(width <= 0)))


def _shares(methods: np.ndarray) -> dict[str, float]:
    names, counts = np.unique(methods.astype(str), return_counts=True)
    return {str(m): float(c) / methods.size for m, c in zip(names, counts)}


def measure_shape_cell(key: str, n: int, *, datasets: int, resamples: int, confidence: float, seed: int) -> ShapeCell:
    """The rule and every alternative that applies to family ``key``, on the same ``datasets``
    datasets of ``n`` values (which depend only on the seed, the family and n)."""
    family = FAMILIES[key]
    rng = np.random.default_rng([seed, zlib.crc32(key.encode()), n])
    data = family.sample(rng, (datasets, n)).astype(np.float64)
    low, high = family.support or (-math.inf, math.inf)
    try:
        boot = batch_intervals(data, confidence=confidence, resamples=resamples, methods=METHODS, seed=seed)
    except ValueError:  # a BCa level too far out for the resamples (few resamples, discrete values): no BCa here
        boot = batch_intervals(
            data, confidence=confidence, resamples=resamples, methods=("studentized", "percentile"), seed=seed
        )
    bounds = {}
    bounds[RULE], methods = rule_bounds(
        data, family.support, boot["studentized"], confidence=confidence, resamples=resamples, seed=seed
    )
    # The bootstraps as before issue #22: clipped to the support, whatever the values' shape.
    bounds[BOOTSTRAP_T] = np.clip(boot["studentized"], low, high)
    bounds.update({m: np.clip(boot[m], low, high) for m in ("percentile", "bca") if m in boot})
    if family.kind == "binary":
        successes = (data == 1.0).sum(axis=1)
        bounds["Wilson"] = wilson(successes, n, confidence=confidence)
        bounds["Clopper-Pearson"] = clopper_pearson(successes, n, confidence=confidence)
    if family.support is not None:
        x = (data - low) / (high - low)
        bounds["betting"] = low + (high - low) * betting_bounds01(x, confidence=confidence, seed=seed)
    return ShapeCell(key, n, {m: _stat(b, family.mean) for m, b in bounds.items()}, _shares(methods))


def shape_goal_misses(cells: list[ShapeCell]) -> list[str]:
    """Each cell where the rule misses a goal of issue #22 (``GOAL_*``), in words."""
    misses = []
    for c in cells:
        family, rule, before = FAMILIES[c.family], c.stats[RULE], c.stats[BOOTSTRAP_T]
        where = f"{family.title}, n = {c.n}"
        if family.kind == "continuous":
            if c.n <= 8 and rule.coverage < GOAL_CONTINUOUS_8:
                misses.append(f"{where}: coverage {rule.coverage:.3f} < {GOAL_CONTINUOUS_8}")
            if rule.width > GOAL_WIDTH_RATIO * before.width:
                misses.append(
                    f"{where}: width {rule.width / before.width:.2f}× the bootstrap-t's > {GOAL_WIDTH_RATIO}×"
                )
        else:
            goal = GOAL_DISCRETE_8 if c.n < 12 else GOAL_DISCRETE
            if rule.coverage < goal:
                misses.append(f"{where}: coverage {rule.coverage:.3f} < {goal}")
    return misses


def _ratio(width: float, before: float) -> str:
    if before > 0:
        return f"{width / before:.2f}×"
    return "∞" if width > 0 else "1.00×"


def _share(share: float) -> str:
    return f"{share:.0%}" if share >= 0.01 else "<1%"


def _absent(method: str) -> str:
    """What a table shows for a method missing from a cell: it does not apply, or (BCa) its levels
    lay beyond what the resamples resolve on some dataset (``batch_intervals`` refuses)."""
    return "unresolved" if method == "bca" else "—"


def print_shape_tables(cells: list[ShapeCell]) -> None:
    print("## Coverage\n")
    print("| values | n | " + " | ".join(SHAPE_METHODS) + " | rule chose |")
    print("|---|---|" + "---|" * (len(SHAPE_METHODS) + 1))
    for cell in cells:
        shown = " | ".join(f"{cell.stats[m].coverage:.3f}" if m in cell.stats else _absent(m) for m in SHAPE_METHODS)
        chose = ", ".join(f"{m} {_share(s)}" for m, s in cell.choices.items())
        print(f"| {FAMILIES[cell.family].title} | {cell.n} | {shown} | {chose} |")
    print(f"\n## Mean width (× the {BOOTSTRAP_T}'s)\n")
    others = [m for m in SHAPE_METHODS if m != BOOTSTRAP_T]
    print(f"| values | n | {BOOTSTRAP_T} | its zero-width share | " + " | ".join(others) + " |")
    print("|---|---|---|---|" + "---|" * len(others))
    for cell in cells:
        before = cell.stats[BOOTSTRAP_T]
        shown = " | ".join(
            f"{cell.stats[m].width:.3g} ({_ratio(cell.stats[m].width, before.width)})"
            if m in cell.stats
            else _absent(m)
            for m in others
        )
        print(
            f"| {FAMILIES[cell.family].title} | {cell.n} | {before.width:.3g} | {_share(before.zero_width)} | {shown} |"
        )


def print_exact_binary(sizes, ps, confidence: float) -> None:
    """Exact coverage of the rule on 0/1 values (Clopper-Pearson, and the all-equal bound, which is
    Clopper-Pearson's at 0 or n successes) and of Wilson's interval, by binomial sums."""
    from scipy.stats import binom

    print("\n## 0/1 values: exact coverage (binomial sums, no simulation)\n")
    print("| n | p | rule (Clopper-Pearson) | Wilson | mean width: rule / Wilson |")
    print("|---|---|---|---|---|")
    grid = np.linspace(0.001, 0.999, 999)
    for n in sizes:
        k = np.arange(n + 1)
        rule, alternative = clopper_pearson(k, n, confidence=confidence), wilson(k, n, confidence=confidence)

        def coverage(bounds, p):
            return float(binom.pmf(k, n, p)[(bounds[:, 0] <= p) & (p <= bounds[:, 1])].sum())

        for p in ps:
            pk = binom.pmf(k, n, p)
            widths = f"{pk @ (rule[:, 1] - rule[:, 0]):.3f} / {pk @ (alternative[:, 1] - alternative[:, 0]):.3f}"
            print(f"| {n} | {p} | {coverage(rule, p):.3f} | {coverage(alternative, p):.3f} | {widths} |")
        lowest = []
        for bounds in (rule, alternative):
            by_p = np.array([coverage(bounds, p) for p in grid])
            lowest.append(f"{by_p.min():.3f} (p = {grid[by_p.argmin()]:.3f})")
        print(f"| {n} | lowest over p in [0.001, 0.999] | {lowest[0]} | {lowest[1]} | |")


# -- the rule on items in groups of unequal size (--shapes --clustered) -----------------------------------

#: 40 items: one group holding 30-90% of them beside groups of one item, and equal groups.
UNEQUAL_ITEMS = 40
DESIGNS = {
    "one group of 30% + 28 singletons": [12] + [1] * 28,
    "one group of 60% + 16 singletons": [24] + [1] * 16,
    "one group of 75% + 10 singletons": [30] + [1] * 10,
    "one group of 90% + 4 singletons": [36] + [1] * 4,
    "10 groups of 4": [4] * 10,
}


def _beta_binomial(p: float) -> Callable:
    # A group's rate is Beta(p, 1 - p): mean p, and an intra-class correlation of 1 / (1 + 1) = 0.5.
    return lambda rng, g, codes, k: (rng.random((k, codes.size)) < rng.beta(p, 1 - p, (k, g))[:, codes]).astype(float)


def _effect_plus_noise(draw: Sampler) -> Callable:
    # A value is its group's effect plus its own noise, with equal variances: intra-class correlation 0.5.
    return lambda rng, g, codes, k: draw(rng, (k, g))[:, codes] + draw(rng, (k, codes.size))


#: name -> (draw(rng, groups, codes, datasets), true mean, support)
UNEQUAL_MODELS: dict[str, tuple[Callable, float, tuple[float, float] | None]] = {
    "normal": (_effect_plus_noise(lambda rng, shape: rng.normal(0.0, 1.0, shape)), 0.0, None),
    "skewed (exponential)": (_effect_plus_noise(lambda rng, shape: rng.exponential(1.0, shape)), 2.0, None),
    "0/1, p = 0.5": (_beta_binomial(0.5), 0.5, (0.0, 1.0)),
    "0/1, p = 0.9": (_beta_binomial(0.9), 0.9, (0.0, 1.0)),
}
GROUP_METHODS = (RULE, "cluster bootstrap-t", "CR2-BM t", "betting on group means")


@dataclass(frozen=True)
class GroupCell:
    model: str
    design: str
    groups: int
    effective_groups: float  # Kish
    degrees_of_freedom: float  # Bell-McCaffrey
    refused: str | None  # the library's refusal of this design, or None
    stats: dict[str, Stat]  # the rule is absent where refused
    choices: dict[str, float]


def measure_group_cell(
    model: str, design: str, *, datasets: int, resamples: int, confidence: float, seed: int
) -> GroupCell:
    draw, true_mean, support = UNEQUAL_MODELS[model]
    low, high = support or (-math.inf, math.inf)
    sizes = np.array(DESIGNS[design])
    codes = np.repeat(np.arange(sizes.size), sizes)
    rng = np.random.default_rng([seed, zlib.crc32(model.encode()), zlib.crc32(design.encode())])
    data = draw(rng, sizes.size, codes, datasets)
    boot = batch_intervals(
        data, confidence=confidence, resamples=resamples, methods=("studentized",), seed=seed, groups=codes
    )["studentized"]
    bounds = {
        "cluster bootstrap-t": np.clip(boot, low, high),
        "CR2-BM t": np.clip(cr2_t_bounds(data, codes, confidence=confidence), low, high),
    }
    if support is not None:
        means = np.stack([np.bincount(codes, weights=row) for row in (data - low) / (high - low)]) / sizes
        bets = betting_bounds01(means, confidence=confidence, seed=seed, weights=sizes / sizes.max())
        bounds["betting on group means"] = low + (high - low) * bets
    refused, choices = None, {}
    try:
        check_groups(codes, codes.size)
    except ValueError as error:
        refused = str(error)
    if refused is None:
        bounds[RULE], methods = rule_bounds(
            data, support, boot, confidence=confidence, resamples=resamples, seed=seed, groups=codes
        )
        choices = _shares(methods)
    return GroupCell(
        model,
        design,
        int(sizes.size),
        effective_groups(sizes),
        bm_degrees_of_freedom(sizes),
        refused,
        {m: _stat(b, true_mean) for m, b in bounds.items()},
        choices,
    )


def print_group_table(cells: list[GroupCell]) -> None:
    print(f"## {UNEQUAL_ITEMS} items in groups, intra-class correlation 0.5: coverage\n")
    widths = " / ".join(GROUP_METHODS)
    print(
        "| values | design | G | G_eff (Kish) | BM df | "
        + " | ".join(GROUP_METHODS)
        + f" | rule chose | mean width: {widths} |"
    )
    print("|---|---|---|---|---|" + "---|" * (len(GROUP_METHODS) + 2))
    for c in cells:
        refused = f"refused (G_eff < {MIN_EFFECTIVE_GROUPS:g})"
        cover = " | ".join(
            f"{c.stats[m].coverage:.3f}" if m in c.stats else (refused if m == RULE else "—") for m in GROUP_METHODS
        )
        width = " / ".join(f"{c.stats[m].width:.3g}" if m in c.stats else "—" for m in GROUP_METHODS)
        chose = ", ".join(f"{m} {_share(s)}" for m, s in c.choices.items()) or "—"
        print(
            f"| {c.model} | {c.design} | {c.groups} | {c.effective_groups:.2f} | {c.degrees_of_freedom:.2f} | "
            f"{cover} | {chose} | {width} |"
        )


def main_shapes(args, argv: list[str]) -> list[ShapeCell] | list[GroupCell]:
    start = time.perf_counter()
    settings = dict(datasets=args.datasets, resamples=args.resamples, confidence=args.confidence, seed=args.seed)
    stderr = math.sqrt(args.confidence * (1 - args.confidence) / args.datasets)
    what = f"groups of {UNEQUAL_ITEMS} items" if args.clustered else f"n = {', '.join(map(str, args.sizes))}"
    print("# The rule against each alternative, by shape of values: coverage and width\n")
    print(f"command: python benchmarks/coverage.py {shlex.join(argv)}".rstrip())
    print(
        f"settings: nominal {args.confidence:.0%}, {args.datasets} datasets per cell, {what}, bootstraps with "
        f"{args.resamples} resamples, seed {args.seed}; Monte Carlo s.e. of a coverage near the level {stderr:.3f}"
    )
    print(
        f"the rule: SATURATION_SHARE {SATURATION_SHARE}, INTERIOR_MIN_OTHERS {INTERIOR_MIN_OTHERS}; betting with "
        f"{BETTING_ORDERS} orders, truncation {BETTING_TRUNCATION}; groups refused below {MIN_EFFECTIVE_GROUPS:g} "
        "effective groups"
    )
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, Python {sys.version.split()[0]}\n")
    if args.clustered:
        group_cells = [measure_group_cell(m, d, **settings) for m in UNEQUAL_MODELS for d in DESIGNS]
        print_group_table(group_cells)
        print(f"\n({time.perf_counter() - start:.0f} s)")
        return group_cells
    cells = [measure_shape_cell(key, n, **settings) for key in args.families for n in args.sizes]
    print_shape_tables(cells)
    binary = [FAMILIES[key].mean for key in args.families if FAMILIES[key].kind == "binary"]
    if binary:
        print_exact_binary(args.sizes, binary, args.confidence)
    misses = shape_goal_misses(cells)
    print("\n## Issue #22's goals for the rule\n")
    print("\n".join(f"- missed: {m}" for m in misses) if misses else "- all met")
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return cells


def main_clustered(args) -> list:
    start = time.perf_counter()
    rows = clustered_coverage_table(
        datasets=args.datasets, resamples=args.resamples, confidence=args.confidence, seed=args.seed
    )
    stderr = math.sqrt(args.confidence * (1 - args.confidence) / args.datasets)
    print(
        f"Coverage of nominal {args.confidence:.0%} intervals for the mean of items in correlated groups: "
        f"{args.datasets} datasets per cell, {args.resamples} resamples, seed {args.seed} "
        f"(Monte Carlo s.e. about {stderr:.3f})"
    )
    print()
    methods = ["item studentized"] + [f"cluster {m}" for m in METHODS]
    print("| items | groups | n | " + " | ".join(methods) + " | median width (item / cluster studentized) |")
    print("|" + "---|" * (len(methods) + 4))
    for name, g, n, cover, width in rows:
        cells = " | ".join(f"{cover[m]:.3f}" for m in methods)
        print(
            f"| {name} | {g} | {n} | {cells} | {width['item studentized']:.3g} / {width['cluster studentized']:.3g} |"
        )
    print()
    print(f"({time.perf_counter() - start:.0f} s)")
    return rows


def main_paired(args) -> list:
    start = time.perf_counter()
    rows = paired_coverage_table(
        datasets=args.datasets, resamples=args.resamples, confidence=args.confidence, seed=args.seed
    )
    print(
        f"Coverage of nominal {args.confidence:.0%} intervals for a paired change in accuracy: {args.datasets} "
        f"datasets per cell, bootstraps with {args.resamples} resamples, seed {args.seed}"
    )
    print()
    print(
        "| scenario (both right, fixed, broken, both wrong) | n | tango | studentized | percentile | "
        "median width (tango / studentized) |"
    )
    print("|---|---|---|---|---|---|")
    for name, n, cover, width in rows:
        cells = ", ".join(f"{x:g}" for x in PAIRED[name])
        print(
            f"| {name} ({cells}) | {n} | {cover['tango']:.3f} | {cover['studentized']:.3f} | "
            f"{cover['percentile']:.3f} | {width['tango']:.3g} / {width['studentized']:.3g} |"
        )
    print()
    print(f"({time.perf_counter() - start:.0f} s)")
    return rows


def main(argv: list[str] | None = None):
    """Print the table of the mode the arguments pick; return what it measured (for tests)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=2000, help="datasets per cell (default 2000)")
    parser.add_argument(
        "--resamples", type=int, default=9999, help="bootstrap resamples per interval (default 9999, as in the plugin)"
    )
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--paired",
        action="store_true",
        help="the paired-accuracy table instead (choice_accuracy's interval against bootstraps)",
    )
    parser.add_argument(
        "--clustered",
        action="store_true",
        help="items in correlated groups: the item bootstrap against the cluster bootstrap (groups=); "
        "with --shapes, the rule on groups of unequal size",
    )
    parser.add_argument(
        "--shapes",
        action="store_true",
        help="the library's default interval (the rule) against each alternative, by shape of values",
    )
    parser.add_argument(
        "--families",
        type=lambda s: tuple(s.split(",")),
        default=tuple(FAMILIES),
        help=f"with --shapes: comma-separated families (default all: {','.join(FAMILIES)})",
    )
    parser.add_argument(
        "--sizes",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=SHAPE_SIZES,
        help="with --shapes: comma-separated numbers of items (default 8,12,32)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    if args.shapes:
        return main_shapes(args, argv)
    if args.clustered:
        return main_clustered(args)
    if args.paired:
        return main_paired(args)

    start = time.perf_counter()
    rows = coverage_table(datasets=args.datasets, resamples=args.resamples, confidence=args.confidence, seed=args.seed)
    stderr = math.sqrt(args.confidence * (1 - args.confidence) / args.datasets)
    print(
        f"Coverage of nominal {args.confidence:.0%} intervals for the mean: {args.datasets} datasets per cell, "
        f"{args.resamples} resamples, seed {args.seed} (Monte Carlo s.e. about {stderr:.3f}); "
        f"default method: {DEFAULT_METHOD}"
    )
    print()
    header = "| distribution | n | " + " | ".join(METHODS) + " | median width (" + DEFAULT_METHOD + " / percentile) |"
    print(header)
    print("|" + "---|" * (len(METHODS) + 3))
    for name, n, cover, width in rows:
        cells = " | ".join(f"{cover[m]:.3f}" for m in METHODS)
        print(f"| {name} | {n} | {cells} | {width[DEFAULT_METHOD]:.3g} / {width['percentile']:.3g} |")
    print()
    print(f"({time.perf_counter() - start:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
