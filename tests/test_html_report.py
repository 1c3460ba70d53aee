"""The HTML report: a complete, self-contained, escaped page; and it renders in a browser."""

import json
import math
import os
import re
import shutil
import subprocess
from html import escape
from pathlib import Path

import pytest

from pytest_sway import DummyBackend, Gate, run_probe
from pytest_sway.reports.html import render_html
from pytest_sway.reports.rows import json_document, json_pieces, rows_for_test

TRICKY_ID = "t.py::test[<b>&]"


def sample_document() -> dict:
    """A realistic report built with the real library: passed, failed, inconclusive,
    reported and error rows, an ablation curve, greedy examples and a baseline."""
    backend = DummyBackend()
    prompts = [f"prompt {i}" for i in range(16)]
    runs = [
        (
            "tests/test_adapter.py::test_moves_the_model",
            run_probe("delta_kl", backend, prompts=prompts, seed=1),
            Gate(above=0.01),
        ),
        (
            "tests/test_adapter.py::test_small_total_variation",
            run_probe("delta_kl", backend, prompts=prompts, divergence="tv", seed=2),
            Gate(below=0.05),
        ),
        (
            "tests/test_adapter.py::test_effect_grows_with_scale",
            run_probe("adapter_ablation", backend, prompts=prompts[:10], seed=3),
            Gate(above=0.3),  # ten values of 1 on [-1, 1]: the all-equal bound is 0.383
        ),
        (
            "tests/test_adapter.py::test_keeps_greedy_answers[naïve-日本]",
            run_probe(
                "greedy_change",
                backend,
                prompts=['<tag> & "quoted"', "naïve café", "2 < 3"] + prompts[:9],
                max_new_tokens=8,
                seed=4,
            ),
            Gate(below=0.5),
        ),
        (
            "tests/test_adapter.py::test_learned_the_answers",
            run_probe("completion_lift", backend, cases=[(f"Q{i}?", f" A{i}") for i in range(12)], seed=5),
            Gate(above=0.0),
        ),
        (TRICKY_ID, run_probe("delta_kl", backend, prompts=prompts[:6], divergence="kl", seed=6), None),
    ]
    rows = []
    for index, (nodeid, result, gate) in enumerate(runs):
        if gate is not None:
            result.check(gate)
        rows += rows_for_test(nodeid, results=[result], request=None, index=index, error=None)
    rows.append({"nodeid": "tests/test_adapter.py::test_model_missing", "index": len(runs), "order": 0,
                 "source": "marker", "kind": "delta_kl", "label": "delta_kl", "above": 0.02, "below": None,
                 "outcome": "error", "message": "BackendError: adapter './runs/v9' not found"})  # fmt: skip
    doc = json_document(rows, backend=backend.describe(),
                        settings={"seed": 0, "confidence": 0.95, "resamples": 9999, "ci_method": "studentized",
                                  "correction": "bonferroni"})  # fmt: skip
    doc["provenance"] = {"model_sha256": "3f9a0c…e41b", "pytest_sway": "0.1.0", "numpy": "2.1.3", "device": "cpu"}
    doc["correction"] = {"method": "bonferroni", "m": 5, "confidence": 0.99}
    # Baseline comparisons as pytest_sway.reports.baseline.compare writes them.
    doc["results"][0]["baseline"] = {"status": "compared", "delta": -0.004, "ci_low": -0.011, "ci_high": 0.002,
                                     "baseline_estimate": 0.0375, "max_regression": 0.01, "direction": "higher",
                                     "outcome": "passed", "message": ""}  # fmt: skip
    doc["results"][1]["baseline"] = {"status": "compared", "delta": 0.09, "ci_low": 0.05, "ci_high": 0.13,
                                     "baseline_estimate": 0.12, "max_regression": 0.02, "direction": "lower",
                                     "outcome": "failed", "message": "FAILED: delta_kl(js) - baseline 95% CI "
                                     "[0.05, 0.13] lies wholly above 0.02."}  # fmt: skip
    doc["results"][4]["baseline"] = {"status": "items changed", "outcome": "reported",
                                     "message": "not compared: 2 items <new> since the baseline"}  # fmt: skip
    return json.loads("".join(json_pieces(doc)))  # exactly what the JSON report would hold


@pytest.fixture(scope="module")
def doc():
    return sample_document()


@pytest.fixture(scope="module")
def page(doc):
    return render_html(doc)


def _numeric(doc):
    return [r for r in doc["results"] if r["outcome"] != "error"]


def test_the_sample_has_every_outcome(doc):
    assert {r["outcome"] for r in doc["results"]} == {"passed", "failed", "inconclusive", "reported", "error"}


def test_a_complete_html_document(page):
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    for tag in ("<html", "<head>", '<meta charset="utf-8">', "<title>pytest-sway report</title>", "<body>", "</body>"):
        assert tag in page
    assert "<h1>pytest-sway report</h1>" in page


def test_self_contained(page):
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page.lower()
    assert not re.search(r"<script\b", page, re.I)  # no scripts at all, inline or not
    assert not re.search(r"\bsrc\s*=", page, re.I)
    assert "url(" not in page and "@import" not in page and "@font-face" not in page


def test_escapes_test_ids_and_prompts(page):
    assert "t.py::test[&lt;b&gt;&amp;]" in page
    assert "<b>&]" not in page
    assert "&lt;tag&gt; &amp; &quot;quoted&quot;" in page  # a greedy_change example prompt
    assert "naïve-日本" in page  # non-ASCII kept as is (the page is UTF-8)


def test_header_shows_counts_backend_settings_provenance_and_correction(doc, page):
    for outcome in ("passed", "failed", "inconclusive", "reported", "error"):
        count = sum(r["outcome"] == outcome for r in doc["results"])
        assert f">{count} {outcome}</span>" in page
    assert "dummy (effect 0.5)" in page
    assert "studentized" in page and "model_sha256" in page and "3f9a0c…e41b" in page
    assert "bonferroni over m = 5" in page and "99% confidence" in page


def test_every_label_and_test_is_shown(doc, page):
    for r in doc["results"]:
        assert f">{r['label']}<" in page
    for nodeid in {r["nodeid"] for r in doc["results"]}:
        assert escape(nodeid) in page


def test_one_ci_bar_per_numeric_result(doc, page):
    assert page.count('class="ci-bar"') == len(_numeric(doc)) == 6
    assert page.count('class="strip"') == 6  # a per-item plot for each, none for the error row


def test_error_rows_are_text_with_their_message(page):
    assert "BackendError: adapter &#x27;./runs/v9&#x27; not found" in page
    assert "could not run" in page


def test_ablation_curve(doc, page):
    (ablation,) = [r for r in doc["results"] if r["kind"] == "adapter_ablation"]
    assert page.count('class="ablation-line"') == 1 and page.count('class="ablation-band"') == 1
    assert page.count('class="ablation-point"') == len(ablation["details"]["curve"])


def test_messages_of_results_that_did_not_pass(doc, page):
    for r in doc["results"]:
        if r["outcome"] in ("failed", "inconclusive"):
            assert r["message"] and escape(r["message"].splitlines()[0]) in page
    # failed, failed, inconclusive, error; and two baseline messages
    assert page.count('<pre class="message"') == 6


def test_baseline_comparison(page):
    assert "<b>Baseline</b> compared" in page and "change vs baseline -0.004 [-0.011, 0.002]" in page
    assert "baseline estimate 0.0375" in page and "max regression 0.01, higher is better" in page
    assert "FAILED: delta_kl(js) - baseline 95% CI [0.05, 0.13] lies wholly above 0.02.</pre>" in page
    assert "<b>Baseline</b> items changed" in page and "not compared: 2 items &lt;new&gt; since" in page
    assert ">1 regressed vs baseline</span>" in page  # a regression counts even where the probe's gate passed


def test_greedy_examples(doc, page):
    (greedy,) = [r for r in doc["results"] if r["kind"] == "greedy_change"]
    assert "changed continuations" in page
    assert f"{sum(greedy['values']):.0f} of {greedy['n']} items are 1" in page
    assert page.count("items are 1") == 1  # not for adapter_ablation, whose values are all 1 too
    for example in greedy["details"]["examples"]:
        assert escape(example["finetuned"]) in page


def test_no_results():
    page = render_html({"schema": 1, "backend": {"name": "dummy"}, "settings": {}, "results": []})
    assert "No sway results" in page and "<svg" not in page
    assert "0 passed" in page
    assert "No sway results" in render_html({})  # even a bare document


def _row(**over):
    row = {"nodeid": "t.py::test_edge", "kind": "delta_kl", "label": "delta_kl(js)", "source": "marker",
           "params": {"prompts": {"count": 2}}, "n": 2, "estimate": 0.5, "ci_low": 0.2, "ci_high": 0.8,
           "confidence": 0.95, "ci_method": "percentile", "resamples": 99, "seed": 0, "above": None, "below": None,
           "outcome": "reported", "items_needed": None, "message": "", "values": [0.2, 0.8], "duration_s": 0.01,
           "details": {}}  # fmt: skip
    row.update(over)
    return row


EDGE_ROWS = {
    "unbounded low": _row(ci_low=None, outcome="failed", below=0.1, message="whole CI above 0.1"),
    "unbounded high": _row(ci_high=None, above=0.1, outcome="passed"),
    "unbounded both": _row(ci_low=None, ci_high=None),
    "all equal": _row(values=[0.3, 0.3, 0.3], n=3, estimate=0.3, ci_low=0.3, ci_high=0.3),
    "all zero": _row(values=[0.0, 0.0], estimate=0.0, ci_low=0.0, ci_high=0.0, above=0.0, outcome="passed"),
    "negative": _row(values=[-2.5, -1.0], estimate=-1.75, ci_low=-2.5, ci_high=-1.0, below=-3.0, outcome="failed"),
    "huge and tiny": _row(values=[1e-9, 3e6], estimate=1.5e6, ci_low=1e-9, ci_high=3e6),
    "nan and missing": _row(values=[float("nan"), None, 0.1], estimate=0.1, ci_low=float("inf"), details=None),
    "no values": _row(values=[], params={}),
    "ablation with gaps": _row(
        kind="adapter_ablation",
        details={
            "curve": [
                {"scale": 0.0, "mean": 0.0, "ci_low": 0.0, "ci_high": 0.0},
                {"scale": 1.0, "mean": 0.2, "ci_low": None, "ci_high": None},
                {"scale": None, "mean": 1},
            ]
        },
    ),
    "ablation of one point": _row(kind="adapter_ablation", details={"curve": [{"scale": 0.0, "mean": 0.0}]}),
    "no estimate": _row(estimate=None, outcome="inconclusive", message="odd"),
    "error": {
        "nodeid": "t.py::t",
        "kind": "x",
        "label": "x",
        "above": None,
        "below": None,
        "outcome": "error",
        "message": '<failed> & "why"\nsecond line',
    },
    "odd types": _row(nodeid=None, label=None, outcome=None, n=None, confidence=None, method=None, baseline={}),
    "baseline not comparable": _row(baseline={"status": "items changed"}),
}


@pytest.mark.parametrize("case", list(EDGE_ROWS))
def test_edge_cases_render(case):
    row = EDGE_ROWS[case]
    page = render_html({"schema": 1, "backend": {}, "settings": {}, "results": [row]})
    assert page.endswith("</html>\n")
    assert "nan" not in page.lower().replace("nant", "")  # no NaN coordinates or labels
    assert not re.search(r'="[^"]*\binf\b', page)  # no infinite coordinates
    bars = page.count('class="ci-bar"')
    assert bars == (0 if case in ("no estimate", "error") else 1)


def test_edge_cases_together_and_escaped():
    page = render_html({"results": list(EDGE_ROWS.values())})
    assert "&lt;failed&gt; &amp; &quot;why&quot;" in page and "<failed>" not in page
    assert "-\u221e" in page and "+\u221e" in page  # unbounded CI sides are named
    assert page.count('class="unbounded"') == 5  # one arrow per unbounded side


def test_forest_labels_drop_what_all_ids_share_and_keep_the_full_id_as_tooltip():
    same_file = render_html({"results": [_row(nodeid="tests/a.py::test_one"), _row(nodeid="tests/a.py::test_two")]})
    assert ">test_one</text>" in same_file and "<title>tests/a.py::test_one\n" in same_file
    folders = render_html({"results": [_row(nodeid="tests/unit/a.py::t"), _row(nodeid="tests/unit/b.py::t")]})
    assert ">a.py::t</text>" in folders and ">b.py::t</text>" in folders
    long = render_html({"results": [_row(nodeid="x.py::test_" + "very_" * 20 + "long[1]")]})
    assert ">..." in long and "very_long[1]</text>" in long


def test_same_document_same_page(doc):
    assert render_html(doc) == render_html(json.loads(json.dumps(doc)))


# -- in a real browser --------------------------------------------------------------


def _chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def _open_in_chromium(html_path: Path, png: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """Load the page headless; return its rendered DOM and the console lines it logged."""
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium found (/usr/bin/chromium, chromium, chromium-browser, google-chrome)")
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
        "--dump-dom", f"--screenshot={png}", "--window-size=1280,1600", html_path.resolve().as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Chromium logs every console message (any level) as a ":CONSOLE" line; the
    # page has no scripts, so any such line (an error, a blocked load) is a fault.
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def test_the_console_check_catches_errors(tmp_path):
    """The detector below works with this Chromium: a page that errs is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><title>x</title><script>console.error('boom'); nope();</script>")
    _, console = _open_in_chromium(bad, tmp_path / "bad.png", tmp_path)
    assert any("boom" in line for line in console) and any("nope is not defined" in line for line in console)


def test_renders_in_chromium_without_console_errors(doc, tmp_path):
    html_path = tmp_path / "report.html"
    html_path.write_text(render_html(doc), encoding="utf-8")
    png = tmp_path / "report.png"
    dom, console = _open_in_chromium(html_path, png, tmp_path)
    assert console == []
    assert "<title>pytest-sway report</title>" in dom
    assert dom.count('class="ci-bar"') == len(_numeric(doc))  # the SVG survived parsing
    assert png.exists() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SWAY_SCREENSHOT_DIR"):  # keep the picture to look at
        shutil.copy(png, Path(os.environ["SWAY_SCREENSHOT_DIR"]) / "html-report.png")


def test_math_sanity_of_the_sample(doc):
    for r in _numeric(doc):
        assert r["ci_low"] is None or r["ci_low"] <= r["estimate"] + 1e-12
        assert r["ci_high"] is None or r["estimate"] <= r["ci_high"] + 1e-12
        assert not any(v is None or not math.isfinite(v) for v in r["values"])


def test_the_plugin_writes_the_page_with_every_result(pytester):
    prompts = [f"prompt {i}" for i in range(10)]
    pytester.makepyfile(
        f"""
        import pytest
        @pytest.mark.sway_probe("delta_kl", prompts={prompts!r}, above=0.01)
        def test_moves():
            pass

        @pytest.mark.sway_probe("adapter_ablation", prompts={prompts!r}, above=0.3)
        def test_ablation():
            pass
        """
    )
    (pytester.path / "report.html").write_text("<!DOCTYPE html><title>pytest-sway report</title> previous run")
    result = pytester.runpytest("--sway-html=report.html")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["sway: HTML report written to *report.html"])
    page = (pytester.path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "test_moves" in page and "adapter_ablation(js)" in page
    assert 'class="ablation-line"' in page and "pytest-sway" in page
