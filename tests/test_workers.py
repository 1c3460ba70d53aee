"""xdist workers: each gets its share of the cores, all of them one run-scoped folder of base answers, and
the report counts each one's forward passes."""

from __future__ import annotations

import json

import pytest

from pytest_sway.workers import (
    FORWARDS_KEY,
    THREADS_VARIABLE,
    collect_forwards,
    forward_counts,
    forward_report,
    limit_threads,
    record_forwards,
    worker_threads,
)


def test_each_worker_gets_its_share_of_the_cores_unless_the_user_chose():
    assert worker_threads(16, 4, {}) == 4
    assert worker_threads(2, 2, {}) == 1
    assert worker_threads(2, 4, {}) == 1  # never 0
    assert worker_threads(None, 2, {}) == 1
    assert worker_threads(16, 1, {}) is None  # one worker: nothing to share
    assert worker_threads(16, 4, {THREADS_VARIABLE: "8"}) is None  # the user's setting stands


def test_limiting_reaches_torch_before_and_after_it_is_imported():
    calls = []

    class Torch:
        def set_num_threads(self, n):
            calls.append(n)

    environ: dict[str, str] = {}
    limit_threads(3, environ, {})
    assert environ == {THREADS_VARIABLE: "3"} and calls == []
    limit_threads(2, environ, {"torch": Torch()})
    assert environ == {THREADS_VARIABLE: "2"} and calls == [2]


RECORDER = """
import json, os
from pathlib import Path
from pytest_sway import DummyBackend

def pytest_sway_make_backend(settings, config):
    folder = settings.cache_dir
    Path(os.environ["PYTEST_XDIST_WORKER"] + ".json").write_text(json.dumps({
        "cache_dir": None if folder is None else str(folder),
        "exists": folder is not None and folder.is_dir(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }))
    return DummyBackend()
"""

TESTS = """
import pytest
PROMPTS = [f"prompt {i}" for i in range(8)]

@pytest.mark.parametrize("i", range(4))
def test_probe(sway, i):
    sway.delta_kl(PROMPTS)
"""


def _workers(pytester) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(pytester.path.glob("gw*.json"))]


def test_workers_share_one_run_scoped_folder_that_goes_with_the_run(pytester, monkeypatch):
    pytest.importorskip("xdist")
    monkeypatch.delenv(THREADS_VARIABLE, raising=False)
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(TESTS)
    pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider").assert_outcomes(passed=4)
    seen = _workers(pytester)
    assert len(seen) == 2
    assert seen[0]["cache_dir"] == seen[1]["cache_dir"] and "sway-run-" in seen[0]["cache_dir"]
    assert all(s["exists"] for s in seen)
    assert all(s["threads"] is not None and int(s["threads"]) >= 1 for s in seen)
    assert not pytester.path.joinpath(seen[0]["cache_dir"]).exists()  # removed when the run ends


def test_the_users_cache_folder_and_thread_count_stand(pytester, monkeypatch):
    pytest.importorskip("xdist")
    monkeypatch.setenv(THREADS_VARIABLE, "3")
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(TESTS)
    (pytester.path / "mine").mkdir()
    pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--sway-cache-dir=mine").assert_outcomes(
        passed=4
    )
    seen = _workers(pytester)
    assert {s["cache_dir"] for s in seen} == {str(pytester.path / "mine")}
    assert {s["threads"] for s in seen} == {"3"}


SHARING = """
import os, time
from pathlib import Path
import pytest

PROMPTS = [f"The weather in town {i} is" for i in range(6)]

@pytest.mark.xdist_group("first")
def test_first(sway):
    sway.delta_kl(PROMPTS)
    assert sway.backend.forwarded[("next", "base")] == len(PROMPTS)
    Path("first.done").write_text(os.environ["PYTEST_XDIST_WORKER"])

@pytest.mark.xdist_group("second")
def test_second(sway):
    for _ in range(600):  # the other worker computes the base's answers first
        if Path("first.done").exists():
            break
        time.sleep(0.1)
    assert Path("first.done").read_text() != os.environ["PYTEST_XDIST_WORKER"]
    sway.delta_kl(PROMPTS)
    assert sway.backend.forwarded[("next", "base")] == 0  # read from the run's shared folder
    assert sway.backend.forwarded[("next", "fine-tuned")] == len(PROMPTS)
"""


def test_a_worker_reads_the_base_answers_another_worker_computed(pytester, tiny):
    pytest.importorskip("xdist")
    model, adapter = tiny["llama"]
    pytester.makepyfile(SHARING)
    result = pytester.runpytest_subprocess(
        f"--sway-model={model}", f"--sway-adapter={adapter}", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)


def _report(pytester, name="out.json") -> dict:
    return json.loads((pytester.path / name).read_text())


def test_counts_are_kept_per_process_and_summed():
    from collections import Counter

    from pytest_sway import DummyBackend

    class Counting:
        forwarded = Counter({("next", "base"): 4, ("score", "fine-tuned"): 2, ("next", "fine-tuned"): 4})
        forward_calls = Counter({"base": 1, "fine-tuned": 2})

    class Uncalled:  # vllm's shape: sequences, no calls
        forwarded = {("greedy", "base"): 3}

    assert forward_counts(DummyBackend()) is None
    assert forward_counts(Counting()) == {
        "passes": {"next/base": 4, "next/fine-tuned": 4, "score/fine-tuned": 2},
        "calls": {"base": 1, "fine-tuned": 2},
    }
    forwards: dict = {}
    record_forwards(forwards, DummyBackend(), None)  # counts nothing: contributes nothing
    assert forward_report(forwards) == (None, None)
    record_forwards(forwards, Counting(), {"workerid": "gw0"})
    collect_forwards(forwards, {FORWARDS_KEY: {"gw1": forward_counts(Uncalled())}})
    collect_forwards(forwards, None)  # a worker that crashed sent nothing
    passes, calls = forward_report(forwards)
    assert passes == {
        "gw0": {"next/base": 4, "next/fine-tuned": 4, "score/fine-tuned": 2},
        "gw1": {"greedy/base": 3},
        "total": {"greedy/base": 3, "next/base": 4, "next/fine-tuned": 4, "score/fine-tuned": 2},
    }
    assert calls == {"gw0": {"base": 1, "fine-tuned": 2}, "total": {"base": 1, "fine-tuned": 2}}
    record_forwards(forwards := {}, Counting(), None)
    assert list(forward_report(forwards)[0]) == ["main", "total"]


def test_a_dummy_run_reports_no_forward_passes(pytester):
    pytester.makepyfile(TESTS)
    pytester.runpytest("-p", "no:cacheprovider", "--sway-json=out.json").assert_outcomes(passed=4)
    doc = _report(pytester)
    assert doc["forward_passes"] is None and doc["forward_calls"] is None


COUNTED = """
import json
from pathlib import Path

PROMPTS = [f"The weather in town {i} is" for i in range(5)]

def test_next(sway):
    sway.delta_kl(PROMPTS)
    sway.delta_kl(PROMPTS[:3], divergence="kl")  # asked again: memoised, not forwarded

def test_score_and_greedy(sway):
    sway.perplexity_shift([p + " It rains." for p in PROMPTS[:3]])
    sway.greedy_change(PROMPTS[:2], max_new_tokens=2)

def test_last(sway):  # runs last: what the backend counted by now is all it counts
    backend = sway.backend
    Path("counted.json").write_text(json.dumps({
        "passes": {f"{q}/{v}": n for (q, v), n in backend.forwarded.items()},
        "calls": dict(backend.forward_calls),
    }))
"""


def test_a_serial_run_reports_what_its_backend_forwarded(pytester, tiny):
    model, adapter = tiny["llama"]
    pytester.makepyfile(COUNTED)
    result = pytester.runpytest_subprocess(
        f"--sway-model={model}", f"--sway-adapter={adapter}", "-p", "no:cacheprovider", "--sway-json=out.json"
    )
    result.assert_outcomes(passed=3)
    counted = json.loads((pytester.path / "counted.json").read_text())
    doc = _report(pytester)
    assert doc["forward_passes"] == {"main": counted["passes"], "total": counted["passes"]}
    assert doc["forward_calls"] == {"main": counted["calls"], "total": counted["calls"]}
    passes = counted["passes"]
    assert passes["next/base"] == passes["next/fine-tuned"] == 5  # each prompt once per variant
    assert passes["score/base"] == passes["score/fine-tuned"] == 3
    assert passes["greedy/base"] == passes["greedy/fine-tuned"] == 2


def test_workers_report_their_forward_passes_and_share_the_bases(pytester, tiny):
    pytest.importorskip("xdist")
    model, adapter = tiny["llama"]
    pytester.makepyfile(SHARING)
    result = pytester.runpytest_subprocess(
        f"--sway-model={model}",
        f"--sway-adapter={adapter}",
        "-n",
        "2",
        "--dist",
        "loadgroup",
        "-p",
        "no:cacheprovider",
        "--sway-json=out.json",
    )
    result.assert_outcomes(passed=2)
    passes = _report(pytester)["forward_passes"]
    assert sorted(passes) == ["gw0", "gw1", "total"]
    workers = [passes["gw0"], passes["gw1"]]
    keys = {key for counts in workers for key in counts}
    assert passes["total"] == {key: sum(counts.get(key, 0) for counts in workers) for key in keys}
    # Every base answer computed once over both workers: the second read them from the shared folder.
    assert passes["total"]["next/base"] == 6
    assert passes["total"]["next/fine-tuned"] == 12  # each worker's fine-tune answers its own tests
    assert sorted(counts.get("next/base", 0) for counts in workers) == [0, 6]


KILLED_WRITER = """
import os, signal, sys
import numpy as np
import pytest_sway.files as files
from pytest_sway.backends.cache import ResultCache

cache = ResultCache(sys.argv[1], {"model_sha256": "m"})
if sys.argv[2] == "mid-write":  # killed with half the entry written
    def write_pieces(fh, data):
        fh.write(data[: len(data) // 2])
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    files.write_pieces = write_pieces
else:  # killed with the entry written, before it is renamed into place
    os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
cache.put(("next", [1, 2, 3]), np.arange(1000, dtype=np.float32))
"""


@pytest.mark.parametrize("when", ["mid-write", "before-rename"])
def test_a_worker_killed_while_writing_leaves_no_torn_shared_entry(tmp_path, when):
    import signal
    import subprocess
    import sys

    import numpy as np

    from pytest_sway.backends.cache import ResultCache

    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path), when])
    assert done.returncode == -signal.SIGKILL
    cache = ResultCache(tmp_path, {"model_sha256": "m"})
    assert not list(cache.folder.rglob("*.npz"))  # only a temporary file, which no reader opens
    assert cache.get(("next", [1, 2, 3])) is None and (cache.misses, cache.rejected) == (1, 0)
    cache.put(("next", [1, 2, 3]), np.arange(1000, dtype=np.float32))  # another worker writes it whole
    np.testing.assert_array_equal(cache.get(("next", [1, 2, 3])), np.arange(1000, dtype=np.float32))
