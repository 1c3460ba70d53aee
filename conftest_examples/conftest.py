"""conftest.py for the example suite.

The gate's settings live in pytest.ini next to this file: the base model,
the adapter under test, the multiple-testing correction and the reports,
each an ini twin of a --sway-* option (the command line wins). A project
that gates its own fine-tunes copies pytest.ini and the test modules and
points sway_adapter at what its training run wrote.

The demo's adapter ships in support-adapter/ (3.6 MB), trained by
demo_adapter.py from support_data.py. This file only retrains it when that
recipe changed (about two minutes on two CPU cores), and says so; a run that
tests nothing (--help, --markers, --fixtures, --co, --version) never trains.
"""

import os
import sys
from pathlib import Path

import pytest

# Everything here is local (the built-in model, the demo adapter): never ask the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEMO_ADAPTER = Path(__file__).parent / "support-adapter"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Retrain the demo adapter, before pytest-sway loads it, if its recipe changed."""
    wants_demo = config.getoption("sway_adapter") is None and config.getoption("sway_finetuned") is None
    runs_nothing = any(
        getattr(config.option, name, False)
        for name in ("help", "markers", "showfixtures", "show_fixtures_per_test", "collectonly", "version")
    )
    if not wants_demo or runs_nothing or hasattr(config, "workerinput"):
        return  # another fine-tune was given, or nothing will run, or the xdist controller did it
    from demo_adapter import ensure_demo_adapter, is_current

    if not is_current(DEMO_ADAPTER):

        def say(line: str) -> None:
            print(f"pytest-sway demo: {line}", file=sys.stderr, flush=True)

        say(
            f"the recipe in support_data.py/demo_adapter.py changed; retraining {DEMO_ADAPTER} "
            "(about two minutes on two CPU cores)"
        )
        ensure_demo_adapter(DEMO_ADAPTER, log=say)
