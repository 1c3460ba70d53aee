"""The example suite and CI workflow are well-formed (running them is the README's demo command)."""

import ast
import configparser
from pathlib import Path

import pytest

from pytest_sway.probes import builtin_probes
from pytest_sway.settings import OPTIONS

EXAMPLES = Path(__file__).parent.parent / "conftest_examples"


def _marker_kinds(source: str) -> set[str]:
    kinds = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "sway_probe" and node.args:
            kinds.add(node.args[0].value)
    return kinds


def test_the_examples_use_every_builtin_probe():
    """The demo (its own tests, and the default battery it runs: choice_accuracy is the battery's)."""
    battery = EXAMPLES.parent / "pytest_sway" / "suites" / "default" / "battery.py"
    source = "\n".join(p.read_text() for p in [*EXAMPLES.glob("test_*.py"), battery])
    assert "python -m pytest conftest_examples --sway-suite=default" in (EXAMPLES.parent / ".ci" / "run").read_text()
    used = _marker_kinds(source) | {p.kind for p in builtin_probes() if f"sway.{p.kind}(" in source}
    assert used == {p.kind for p in builtin_probes()}


def test_the_example_ini_sets_only_known_options():
    ini = configparser.ConfigParser()
    ini.read(EXAMPLES / "pytest.ini")
    known = {opt.ini for opt in OPTIONS}
    sway_keys = {k for k in ini["pytest"] if k.startswith("sway_")}
    assert sway_keys <= known
    assert {"sway_model", "sway_adapter", "sway_correction", "sway_json", "sway_html"} <= sway_keys


def test_the_ci_workflow_gates_and_uploads_the_reports():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((EXAMPLES / "ci" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    commands = " ".join(step.get("run", "") for step in steps)
    for flag in (
        "--sway-adapter",
        "--sway-baseline",
        "--sway-json",
        "--sway-html",
        "--junitxml",
        "--sway-markdown=github",
        "--sway-suite=default",
    ):
        assert flag in commands
    upload = next(step for step in steps if "upload-artifact" in step.get("uses", ""))
    assert upload["if"] == "always()"
    for report in ("sway-report.json", "sway-report.html", "sway-junit.xml"):
        assert report in upload["with"]["path"]
