"""The memory benchmarks' suite as a user runs it: four marked tests run by pytest.

``run(backend, prompts)`` writes a test file whose tests are delta_kl (js and kl),
null_contrast (2 seeds) and adapter_ablation (scales 0, 0.5, 1) on ``prompts``, and
runs it with ``pytest.main`` in this process on ``backend``, writing the JSON, HTML,
Markdown and JUnit reports. What a session keeps per test until its reports are
written is measured with the probes. The session closes the backend at its end.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

TESTS = """
import json, os, pytest

PROMPTS = json.load(open(os.environ["SWAY_BENCH_PROMPTS"]))

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, divergence="js", above=0.0)
def test_js(): pass

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, divergence="kl", above=0.0)
def test_kl(): pass

@pytest.mark.sway_probe("null_contrast", prompts=PROMPTS, seeds=2)
def test_null(): pass

@pytest.mark.sway_probe("adapter_ablation", prompts=PROMPTS, scales=[0, 0.5, 1])
def test_ablation(): pass
"""


class _Backend:
    """A pytest plugin: the session's backend is the one given."""

    def __init__(self, backend):
        self.backend = backend

    def pytest_sway_make_backend(self, settings, config):
        return self.backend


def run(backend, prompts: list[str]) -> None:
    import pytest

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "prompts.json")
        with open(path, "w") as fh:
            json.dump(prompts, fh)
        os.environ["SWAY_BENCH_PROMPTS"] = path
        with open(os.path.join(folder, "test_suite.py"), "w") as fh:
            fh.write(TESTS)
        args = [folder, "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir", folder]
        args += [f"--sway-{kind}={os.path.join(folder, 'out.' + kind)}" for kind in ("json", "html", "markdown")]
        args.append("--junitxml=" + os.path.join(folder, "junit.xml"))
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            code = pytest.main(args, plugins=[_Backend(backend)])
        if code != 0:
            raise SystemExit(f"the pytest suite failed: exit code {code}")
