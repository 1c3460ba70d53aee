"""The Markdown summary: a GitHub-flavoured table that parses as one, whatever the prompts hold,
the drivers of each failure, the footer; written like the JSON, or appended to the step summary."""

import json
import os
import stat

import numpy  # noqa: F401
import pytest

import pytest_sway.sway  # noqa: F401  (imported here once: pytester's in-process runs would import new copies)
from pytest_sway import DummyBackend, Gate, run_probe
from pytest_sway.reports.markdown import code, md, render_markdown
from pytest_sway.reports.rows import json_document, rows_for_test
from pytest_sway.stats.drivers import show_item

NASTY = ["a | pipe", "back`tick`s ``and`` more", "two\nlines", "*star* _under_ [link](x) <b>", "\\|", "`"]
PROMPTS = [f"prompt {i}" for i in range(14)] + NASTY


def split_row(line: str) -> list[str]:
    """A GFM table row's cells: split at pipes not escaped by a backslash (``\\|`` is a
    pipe inside the cell, as GitHub's parser reads it), outer pipes dropped."""
    assert line.startswith("|") and line.endswith("|"), line
    cells, cell, i = [], "", 1
    while i < len(line) - 1:
        if line[i] == "\\" and line[i + 1] == "|":
            cell += "|"
            i += 2
            continue
        if line[i] == "|":
            cells.append(cell.strip())
            cell = ""
        else:
            cell += line[i]
        i += 1
    cells.append(cell.strip())
    return cells


def tables(text: str) -> list[list[list[str]]]:
    """Every table in ``text``: its rows of cells, after checking the header and separator."""
    lines, found, i = text.split("\n"), [], 0
    while i < len(lines):
        if lines[i].startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            header, separator, *body = [split_row(line) for line in block]
            assert all(set(c) <= set("-:") and "---" in c.replace(":", "-") for c in separator), block[1]
            assert {len(header), len(separator)} | {len(r) for r in body} == {len(header)}, block
            found.append([header] + body)
        i += 1
    return found


def _unspan(cell: str) -> str:
    """A code span's text (CommonMark: strip the fence, then one space each side if both)."""
    fence = len(cell) - len(cell.lstrip("`"))
    assert fence and cell.endswith("`" * fence), cell
    inner = cell[fence:-fence]
    return inner[1:-1] if inner.startswith(" ") and inner.endswith(" ") and inner.strip() else inner


def _doc(*gates, prompts=PROMPTS, nodeid="tests/test_x.py::test_a[x|y]"):
    rows = []
    for k, gate in enumerate(gates):
        result = run_probe("delta_kl", DummyBackend(), prompts=prompts, seed=k)
        result.check(gate)
        request = type("Req", (), {"kind": "delta_kl", "gate": gate})()
        rows += rows_for_test(f"{nodeid}{k}", results=[result], request=request, index=k, error=None)
    return json_document(rows, backend={"name": "dummy"}, settings={})


def test_the_summary_parses_as_a_table_with_the_drivers_of_each_failure():
    doc = _doc(Gate(above=0.0001), Gate(above=0.06), Gate(below=0.01))
    text = render_markdown(doc, footer="backend dummy · seed 0 | m=3")
    results, *driver_tables = tables(text)
    header, *rows = results
    assert header == ["outcome", "test", "probe", "n", "estimate", "95% CI", "gate"]
    assert [r[0] for r in rows] == ["✅ passed"] + [
        ("❌ FAILED" if r["outcome"] == "failed" else f"⚠️ FAILED (inconclusive: ~{r['items_needed']} items)")
        for r in doc["results"][1:]
    ]
    assert [_unspan(r[1]) for r in rows] == [f"test_a[x|y]{k}" for k in range(3)]  # the pipe escaped, kept
    assert [r[4] for r in rows] == [f"{r['estimate']:.4g}" for r in doc["results"]]
    # One drivers table per failure, in order, with exactly the rows' drivers.
    assert len(driver_tables) == 2
    for table, row in zip(driver_tables, doc["results"][1:]):
        assert table[0] == ["value", "item"]
        assert [(v, _unspan(item)) for v, item in table[1:]] == [
            (f"{d['value']:.4g}", show_item(d["item"], 120)) for d in row["drivers"]
        ]
    assert text.rstrip("\n").endswith(md("backend dummy · seed 0 | m=3"))
    assert text.startswith("<!-- pytest-sway summary -->\n")


def test_nasty_items_stay_literal_in_cells():
    values = {p: i for i, p in enumerate(NASTY)}
    rows = [
        {
            "nodeid": "t.py::test",
            "kind": "k",
            "label": "k",
            "n": len(NASTY),
            "estimate": 0.0,
            "ci_low": -1.0,
            "ci_high": 0.5,
            "confidence": 0.95,
            "above": 10.0,
            "below": None,
            "outcome": "failed",
            "message": "FAILED: ```fenced``` text",
            "values": list(values.values()),
            "drivers": [{"item": p, "value": float(v), "side": "above"} for p, v in values.items()],
        }
    ]
    text = render_markdown({"results": rows}, footer="f")
    _, drivers = tables(text)
    assert [_unspan(item) for _, item in drivers[1:]] == [show_item(p, 120) for p in NASTY]
    assert "````text\nFAILED: ```fenced``` text\n````" in text  # a fence the message cannot close


def test_a_real_gfm_parser_reads_the_same_cells():
    markdown_it = pytest.importorskip("markdown_it")
    doc = _doc(Gate(above=0.0001), Gate(above=0.06))
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(render_markdown(doc, footer="f"))
    assert html.count("<table>") == 2
    assert "<code>test_a[x|y]0</code>" in html
    for item in NASTY:
        shown = show_item(item, 120)
        for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;")):
            shown = shown.replace(raw, entity)
        if any(d["item"] == item for d in doc["results"][1]["drivers"]):
            assert f"<code>{shown}</code>" in html, item


@pytest.mark.parametrize("text", ["plain", "`", "``a``", " lead", "trail ", " both ", "a|b"])
def test_code_spans_hold_any_text(text):
    assert _unspan(code(text)) == text


# -- through pytest ----------------------------------------------------------------------------

SUITE = f"""
import pytest
PROMPTS = {PROMPTS!r}

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.0001)
def test_passes():
    pass

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, below=0.01)
def test_fails():
    pass

def test_body(sway):
    sway.delta_kl(PROMPTS[:8]).assert_above(0.5)
"""


def test_the_run_writes_the_summary_and_the_message_names_the_drivers(pytester):
    pytester.makepyfile(test_s=SUITE)
    result = pytester.runpytest("--sway-markdown=summary.md", "--sway-json=out.json", "--sway-drivers=3")
    result.assert_outcomes(passed=1, failed=2)
    # pytest's short summary line still starts with the verdict; the drivers follow the message.
    result.stdout.fnmatch_lines(
        [
            "*Drivers: * of 20 items lie above 0.01; the 3 highest:",
            "*sway: Markdown summary written to *summary.md",
            "FAILED test_s.py::test_fails - Failed: FAILED: delta_kl(js)*",
            "FAILED test_s.py::test_body - AssertionError: FAILED: delta_kl(js)*",
        ]
    )
    doc = json.loads((pytester.path / "out.json").read_text())
    assert [len(r["drivers"]) for r in doc["results"]] == [0, 3, 3]
    text = (pytester.path / "summary.md").read_text()
    results, fails, body = tables(text)
    assert len(results) == 4
    for table, row in ((fails, doc["results"][1]), (body, doc["results"][2])):
        assert [_unspan(item) for _, item in table[1:]] == [show_item(d["item"], 120) for d in row["drivers"]]
    assert "bonferroni" not in text and "backend dummy" in text.splitlines()[-1]


def test_the_ini_twin_and_zero_drivers(pytester):
    pytester.makepyfile(SUITE)
    pytester.makeini("[pytest]\nsway_drivers = 0\nsway_markdown = summary.md\n")
    result = pytester.runpytest("--sway-json=out.json")
    result.assert_outcomes(passed=1, failed=2)
    assert "Drivers:" not in result.stdout.str()
    assert json.loads((pytester.path / "out.json").read_text())["results"][1]["drivers"] == []
    assert len(tables((pytester.path / "summary.md").read_text())) == 1  # the results table only


@pytest.mark.parametrize("value", ["-1", "some"])
def test_a_bad_drivers_count_is_a_usage_error(pytester, value):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(f"--sway-drivers={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--sway-drivers='{value}': *"])


def test_github_appends_to_the_step_summary_keeping_earlier_steps(pytester, monkeypatch):
    pytester.makepyfile(SUITE)
    summary = pytester.path / "step_summary.md"
    earlier = "## Build\n\nAll green, no trailing newline"
    summary.write_text(earlier)
    os.chmod(summary, 0o640)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = pytester.runpytest("--sway-markdown=github")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([f"sway: Markdown summary appended to $GITHUB_STEP_SUMMARY ({summary})"])
    first = summary.read_text()
    assert first.startswith(earlier + "\n\n<!-- pytest-sway summary -->\n")
    assert stat.S_IMODE(os.stat(summary).st_mode) == 0o640
    pytester.runpytest("--sway-markdown=github", "-k", "passes").assert_outcomes(passed=1)
    second = summary.read_text()
    assert second.startswith(first + "\n<!-- pytest-sway summary -->\n")  # a second step appends again
    assert len(tables(second)) == 1 + 2 + 1
    assert not [n for n in os.listdir(pytester.path) if n.endswith(".tmp")]  # no temporary file left behind


def test_a_summary_colliding_with_another_output_is_refused(pytester, monkeypatch):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--sway-json=same.md", "--sway-markdown=same.md")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sway-markdown and --sway-json are the same file*"])
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(pytester.path / "out.json"))
    result = pytester.runpytest("--sway-json=out.json", "--sway-markdown=github")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_summary_written_before_is_replaced(pytester):
    # A file that is not a summary is refused (tests/test_refusals.py); one written before is ours to replace.
    pytester.makepyfile(SUITE)
    pytester.runpytest("--sway-markdown=mine.md").assert_outcomes(passed=1, failed=2)
    pytester.runpytest("--sway-markdown=mine.md", "-k", "passes").assert_outcomes(passed=1)
    assert len(tables((pytester.path / "mine.md").read_text())[0]) == 2


@pytest.mark.parametrize("github", [False, True])
def test_no_sway_results_no_write(pytester, monkeypatch, github):
    pytester.makepyfile(SUITE, test_other="def test_plain():\n    pass\n")
    target = pytester.path / ("step.md" if github else "summary.md")
    target.write_text("<!-- pytest-sway summary -->\nprevious\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(target))
    result = pytester.runpytest("test_other.py", "--sway-markdown=" + ("github" if github else "summary.md"))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["sway: no sway results in this run; Markdown summary *left as it was"])
    assert target.read_text() == "<!-- pytest-sway summary -->\nprevious\n"


def test_xdist_writes_the_serial_summary(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(SUITE)
    pytester.runpytest("--sway-markdown=serial.md", "-p", "no:cacheprovider")
    pytester.runpytest("--sway-markdown=xdist.md", "-n", "2", "-p", "no:cacheprovider").assert_outcomes(
        passed=1, failed=2
    )
    assert (pytester.path / "xdist.md").read_text() == (pytester.path / "serial.md").read_text()


def _compared(outcome, delta, low, high, message=""):
    """A comparison with a baseline under max_regression=0.01, as reports.baseline.compare writes it."""
    return {"status": "compared", "delta": delta, "ci_low": low, "ci_high": high, "baseline_estimate": 0.03,
            "max_regression": 0.01, "direction": "higher", "outcome": outcome, "message": message}  # fmt: skip


def test_only_a_failed_regression_gate_counts_as_regressed():
    # Three passing rows: one regressed, one improved but its interval straddles -max_regression
    # (inconclusive: it fails the test, but is no regression), one passed its regression gate.
    from pytest_sway.reports.html import render_html
    from pytest_sway.reports.summary import summary_lines

    doc = _doc(Gate(above=0.0001), Gate(above=0.0001), Gate(above=0.0001))
    regressed, improved, kept = doc["results"]
    regressed["baseline"] = _compared("failed", -0.02, -0.03, -0.015, "FAILED: regressed")
    improved["baseline"] = _compared("inconclusive", 0.0625, -0.015, 0.125, "INCONCLUSIVE: not ruled out")
    kept["baseline"] = _compared("passed", 0.001, -0.002, 0.004)
    text = render_markdown(doc, footer="f")
    assert text.split("\n")[1] == (
        "### pytest-sway: ✅ 3 passed, ❌ 1 regressed against the baseline, ⚠️ 1 inconclusive against the baseline"
    )
    results = tables(text)[0]
    assert [r[-1] for r in results] == [
        "baseline Δ",
        "Δ -0.02 \\[-0.03, -0.015\\] REGRESSED",
        "Δ +0.0625 \\[-0.015, 0.125\\] inconclusive",
        "Δ +0.001 \\[-0.002, 0.004\\]",
    ]
    assert "#### ❌ test\\_a\\[x|y\\]0 · delta\\_kl(js)" in text and "FAILED: regressed" in text
    assert "#### ⚠️ test\\_a\\[x|y\\]1 · delta\\_kl(js)" in text and "INCONCLUSIVE: not ruled out" in text
    assert "test\\_a\\[x|y\\]2 ·" not in text  # passed both gates: no section
    page = render_html(doc)
    assert ">1 regressed vs baseline</span>" in page and ">1 inconclusive vs baseline</span>" in page
    rows = [dict(r, index=k) for k, r in enumerate(doc["results"])]  # the terminal's table takes the rows
    lines = summary_lines(rows, footer="f")
    assert lines[1].endswith("Δ -0.02 [-0.03, -0.015] REGRESSED")
    assert lines[2].endswith("Δ +0.0625 [-0.015, 0.125] inconclusive")
    assert lines[3].endswith("Δ +0.001 [-0.002, 0.004]")


def test_a_sliced_result_has_one_row_per_slice_under_its_test():
    prompts = {"billing": list(PROMPTS[:6]), "refunds | returns": list(PROMPTS[6:12])}
    doc = _doc(Gate(below=0.01), prompts=prompts)
    (results, *_) = tables(render_markdown(doc, footer="f"))
    _header, overall, *slices = results
    row = doc["results"][0]
    assert [_unspan(r[1].removeprefix("↳ slice ")) for r in slices] == ["billing", "refunds | returns"]
    for cells, (_name, part) in zip(slices, row["slices"].items()):
        assert cells[3:6] == [
            str(part["n"]),
            f"{part['estimate']:.4g}",
            f"[{part['ci_low']:.4g}, {part['ci_high']:.4g}]",
        ]
        assert cells[0].endswith(("passed", "FAILED") if part["outcome"] != "inconclusive" else ")")
    assert overall[3] == "12"
