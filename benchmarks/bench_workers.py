"""What ``-n`` costs and buys: a suite run serially and with xdist workers, wall and CPU time, and
the forward passes each process made.

    python benchmarks/bench_workers.py                      # the demo suite, serial and -n 2
    python benchmarks/bench_workers.py --workers 2,4        # and -n 4 (where there are the cores)
    python benchmarks/bench_workers.py --dist load,loadfile # each -n with each xdist scheduling
    python benchmarks/bench_workers.py --suite tests/test_gating.py

Each configuration runs the suite once in a fresh process (the model is loaded in every run), in
the order given, with ``OMP_NUM_THREADS`` unset so that pytest-sway chooses each worker's threads.
``--every-core`` adds each worker count run the way it ran before workers got their share of the
cores (``OMP_NUM_THREADS`` set to all the cores, which pytest-sway leaves alone): the cost that
choice removes. ``--dist`` runs each worker count under each of xdist's schedulings named (``load``,
the default, hands tests to whichever worker is free; ``loadfile`` keeps each file's tests, which
share prompts, on one worker). Prints wall time, CPU time (user + system, all processes), the ratio
of wall time to the serial run's, the largest resident memory of any one process (a worker's, with
``-n``), and the sequences forwarded, read from the run's JSON report (``forward_passes``): per
process, and over all of them the base model's and the other variants' (fine-tuned, scaled, null).
Timings depend on how busy the machine is: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_sway.workers import available_cpus

ROOT = Path(__file__).resolve().parents[1]


def run(
    suite: str, workers: int, threads: str | None, dist: str | None = None
) -> tuple[float, float, float, int, dict | None]:
    """(wall s, CPU s, peak RSS MiB, exit status, the report's ``forward_passes``) of one pytest run
    in a child process."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pytest", suite, "-q", "-p", "no:cacheprovider", f"--sway-json={report}"]
        if workers:
            cmd += ["-n", str(workers)]
            if dist is not None:
                cmd += ["--dist", dist]
        # A fresh wrapper process per run: its children's peak memory is this run's alone.
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        forwards = json.loads(report.read_text())["forward_passes"] if report.exists() else None
    *_, usage = done.stderr.strip().splitlines() or ["0 0 0"]
    cpu, rss = sum(map(float, usage.split()[:2])), float(usage.split()[2]) / 1024
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    return wall, cpu, rss, done.returncode, forwards


def forwarded(passes: dict | None) -> tuple[str, str]:
    """Two cells: the sequences each process forwarded (``gw0 410 · gw1 395``), and over all of
    them the base model's and the other variants' (``base 300 · others 505``)."""
    if not passes:
        return "not counted", "not counted"
    per_process = " · ".join(f"{name} {sum(counts.values())}" for name, counts in passes.items() if name != "total")
    base = sum(n for key, n in passes["total"].items() if key.endswith("/base"))
    others = sum(passes["total"].values()) - base
    return per_process, f"base {base} · others {others}"


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
    parser.add_argument(
        "--dist",
        default="load",
        help="comma-separated xdist schedulings to run each worker count under, e.g. load,loadfile (default load)",
    )
    args = parser.parse_args(argv)
    cpus = available_cpus()
    configs: list[tuple[str, int, str | None, str | None]] = [("serial", 0, None, None)]
    for n in (int(x) for x in args.workers.split(",")):
        for dist in args.dist.split(","):
            configs.append((f"-n {n} --dist {dist}", n, None, dist))
            if args.every_core:
                configs.append((f"-n {n} --dist {dist}, every core per worker", n, str(cpus), dist))
    print(f"suite {args.suite}; {cpus} cores; python {sys.version.split()[0]}; load {os.getloadavg()[0]:.2f}")
    print(
        "| run | wall (s) | CPU (s) | wall / serial | largest process (MiB) "
        "| sequences forwarded per process | of which base · others | exit |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows, serial = [], None
    for name, workers, threads, dist in configs:
        wall, cpu, rss, status, passes = run(args.suite, workers, threads, dist)
        serial = serial or wall
        per_process, split = forwarded(passes)
        rows.append((name, wall, cpu, wall / serial, rss, per_process, split, status))
        print(
            f"| {name} | {wall:.1f} | {cpu:.1f} | {wall / serial:.2f} | {rss:.0f} | {per_process} | {split} "
            f"| {status} |",
            flush=True,
        )
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    return rows


if __name__ == "__main__":
    main()
