"""conftest.py for the example suite.

The gate's settings live in pytest.ini next to this file: the base model,
the adapter under test, the multiple-testing correction and the reports,
each an ini twin of a --sway-* option (the command line wins). A project
that gates its own fine-tunes copies pytest.ini and the test modules and
points sway_adapter at what its training run wrote.

This file only prepares the demo's adapter, which a real project would get
from its training pipeline: it is trained on first use (about two minutes on
two CPU cores) and cached under .sway-demo/.
"""

import os
from pathlib import Path

import pytest

# Everything here is local (the built-in model, the demo adapter): never ask the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEMO_ADAPTER = Path(__file__).parent / ".sway-demo" / "support-adapter"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Train the demo adapter before pytest-sway checks that --sway-adapter exists."""
    wants_demo = config.getoption("sway_adapter") is None and config.getoption("sway_finetuned") is None
    if not wants_demo or config.option.help or hasattr(config, "workerinput"):
        return  # another fine-tune was given, or nothing will run, or the xdist controller did it
    from demo_adapter import ensure_demo_adapter

    ensure_demo_adapter(DEMO_ADAPTER)
