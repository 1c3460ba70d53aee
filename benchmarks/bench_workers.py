"""What ``-n`` costs and buys: a suite run serially and with xdist workers, wall and CPU time.

    python benchmarks/bench_workers.py                      # the demo suite, serial and -n 2
    python benchmarks/bench_workers.py --workers 2,4        # and -n 4 (where there are the cores)
    python benchmarks/bench_workers.py --suite tests/test_gating.py

Each configuration runs the suite once in a fresh process (the model is loaded in every run), in
the order given, with ``OMP_NUM_THREADS`` unset so that pytest-sway chooses each worker's threads.
``--every-core`` adds each worker count run the way it ran before workers got their share of the
cores (``OMP_NUM_THREADS`` set to all the cores, which pytest-sway leaves alone): the cost that
choice removes. Prints wall time, CPU time (user + system, all processes), the ratio of wall time to
the serial run's, and the largest resident memory of any one process (a worker's, with ``-n``).
Timings depend on how busy the machine is: compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from pytest_sway.workers import available_cpus

ROOT = Path(__file__).resolve().parents[1]


def run(suite: str, workers: int, threads: str | None) -> tuple[float, float, float, int]:
    """(wall s, CPU s, peak RSS MiB, exit status) of one pytest run in a child process."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    cmd = [sys.executable, "-m", "pytest", suite, "-q", "-p", "no:cacheprovider"]
    if workers:
        cmd += ["-n", str(workers)]
    # A fresh wrapper process per run: its children's peak memory is this run's alone.
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    *_, usage = done.stderr.strip().splitlines() or ["0 0 0"]
    cpu, rss = sum(map(float, usage.split()[:2])), float(usage.split()[2]) / 1024
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    return wall, cpu, rss, done.returncode


_WRAPPER = """
import resource, subprocess, sys
status = subprocess.run(sys.argv[1:]).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(u.ru_utime, u.ru_stime, u.ru_maxrss, file=sys.stderr)
sys.exit(status)
"""


def main(argv=None) -> list[tuple]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="conftest_examples", help="what pytest runs (default: the demo)")
    parser.add_argument("--workers", default="2", help="comma-separated worker counts besides serial (default 2)")
    parser.add_argument(
        "--every-core", action="store_true", help="also run each worker count with every core per worker"
    )
    args = parser.parse_args(argv)
    cpus = available_cpus()
    configs = [("serial", 0, None)]
    for n in (int(x) for x in args.workers.split(",")):
        configs.append((f"-n {n}", n, None))
        if args.every_core:
            configs.append((f"-n {n}, every core per worker", n, str(cpus)))
    print(f"suite {args.suite}; {cpus} cores; python {sys.version.split()[0]}")
    print("| run | wall (s) | CPU (s) | wall / serial | largest process (MiB) | exit |")
    print("|---|---|---|---|---|---|")
    rows, serial = [], None
    for name, workers, threads in configs:
        wall, cpu, rss, status = run(args.suite, workers, threads)
        serial = serial or wall
        rows.append((name, wall, cpu, wall / serial, rss, status))
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {wall / serial:.2f} | {rss:.0f} | {status} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
