"""The backend's own memory against the number of prompts, in seconds rather than hours.

    python benchmarks/bench_memory.py                       # 256, 1024, 4096 prompts
    python benchmarks/bench_memory.py --code /path/to/older/checkout --sizes 256,1024

A random 2-layer Llama with SmolLM2's vocabulary (49,152; the memory in question
is per vocabulary row, not per layer) and a random LoRA adapter, built by
bench_gpu.py's helpers on the CPU; prompts of 12 tokens. Each size runs in a
fresh process: warm up on other prompts, reset the peak (clear_refs), ask
delta_kl's js and kl, and print the peak resident memory over the memory
before the questions, and what is still resident after. No bootstrap: this
isolates the backend (bench_probes.py --parts scale runs whole probes on SmolLM2).
``--code`` runs another checkout's pytest_sway (e.g. one before the memo kept
numbers rather than rows) for comparison; ``--env`` adds environment variables,
e.g. MALLOC_MMAP_THRESHOLD_=65536 to take glibc's heap out of the picture.
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
import json, sys, time
code, n = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, code)
import pytest_sway  # noqa: E402  (this checkout's, before bench_gpu puts its own first)
sys.path.insert(1, {here!r})
import torch, bench_gpu as g
from pytest_sway import Variant
g.SHAPES["wide"] = dict(g.SHAPES["tiny"], vocab_size=49152)


def mib(field):
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(field + ":"))) / 1024


backend = g.make_backend(g.build_model("wide", "cpu", torch.float32, 0.05), g.WordTokenizer())
warm = g.make_prompts(16, 49152, seed=1)
backend.divergences(warm, divergence="js")
backend._memo.clear()
prompts = [" ".join(p.split()[:12]) for p in g.make_prompts(n, 49152)]
before = mib("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
start = time.perf_counter()
backend.divergences(prompts, divergence="js")
backend.divergences(prompts, divergence="kl")
print(json.dumps(dict(n=n, peak_mib=mib("VmHWM") - before, end_mib=mib("VmRSS") - before,
                      seconds=time.perf_counter() - start)))
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024,4096")
    parser.add_argument("--code", default=str(HERE.parent), help="checkout whose pytest_sway to measure")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the measured processes")
    args = parser.parse_args(argv)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        **dict(item.split("=", 1) for item in args.env),
    }
    env.pop("PYTHONPATH", None)
    print(f"pytest_sway from {args.code}" + (f", {' '.join(args.env)}" if args.env else ""))
    print("| prompts | peak over start (MiB) | resident after (MiB) | seconds |")
    print("|---|---|---|---|", flush=True)
    for n in (int(x) for x in args.sizes.split(",")):
        done = subprocess.run(
            [sys.executable, "-c", ONE.format(here=str(HERE)), args.code, str(n)],
            capture_output=True,
            text=True,
            env=env,
        )
        if done.returncode:
            raise SystemExit(f"{n} prompts failed:\n{done.stderr[-3000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {n} | {r['peak_mib']:.0f} | {r['end_mib']:.0f} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
