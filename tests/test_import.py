"""Importing pytest_sway, and running the dummy backend, loads no ML framework."""

import json
import os
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


def test_loading_the_plugin_imports_no_ml_framework_and_no_numpy(tmp_path):
    """A pytest run without sway tests pays for the plugin's options and hooks only."""
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    pass\n")
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import json, sys

            def pytest_unconfigure(config):
                heavy = ["numpy", "scipy", "torch", "transformers", "peft"]
                with open("loaded.json", "w") as fh:
                    json.dump({
                        "plugin": config.pluginmanager.is_registered(sys.modules.get("pytest_sway.plugin")),
                        "loaded": [m for m in heavy if m in sys.modules],
                    }, fh)
            """
        )
    )
    # Only this plugin (other installed plugins, e.g. dlm-sway's, may import numpy themselves).
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "pytest_sway.plugin"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        env=env,
    )
    seen = json.loads((tmp_path / "loaded.json").read_text())
    assert seen == {"plugin": True, "loaded": []}


def test_the_version_is_the_installed_package_version():
    from importlib.metadata import version

    import pytest_sway

    assert pytest_sway.__version__ == version("pytest-sway")
