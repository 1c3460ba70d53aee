r"""The sway summary as GitHub-flavoured Markdown, for a pull request (pure).

``render_markdown(doc, footer=...)`` renders the JSON report document
(``rows.json_document``): a table of every result (outcome, test, probe, n,
estimate, CI, gate, and the baseline change when comparing), then a section
per failed, inconclusive, errored or regressed result with its message,
drivers and the lines the message ends with (an inconclusive comparison with the baseline gets one too, and is counted
apart from the regressions), then the terminal summary's footer. It renders from the same rows as
the JSON, so a row field added there can be shown here. The page starts with
an HTML comment (invisible on GitHub) by which a later run recognises the file
as its own to replace.

Text from users is kept literal. Test ids and items are code spans (a fence
longer than any backtick run inside, so a backtick cannot end them); other text
(labels, headings, the footer) is backslash-escaped where punctuation would
format or link (every ASCII punctuation character may be escaped in GFM). In a
table cell a ``|`` would split the cell even inside a code span, so it is
written ``\|`` (which GFM's table parser turns back into ``|``), and a newline
would end the row: items show newlines as ``\n``, other text gets ``<br>``.
Messages are fenced code blocks. Numbers, intervals and gates are ours and
written as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..stats.drivers import regression_heading, row_sections, show_item, visible
from ..stats.outcome import Outcome
from .outputs import MARKDOWN_MARK
from .summary import (
    INCONCLUSIVE_VS_BASELINE,
    REGRESSED,
    ci_header,
    drivers_named,
    gate_text,
    interval_cell,
    n_text,
    number_text,
    outcome_text,
    regression_verdict,
    short_ids,
    versus_text,
)

_ESCAPED = re.compile(r"([\\`*_\[\]<>~&!#])")  # not |: only a table cell needs it escaped (``_cell``)

_ICONS = {
    Outcome.PASSED.value: "✅ ",
    Outcome.FAILED.value: "❌ ",
    Outcome.INCONCLUSIVE.value: "⚠️ ",
    Outcome.ERROR.value: "💥 ",
}

#: Longest test id shown (shortened from the left, as in the terminal, with more room).
_ID_CHARS = 100

#: Characters of an item a drivers table shows (more room than a terminal line).
_ITEM_CHARS = 120


def md(text: object) -> str:
    """``text`` as literal Markdown inline text on one line: punctuation that would format
    or link is backslash-escaped, newlines become ``<br>``, control characters are shown (``\\u001b``)."""
    escaped = _ESCAPED.sub(r"\\\1", visible(str(text), keep="\r\n"))
    return re.sub(r"\r\n|\r|\n", "<br>", escaped)


def code(text: object) -> str:
    """``text`` as a code span on one line: literal whatever it holds."""
    text = visible(re.sub(r"\r\n|\r|\n", " ", str(text)))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    # CommonMark strips one space from each end of a span that has both, and a span
    # touching a backtick would merge with the fence: pad with a space then.
    pad = " " if text[:1] == "`" or text[-1:] == "`" or (text[:1] == " " and text[-1:] == " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(text: str) -> str:
    r"""Inline Markdown made safe for a table cell: every ``|`` escaped, so none splits it.

    GFM's table parser reads ``\|`` as a pipe inside the cell, whatever precedes the
    backslash, and removes that backslash before the cell's inline parsing: inside a
    code span too, and after an escaped backslash (``\\\|`` shows ``\|``)."""
    return text.replace("|", "\\|")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _fenced(text: str) -> str:
    """``text`` in a fenced code block whose fence no backtick run inside can close (its control
    characters shown, as everywhere)."""
    text = visible(text, keep="\n\t")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _against_baseline(row: dict) -> bool:
    """Whether the row's regression gate failed or was inconclusive: either way it gets a section."""
    return regression_verdict(row) is not None


def render_markdown(doc: dict, *, footer: str) -> str:
    """The whole summary for report document ``doc``; ``footer`` is the terminal summary's footer line."""
    rows = [r for r in doc.get("results") or [] if isinstance(r, dict)]  # in the JSON's order: the summary's
    out = [MARKDOWN_MARK, f"### pytest-sway: {_counts(rows)}", ""]
    if not rows:
        out += ["No sway results: no test in this run measured a probe.", ""]
    else:
        out += _table(rows) + [""]
        for row, name in zip(rows, short_ids([r["nodeid"] for r in rows], width=_ID_CHARS)):
            if not Outcome(row["outcome"]).ok or _against_baseline(row):
                out += _failure(row, name, drivers=drivers_named(doc))
    for row, name in zip(rows, short_ids([r["nodeid"] for r in rows], width=_ID_CHARS)):
        for note in row.get("notes") or ():
            out += [f"> **Note** on {code(name)}: {md(str(note))}", ""]
    out += [md(footer), ""]
    return "\n".join(out)


_COUNT_ORDER = (Outcome.FAILED, Outcome.INCONCLUSIVE, Outcome.ERROR, Outcome.PASSED, Outcome.REPORTED)


def _counts(rows: list[dict]) -> str:
    counts = {o.value: sum(r["outcome"] == o for r in rows) for o in _COUNT_ORDER}
    parts = [f"{_ICONS.get(o, '')}{counts[o]} {o}" for o in counts if counts[o]]
    # Only a failed regression gate is a regression; an inconclusive one is counted on its own.
    regressed = sum(regression_verdict(r) == REGRESSED for r in rows)
    if regressed:
        parts.append(f"❌ {regressed} regressed against the baseline")
    inconclusive = sum(regression_verdict(r) == INCONCLUSIVE_VS_BASELINE for r in rows)
    if inconclusive:
        parts.append(f"⚠️ {inconclusive} inconclusive against the baseline")
    return ", ".join(parts) or "no results"


def _table(rows: list[dict]) -> list[str]:
    with_baseline = any(r.get("baseline") is not None for r in rows)
    header = ["outcome", "test", "probe", "n", "estimate", ci_header(rows), "gate"]
    align = ["---", "---", "---", "--:", "--:", "---", "---"]
    if with_baseline:
        header.append("baseline Δ")
        align.append("---")
    lines = [_row(header), _row(align)]
    for row, name in zip(rows, short_ids([r["nodeid"] for r in rows], width=_ID_CHARS)):
        outcome = row["outcome"]
        words = "ERROR" if outcome == Outcome.ERROR else outcome_text(row)
        cells = [_ICONS.get(outcome, "") + md(words), code(name), md(row["label"])]
        if outcome == Outcome.ERROR:
            cells += ["-", "-", "-", gate_text(row)]
        else:
            cells += [n_text(row), number_text(row.get("estimate")), interval_cell(row), gate_text(row)]
        if with_baseline:
            cells.append(md(versus_text(row.get("baseline"))))
        lines.append(_row(cells))
        for slice_name, part in (row.get("slices") or {}).items():  # one row per slice, under its test
            cells = [_ICONS.get(part.get("outcome"), "") + md(outcome_text(part)), "↳ slice " + code(slice_name), "",
                     n_text(part), number_text(part.get("estimate")), interval_cell(part, row.get("bounds")),
                     gate_text(row)]  # fmt: skip
            lines.append(_row(cells + ([""] if with_baseline else [])))
    return lines


def _failure(row: dict, name: str, *, drivers: bool = True) -> list[str]:
    """A failed, inconclusive, errored or regressed result (or one whose comparison with the
    baseline was inconclusive): its message, drivers and the lines the message ends with."""
    outcome = row["outcome"]
    # Else only the regression gate failed or was inconclusive: its icon (❌ or ⚠️).
    worst = outcome if not Outcome(outcome).ok else row["baseline"]["outcome"]
    icon = _ICONS[worst]
    out = [f"#### {icon}{md(name)} · {md(row['label'])}", ""]  # a heading: no code span, where \| would show
    if not Outcome(outcome).ok:
        if row.get("message"):
            out += [_fenced(row["message"]), ""]
        if drivers and outcome != Outcome.ERROR:  # as the message: with --sway-drivers=0, none
            for heading, named in row_sections(row, row.get("values") or []):
                out += [md("Drivers: " + heading), ""]
                if named:
                    out += _drivers_table(named) + [""]
        if row.get("evidence"):  # what the message says after its drivers: tokens, examples
            out += [_fenced("\n".join(map(str, row["evidence"]))), ""]
    if _against_baseline(row):
        baseline = row["baseline"]
        if baseline.get("message"):
            out += [_fenced(baseline["message"]), ""]
        if baseline.get("regressed_items") is not None:  # drivers were looked for
            heading = regression_heading(
                baseline["direction"], baseline["regressed_items"], row.get("n", 0), len(baseline["drivers"])
            )
            out += [md("Drivers: " + heading), ""]
            if baseline["drivers"]:
                out += _drivers_table(baseline["drivers"], baseline=True) + [""]
    return out


def _drivers_table(drivers: list[dict], *, baseline: bool = False) -> list[str]:
    if baseline:
        lines = [_row(["value", "baseline", "change", "item"]), _row(["--:", "--:", "--:", "---"])]
        for d in drivers:
            change = f"{d['value'] - d['baseline_value']:+.4g}"
            item = code(show_item(d["item"], _ITEM_CHARS))
            lines.append(_row([number_text(d["value"]), number_text(d["baseline_value"]), change, item]))
        return lines
    lines = [_row(["value", "item"]), _row(["--:", "---"])]
    lines += [_row([number_text(d["value"]), code(show_item(d["item"], _ITEM_CHARS))]) for d in drivers]
    return lines
