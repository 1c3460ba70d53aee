"""Coverage of pytest-sway's bootstrap intervals for the mean, by simulation.

For each distribution and sample size, draw many datasets, compute a 95%
interval for the mean of each with every CI method, and count how often the
interval contains the true mean. A good method covers close to 0.95; a method
that covers 0.78 lets a gate pass on noise about one time in five.

    python benchmarks/coverage.py                 # the README table (a few minutes on 2 cores)
    python benchmarks/coverage.py --datasets 500  # a quick look

Every method sees the same datasets and the same resamples, so differences
between columns are differences between methods, not between draws.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from pytest_sway.stats import DEFAULT_METHOD, METHODS, batch_intervals

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
            bounds = batch_intervals(
                data, confidence=confidence, resamples=resamples, methods=METHODS, seed=seed + n
            )
            cover = {m: float(np.mean((b[:, 0] <= true_mean) & (true_mean <= b[:, 1]))) for m, b in bounds.items()}
            width = {m: float(np.median(b[:, 1] - b[:, 0])) for m, b in bounds.items()}
            rows.append((name, n, cover, width))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=2000, help="datasets per cell (default 2000)")
    parser.add_argument("--resamples", type=int, default=9999, help="bootstrap resamples per interval (default 9999, as in the plugin)")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    rows = coverage_table(
        datasets=args.datasets, resamples=args.resamples, confidence=args.confidence, seed=args.seed
    )
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
