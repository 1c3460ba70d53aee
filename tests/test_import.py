"""Importing pytest_sway, and running the dummy backend, loads no ML framework."""

import subprocess
import sys
import textwrap

HEAVY = ("torch", "transformers", "peft")


def test_import_and_dummy_run_load_no_ml_framework():
    code = textwrap.dedent(
        f"""
        import sys
        import pytest_sway
        assert "numpy" not in sys.modules, "import pytest_sway should stay cheap"
        from pytest_sway import DummyBackend, run_probe
        run_probe("delta_kl", DummyBackend(), prompts=["a", "b", "c"])
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
