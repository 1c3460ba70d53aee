"""How long the default battery takes, cold and warm, and how many sequences it forwards per item.

    HF_HUB_OFFLINE=1 python benchmarks/bench_battery.py
    HF_HUB_OFFLINE=1 python benchmarks/bench_battery.py --parts knowledge,text --runs cold

Runs ``pytest --sway-suite=default[:parts]`` in an empty folder (no test file of the user's), in a
child process, with the model and adapter given: first **cold** (an empty ``--sway-cache-dir``: every
base answer computed), then **warm** (the same cache: the base's answers read back, as on a second CI
run of an unchanged base). The model itself is converted or loaded as it is in any run (the built-in
model's one-time conversion is not counted: run the command once before measuring if it is new).
Prints wall time, each test's time, and from the JSON report the sequences forwarded per variant and
operation over the battery's items (prompts, passages, choices, chats).
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

from pytest_sway.suites import default
from pytest_sway.suites.spec import SUITES, parse_suite

ROOT = Path(__file__).resolve().parents[1]


def items_per_part() -> dict[str, int]:
    """What each part asks about: prompts, passages, answer choices (4 per question), chats."""
    return {
        "prompts": len(default.prompts()),
        "text": len(default.passages()),
        "knowledge": sum(len(choices) for _, choices, _ in default.questions()),
        "chat": len(default.chats()),
    }


def items_per_operation(parts) -> dict[str, int]:
    """Items that ask each operation of each model, the floor of what it forwards (one sequence per
    item): greedy continuations (the prompts' greedy_change on both; the chats' answers, made by the
    base only), next-token distributions (the prompts' delta_kl) and scored sequences (the choices,
    the passages and the chats' answers teacher-forced)."""
    counts = items_per_part()
    pick = lambda *names: sum(counts[name] for name in names if name in parts)  # noqa: E731
    scored = pick("knowledge", "text", "chat")
    return {"greedy/base": pick("prompts", "chat"), "greedy/fine-tuned": pick("prompts"), "next/base": pick("prompts"),
            "next/fine-tuned": pick("prompts"), "score/base": scored, "score/fine-tuned": scored}  # fmt: skip


def run(folder: Path, args, cache: Path, report: Path) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={folder}",
           f"--sway-model={args.model}", f"--sway-adapter={args.adapter}", f"--sway-suite={args.suite}",
           f"--sway-cache-dir={cache}", f"--sway-json={report}", "--durations=0"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if not report.exists():
        sys.exit(f"the battery did not run:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", default=str(ROOT / "conftest_examples" / "support-adapter"))
    parser.add_argument("--parts", default=",".join(SUITES["default"]), help="comma-separated parts")
    parser.add_argument("--runs", default="cold,warm", help="cold, or cold,warm (warm reuses the cold run's cache)")
    args = parser.parse_args()
    args.suite = str(parse_suite(f"default:{args.parts}"))
    args.adapter = str(Path(args.adapter).resolve())
    parts = parse_suite(args.suite).parts
    runs = args.runs.split(",")
    if runs not in (["cold"], ["cold", "warm"]):
        sys.exit(f"--runs={args.runs}: give cold or cold,warm (a warm run reads the cache the cold run wrote)")
    counts = items_per_part()
    total, asked = sum(counts[part] for part in parts), items_per_operation(parts)
    print(f"battery {args.suite} on {args.model} + {args.adapter}")
    print("items: " + ", ".join(f"{part} {counts[part]}" for part in parts))
    with tempfile.TemporaryDirectory(prefix="bench-battery-") as tmp:
        folder, cache = Path(tmp) / "empty", Path(tmp) / "cache"
        folder.mkdir()
        for label in runs:
            report = Path(tmp) / f"{label}.json"
            wall, status = run(folder, args, cache, report)
            data = json.loads(report.read_text())
            print(f"\n{label}: {wall:.0f} s wall ({wall / 60:.1f} min), exit status {status}")
            for row in data["results"]:
                print(f"  {row['nodeid'].split('::')[-1]:34} {row['duration_s']:7.1f} s  {row['outcome']}")
            print(f"  sequences forwarded ({total} items), and per item that asks for the operation:")
            for key, value in sorted(data["forward_passes"]["total"].items()):
                per_item = f"{value / asked[key]:.3f} per item" if asked.get(key) else ""
                print(f"    {key:22} {value:6}  {per_item}")
            calls = data["forward_calls"]["total"]
            print("  forward calls: " + ", ".join(f"{k} {v}" for k, v in sorted(calls.items())))


if __name__ == "__main__":
    main()
