"""benchmarks/bench_memory.py runs: its pytest suite (four marked tests, every report) at a tiny size."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_memory.py"


def test_the_pytest_suite_runs_and_prints_its_row():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--suite", "pytest", "--sizes", "8"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = re.findall(r"^\| 8 \| (\d+) \| (-?\d+) \| ([\d.]+) \|$", done.stdout, re.M)
    assert len(rows) == 1 and float(rows[0][2]) > 0, done.stdout
