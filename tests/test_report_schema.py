"""The JSON report's schema: the same keys in every result whatever the options, and the
published JSON Schema (``pytest_sway/reports/report-v2.schema.json``) that every report follows."""

import html.parser
import json
from xml.etree import ElementTree

import pytest
from conftest import check_report
from test_markdown import _unspan, tables

import pytest_sway.sway  # noqa: F401  (imported here once: pytester's in-process runs would import new copies)
from pytest_sway.reports.rows import SCHEMA, report_schema
from pytest_sway.stats.drivers import show_item, visible

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


# -- every report shows any item safely --------------------------------------------------------

#: What an item can hold: controls (NUL, ESC, BEL, DEL, C1), bidirectional overrides and isolates,
#: zero-width and separator characters, noncharacters, markup, and a very long line.
HOSTILE = [
    "nul \x00 here",
    "esc \x1b[31m red \x1b[0m",
    "bell \x07 and backspace \x08",
    "del \x7f c1 \x85 \x9b",
    "bidi \u202e txet \u2066isolate\u2069 \u200f",
    "zero\u200bwidth\ufeffbom",
    "line\u2028sep\u2029para",
    "nonchar \ufffe \uffff \ufdd0",
    "tab\tand\nnewline\r\nreturn",
    "<script>alert('x')</script> & \"quotes\" | `ticks`",
    "long " + "x" * 5000,
    "plain prompt",
]

HOSTILE_SUITE = f"""
import pytest
ITEMS = {HOSTILE!r}

@pytest.mark.sway_probe("delta_kl", prompts=ITEMS, below=0.001)
def test_moves():
    pass

@pytest.mark.sway_probe("greedy_change", prompts=ITEMS, below=0.01)
def test_greedy():
    pass
"""


class _Page(html.parser.HTMLParser):
    """The page's elements, checked to nest: every element opened is closed in order."""

    VOID = {"meta", "br", "line", "circle", "polygon", "rect", "polyline", "path", "i"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _raw_hidden(text: str) -> list[str]:
    """The characters a page must not hold raw (controls but newline, tab and return; format and
    separator characters; noncharacters; surrogates)."""
    return sorted({repr(ch) for ch in text if ch not in "\n\r\t" and visible(ch) != ch})


def test_every_report_shows_hostile_items_visibly_and_validly(pytester):
    pytester.makepyfile(HOSTILE_SUITE)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--sway-json=out.json", "--sway-html=page.html",
        "--sway-markdown=summary.md", "--junitxml=junit.xml",
    )  # fmt: skip
    result.assert_outcomes(failed=2)
    # The terminal: no raw control character reaches it (an ESC would recolour it).
    assert _raw_hidden(result.stdout.str()) == []
    # JSON: parses, follows the schema, and keeps every item exactly.
    doc = json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))
    check_report(doc)
    prompts = [e["prompt"] for e in doc["results"][0]["details"]["token_changes"]]
    assert prompts == HOSTILE
    # JUnit XML: parses; the drivers property keeps the items.
    tree = ElementTree.parse(pytester.path / "junit.xml")
    props = {p.get("name"): p.get("value") for p in tree.iter("property")}
    assert props["sway.kind"] in ("delta_kl", "greedy_change") and json.loads(props["sway.drivers"])
    # HTML: no character HTML rejects or hides, elements nest, and every item is shown visibly.
    page = (pytester.path / "page.html").read_text(encoding="utf-8")
    assert _raw_hidden(page) == []
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    text = "".join(parser.text)
    for item in HOSTILE:  # (read as text, a return is a newline)
        assert visible(item, keep="\n\r\t").replace("\r\n", "\n") in text, item[:40]
    # Markdown: no raw hidden character; every table parses with the right number of cells.
    summary = (pytester.path / "summary.md").read_text(encoding="utf-8")
    assert _raw_hidden(summary) == []
    results, *drivers = tables(summary)
    assert len(results) == 3 and drivers
    shown = {_unspan(cell) for table in drivers for _, cell in table[1:]}
    assert shown <= {show_item(item, 120) for item in HOSTILE} and shown
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render(summary)
    assert rendered.count("<table>") == 1 + len(drivers) and _raw_hidden(rendered) == []


# -- every report says what the message says ---------------------------------------------------

QUESTIONS = [(f"Question {i}: which answer?", [" refund", " replace", " ignore"], i % 3) for i in range(12)]

MESSAGES_SUITE = f"""
import pytest
PROMPTS = {PROMPTS!r}
QUESTIONS = {QUESTIONS!r}

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, below=0.001)
def test_delta_kl():
    pass

@pytest.mark.sway_probe("greedy_change", prompts=PROMPTS, below=0.01)
def test_greedy():
    pass

@pytest.mark.sway_probe("choice_accuracy", questions=QUESTIONS, above=0.5)
def test_choice():
    pass

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.0001, max_regression=0.002)
def test_regression():
    pass
"""

#: Each failed test's message as the terminal shows it (pytest.fail without a traceback).
MESSAGES_CONFTEST = """
import json, pathlib
from pytest_sway import DummyBackend

def weaker(settings):
    return DummyBackend(effect=0.3)

def pytest_runtest_logreport(report):
    if report.when == "call" and report.failed:
        path = pathlib.Path("messages.json")
        seen = json.loads(path.read_text()) if path.exists() else {}
        seen[report.nodeid.split("::")[-1]] = report.longreprtext
        path.write_text(json.dumps(seen))
"""


def _message_from_json(row, *, drivers=True):
    """The terminal message, rebuilt from what a JSON result carries: the verdict, its drivers
    and the lines after them; then the regression's message and drivers."""
    from pytest_sway.stats.drivers import gate_text, regression_text, row_sections

    parts = []
    if row["outcome"] in ("failed", "inconclusive"):
        lines = [row["message"]] + ([gate_text(row_sections(row, row["values"]))] if drivers else [])
        parts.append("\n".join(line for line in lines + row["evidence"] if line))
    baseline = row["baseline"]
    if baseline is not None and baseline["outcome"] in ("failed", "inconclusive"):
        text = baseline["message"]
        if baseline["regressed_items"] is not None:
            text += "\n" + regression_text(
                baseline["drivers"], direction=baseline["direction"], regressed=baseline["regressed_items"], n=row["n"]
            )
        parts.append(text)
    return "\n\n".join(parts)


@pytest.mark.parametrize("drivers", ["5", "0"])
def test_every_report_says_what_the_message_says(pytester, drivers):
    from pytest_sway.reports.markdown import md

    pytester.makeconftest(MESSAGES_CONFTEST)
    pytester.makepyfile(MESSAGES_SUITE)
    pytester.syspathinsert()
    pytester.runpytest("-p", "no:cacheprovider", "--sway-save-baseline=base.json", "-k", "regression")
    (pytester.path / "messages.json").unlink(missing_ok=True)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--sway-baseline=base.json", "--sway-backend=conftest:weaker",
        f"--sway-drivers={drivers}", "--sway-json=out.json", "--sway-html=page.html", "--sway-markdown=summary.md",
        "--junitxml=junit.xml",
    )  # fmt: skip
    result.assert_outcomes(failed=4)
    messages = json.loads((pytester.path / "messages.json").read_text())
    doc = json.loads((pytester.path / "out.json").read_text())
    rows = {r["nodeid"].split("::")[-1]: r for r in doc["results"]}
    assert set(messages) == set(rows) == {"test_delta_kl", "test_greedy", "test_choice", "test_regression"}
    assert all(rows[name]["evidence"] for name in ("test_delta_kl", "test_greedy", "test_choice"))
    junit = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in ElementTree.parse(pytester.path / "junit.xml").iter("testcase")
    }
    parser = _Page()
    parser.feed((pytester.path / "page.html").read_text(encoding="utf-8"))
    page = "".join(parser.text)
    summary = (pytester.path / "summary.md").read_text(encoding="utf-8")
    for name, message in messages.items():
        row = rows[name]
        # JSON: the message, rebuilt from the row alone, is the terminal's, line for line.
        assert _message_from_json(row, drivers=drivers != "0") == message, name
        # JUnit: the verdict and the lines after the drivers.
        assert junit[name]["sway.message"] == row["message"]
        assert junit[name]["sway.evidence"] == "\n".join(row["evidence"])
        # HTML and Markdown: every line of the message, a driver's as its value and item.
        driver_lines = {f"{d['value']:.4g}": d for d in row["drivers"] + (row["baseline"] or {}).get("drivers", [])}
        for line in message.splitlines():
            if not line.strip():
                continue
            value = line.split()[0]
            if line.startswith("  ") and value in driver_lines:
                item = driver_lines[value]["item"]
                assert item in page and value in page, (name, line)
                assert show_item(item, 120) in summary and value in summary, (name, line)
            elif line.startswith("Drivers: "):
                assert line in page and md(line) in summary, (name, line)
            else:
                assert line in page and line in summary, (name, line)
