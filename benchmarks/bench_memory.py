"""Peak memory against the number of prompts, in minutes rather than hours.

    python benchmarks/bench_memory.py                          # the suite at 256, 1024, 4096 prompts
    python benchmarks/bench_memory.py --suite divergences --repeat 3
    python benchmarks/bench_memory.py --code /path/to/older/checkout --sizes 256,4096

A random 2-layer Llama with SmolLM2's vocabulary (49,152: the memory in question
is per vocabulary row, not per layer) and a random LoRA adapter, built on the CPU
by bench_gpu.py's helpers; prompts of 12 tokens. Each size runs in a fresh
process: warm up on other prompts, forget them, reset the peak (clear_refs), run
the suite, and print the peak resident memory over the memory before the suite,
what is still resident after, and the time per prompt.

Suites (``--suite``):
  full         the issue's suite through run_probe (bootstraps included): delta_kl
               js and kl, null_contrast with 2 seeds, adapter_ablation at scales 0, 0.5, 1
  pytest       the same four probes as marked tests run by pytest (pytest_suite.py: pytest.main
               in the measured process) with the JSON, HTML, Markdown and JUnit reports: what
               a session keeps per test until its reports are written counts here
  divergences  the backend alone: delta_kl's js and kl, no bootstrap
  bootstrap    bootstrap_ci alone (studentized and BCa) on as many values

``--tokenizer smollm2`` uses SmolLM2's own tokenizer on bench_probes.py's prompts (the
tokenizer's share of the memory); ``--python-heap`` also prints what Python objects and numpy
arrays hold after the suite (tracemalloc: the memo's size; the peaks then include tracemalloc's own).

The backend batches as it does on this machine (on the CPU: right-padded canonical
widths); ``--batching gpu`` uses the GPU's left-padded batches instead.
``--code`` runs another checkout's pytest_sway for comparison; ``--env`` adds
environment variables to the measured processes (e.g. MALLOC_MMAP_THRESHOLD_=65536).
bench_probes.py --parts scale runs the suite on SmolLM2 itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ONE = r"""
import gc, json, os, sys, time, tracemalloc
code, n, suite, batching, tokenizer = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
sys.path.insert(0, code)
import pytest_sway  # noqa: E402  (this checkout's, before bench_gpu puts its own first)
sys.path.insert(1, {here!r})
import numpy as np, torch, bench_gpu as g
from pytest_sway import run_probe
from pytest_sway.stats.bootstrap import bootstrap_ci

VOCAB = 49152
g.SHAPES["wide"] = dict(g.SHAPES["tiny"], vocab_size=VOCAB)


def mib(field):
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(field + ":"))) / 1024


def suite_full(prompts):
    run_probe("delta_kl", backend, prompts=prompts, divergence="js")
    run_probe("delta_kl", backend, prompts=prompts, divergence="kl")
    run_probe("null_contrast", backend, prompts=prompts, seeds=2)
    run_probe("adapter_ablation", backend, prompts=prompts, scales=[0, 0.5, 1])


def suite_pytest(prompts):
    import pytest_suite

    pytest_suite.run(backend, prompts)


def suite_divergences(prompts):
    backend.divergences(prompts, divergence="js")
    backend.divergences(prompts, divergence="kl")


def suite_bootstrap(values):
    for method in ("studentized", "bca"):
        bootstrap_ci(values, method=method, seed=1)


if suite == "bootstrap":
    run = suite_bootstrap
    suite_bootstrap(np.random.default_rng(1).gamma(2.0, size=64))
    work = np.random.default_rng(0).gamma(2.0, size=n)
else:
    if tokenizer == "smollm2":  # SmolLM2's own tokenizer, on bench_probes.py's prompts (about 12 tokens)
        from transformers import AutoTokenizer
        from bench_probes import make_prompts
        from pytest_sway.backends.builtin_models import ensure_smollm2

        words = AutoTokenizer.from_pretrained(ensure_smollm2())
        warm = ["Warm-up prompt number %d says" % i for i in range(16)]
        work = [p.replace(" and I already tried the help page", "") for p in make_prompts(n)]
    else:
        words = g.WordTokenizer()
        warm = g.make_prompts(16, VOCAB, seed=1)
        work = [" ".join(p.split()[:12]) for p in g.make_prompts(n, VOCAB)]
    backend = g.make_backend(g.build_model("wide", "cpu", torch.float32, 0.05), words)
    backend._planner.exact_shapes = batching == "cpu"
    run = {{"full": suite_full, "pytest": suite_pytest, "divergences": suite_divergences}}[suite]
    # Every code path once, on other prompts (the pytest session closes the backend at its end:
    # the pytest suite is warmed up through run_probe).
    (suite_full if run is suite_pytest else run)(warm)
    backend._memo.clear()
python_heap = os.environ.get("SWAY_BENCH_TRACEMALLOC") == "1"
if python_heap:
    gc.collect()
    tracemalloc.start()
before = mib("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts from what is resident now
start = time.perf_counter()
run(work)
seconds = time.perf_counter() - start
result = dict(n=n, peak_mib=mib("VmHWM") - before, end_mib=mib("VmRSS") - before, seconds=seconds)
if python_heap:
    gc.collect()
    result["python_heap_mib"] = tracemalloc.get_traced_memory()[0] / 2**20
print(json.dumps(result))
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024,4096")
    parser.add_argument("--suite", choices=("full", "pytest", "divergences", "bootstrap"), default="full")
    parser.add_argument("--batching", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per size")
    parser.add_argument("--code", default=str(HERE.parent), help="checkout whose pytest_sway to measure")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the measured processes")
    parser.add_argument(
        "--tokenizer",
        choices=("words", "smollm2"),
        default="words",
        help="words: t123 is token 123, 12 random ids per prompt; smollm2: SmolLM2's tokenizer on bench_probes.py's prompts",
    )
    parser.add_argument(
        "--python-heap",
        action="store_true",
        help="also report what Python objects and numpy arrays hold after the suite (tracemalloc; slower)",
    )
    args = parser.parse_args(argv)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        **dict(item.split("=", 1) for item in args.env),
        "SWAY_BENCH_TRACEMALLOC": "1" if args.python_heap else "0",
    }
    env.pop("PYTHONPATH", None)
    print(
        f"suite {args.suite}, {args.batching} batching, pytest_sway from {args.code}"
        + (f", {' '.join(args.env)}" if args.env else "")
    )
    heap = " Python heap after (MiB) |" if args.python_heap else ""
    print(f"| prompts | peak over start (MiB) | resident after (MiB) | ms per prompt |{heap}")
    print("|---|---|---|---|" + ("---|" if heap else ""), flush=True)
    peaks: dict[int, list[float]] = {}
    for n in (int(x) for x in args.sizes.split(",")):
        for _ in range(args.repeat):
            done = subprocess.run(
                [sys.executable, "-c", ONE.format(here=str(HERE)), args.code, str(n), args.suite, args.batching]
                + [args.tokenizer],
                capture_output=True,
                text=True,
                env=env,
            )
            if done.returncode:
                raise SystemExit(f"{n} prompts failed:\n{done.stderr[-3000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            peaks.setdefault(n, []).append(r["peak_mib"])
            row = f"| {n} | {r['peak_mib']:.0f} | {r['end_mib']:.0f} | {1000 * r['seconds'] / n:.2f} |"
            if "python_heap_mib" in r:
                row += f" {r['python_heap_mib']:.1f} |"
            print(row, flush=True)
    low, high = min(peaks), max(peaks)
    if high != low:
        growth = max(peaks[high]) - min(peaks[low])
        print(f"peak growth from {low} to {high} prompts, worst case over the runs: {growth:.0f} MiB")


if __name__ == "__main__":
    main()
