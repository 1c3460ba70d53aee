"""Coverage of pytest-sway's bootstrap intervals for the mean, by simulation.

For each distribution and sample size, draw many datasets, compute a 95%
interval for the mean of each with every CI method, and count how often the
interval contains the true mean. A good method covers close to 0.95; a method
that covers 0.78 lets a gate pass on noise about one time in five.

    python benchmarks/coverage.py                 # the table in docs/intervals.md (a few minutes on 2 cores)
    python benchmarks/coverage.py --datasets 500  # a quick look
    python benchmarks/coverage.py --paired        # choice_accuracy's paired interval (docs/intervals.md)
    python benchmarks/coverage.py --clustered     # items in correlated groups: item vs cluster bootstrap

Every method sees the same datasets and the same resamples, so differences
between columns are differences between methods, not between draws.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from pytest_sway.stats.bootstrap import DEFAULT_METHOD, METHODS, batch_intervals

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


def main_clustered(args) -> None:
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


def main_paired(args) -> None:
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


def main(argv=None) -> None:
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
        help="items in correlated groups: the item bootstrap against the cluster bootstrap (groups=)",
    )
    args = parser.parse_args(argv)
    if args.clustered:
        main_clustered(args)
        return
    if args.paired:
        main_paired(args)
        return

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


if __name__ == "__main__":
    main()
