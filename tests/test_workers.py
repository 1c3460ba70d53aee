"""xdist workers: each gets its share of the cores, and all of them one run-scoped folder of base answers."""

from __future__ import annotations

import json

import pytest

from pytest_sway.workers import THREADS_VARIABLE, limit_threads, worker_threads


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
