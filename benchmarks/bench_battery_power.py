"""What the default battery's knowledge gate can show at its size: how often it fails a fine-tune
that truly loses a given number of accuracy points, on 600 questions, with its interval (Tango's
score interval for paired proportions) and its default margin ``above=-0.05``.

    python benchmarks/bench_battery_power.py [--discordant 0.08 0.2] [--runs 4000]

A simulated fine-tune answers each question differently from the base with probability
``discordant`` (the share of questions one got right and the other wrong: 48 of 600, 8%, for the
demo's support adapter on SmolLM2), and its true change in accuracy is ``change`` (negative: a
loss): it fixes (d + change) / 2 and breaks (d - change) / 2 of the questions. Each run draws
the counts, computes the gate's interval at 95% (the gate alone) and at 1 - 0.05/4 (Bonferroni
over the battery's four gates), and fails the gate when the low end is below the margin.
Printed: the share of runs failed, per true loss and discordance; the per-domain slices (100
questions) for comparison.
"""

from __future__ import annotations

import argparse

import numpy as np

from pytest_sway.stats.paired import tango_interval_counts
from pytest_sway.suites.spec import GATES


def fail_rate(n: int, discordant: float, change: float, margin: float, confidence: float, runs: int, rng) -> float:
    fixed_p, broken_p = (discordant + change) / 2, (discordant - change) / 2
    counts = rng.multinomial(n, [fixed_p, broken_p, 1 - fixed_p - broken_p], size=runs)
    failed = 0
    for fixed, broken, _ in counts:
        failed += tango_interval_counts(int(fixed), int(broken), n, confidence=confidence).low < margin
    return failed / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--discordant", type=float, nargs="*", default=[0.08, 0.2])
    parser.add_argument("--changes", type=float, nargs="*", default=[0.0, -0.01, -0.02, -0.03, -0.05, -0.07])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keyword, margin = GATES["knowledge"]
    assert keyword == "above"
    rng = np.random.default_rng(args.seed)
    print(f"knowledge gate: above={margin}; share of {args.runs} simulated runs that fail it")
    print(f"{'n':>4} {'discordant':>10} {'confidence':>10} " + " ".join(f"loss {0.0 - x:>5.2f}" for x in args.changes))
    for n in (600, 100):
        for d in args.discordant:
            for confidence in (0.95, 1 - 0.05 / 4):
                rates = [fail_rate(n, d, change, margin, confidence, args.runs, rng) for change in args.changes]
                print(f"{n:>4} {d:>10.2f} {confidence:>10.4f} " + " ".join(f"{r:>10.3f}" for r in rates), flush=True)


if __name__ == "__main__":
    main()
