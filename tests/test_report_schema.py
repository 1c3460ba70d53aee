"""The JSON report's schema: the same keys in every result whatever the options, and the
published JSON Schema (``pytest_sway/reports/report-v2.schema.json``) that every report follows."""

import json

import pytest
from conftest import check_report

import pytest_sway.sway  # noqa: F401  (imported here once: pytester's in-process runs would import new copies)
from pytest_sway.reports.rows import SCHEMA, report_schema

PROMPTS = [f"prompt number {i}" for i in range(12)]

#: Every shape of result a run can hold: passed, failed (with drivers), sliced, grouped, reported
#: from a body, and a marked test whose probe could not run.
SUITE = f"""
import pytest
PROMPTS = {PROMPTS!r}

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.0001)
def test_passes():
    pass

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, below=0.01)
def test_fails():
    pass

@pytest.mark.sway_probe("delta_kl", prompts={{"a": PROMPTS[:6], "b": PROMPTS[6:]}}, above=0.0001)
def test_sliced():
    pass

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, groups=[i // 2 for i in range(12)], above=0.0001)
def test_grouped():
    pass

@pytest.fixture(scope="module")
def broken():  # set up before the marker's probe runs, so the probe never does
    raise RuntimeError("no data today")

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.0001)
def test_cannot_run(broken):
    pass

def test_body(sway):
    sway.delta_kl(PROMPTS[:8])
"""


def _run(pytester, *args):
    pytester.runpytest("-p", "no:cacheprovider", "--sway-json=out.json", *args)
    return json.loads((pytester.path / "out.json").read_text())


def _keys(doc):
    rows = doc["results"]
    return (
        {frozenset(r) for r in rows},
        {frozenset(s) for r in rows for s in r["slices"].values()},
        {frozenset(r["baseline"]) for r in rows if r["baseline"] is not None},
    )


def test_every_result_has_the_same_keys_whatever_the_options(pytester):
    pytester.makepyfile(SUITE)
    required = report_schema()["$defs"]
    _run(pytester, "--sway-save-baseline=base.json", "-k", "not cannot_run")  # a baseline has no errors
    docs = {
        "plain": _run(pytester),
        "no drivers": _run(pytester, "--sway-drivers=0"),
        "baseline": _run(pytester, "--sway-baseline=base.json", "--sway-max-regression=0.0001"),
        "corrected": _run(pytester, "--sway-correction=bonferroni", "--sway-html=page.html"),
    }
    for name, doc in docs.items():
        check_report(doc)
        outcomes = {r["outcome"] for r in doc["results"]}
        assert {"passed", "reported", "error"} <= outcomes and outcomes & {"failed", "inconclusive"}, name
        rows, slices, baselines = _keys(doc)
        assert rows == {frozenset(required["result"]["required"])}, name
        assert slices == {frozenset(required["slice"]["required"])}, name
        assert baselines <= {frozenset(required["baseline"]["required"])}, name
        assert set(doc) == set(report_schema()["required"]), name
    assert all(r["drivers"] == [] for r in docs["no drivers"]["results"])
    assert all(r["baseline"] is not None for r in docs["baseline"]["results"] if r["outcome"] != "error")
    plain = docs["plain"]["results"]
    assert {r["nodeid"].split("::")[1]: r["n_groups"] for r in plain}["test_grouped"] == 6
    assert all(r["n_groups"] is None and r["baseline"] is None for r in plain if "grouped" not in r["nodeid"])
    assert docs["plain"]["correction"] is None and docs["corrected"]["correction"]["m"] >= 1


def test_the_schema_is_shipped_versioned_and_rejects_a_missing_key(pytester):
    schema = report_schema()
    assert schema["properties"]["schema"] == {"const": SCHEMA}
    assert schema["$id"].endswith(f":{SCHEMA}")
    pytester.makepyfile(SUITE)
    doc = _run(pytester)
    del doc["results"][0]["drivers"]
    with pytest.raises(AssertionError, match="'drivers' is a required property"):
        check_report(doc)
