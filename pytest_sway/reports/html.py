"""The sway report as one self-contained HTML page (pure).

``render_html(doc)`` turns the JSON report document (``rows.json_document``,
the schema ``rows.SCHEMA`` names) into one page with inline CSS and inline SVG: no scripts, fonts,
images or network references, so it opens offline and can be kept as a CI
artifact. The page depends only on ``doc`` (no timestamps).

Layout: a header (outcome counts, backend, settings, provenance, correction);
an overview forest plot; then one section per test with its per-item values,
failure message, drivers (the items behind a failed gate or regression) and the
lines the message ends with, baseline comparison and probe extras (ablation curve, greedy examples,
delta_kl's token lists). The charts are drawn by ``svg``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..backends.token_changes import TokenChanges
from ..stats.drivers import regression_heading, row_sections
from ..stats.outcome import Outcome
from .summary import (
    INCONCLUSIVE_VS_BASELINE,
    REGRESSED,
    describe_backend,
    drivers_named,
    regression_verdict,
    short_ids,
)
from .svg import (
    COLORS,
    NEG_INF,
    POS_INF,
    ablation_chart,
    ci_text,
    clip,
    esc,
    finite,
    forest,
    number,
    outcome_color,
    row_details,
    row_estimate,
    row_thresholds,
    strip_plot,
)

OUTCOMES = tuple(o.value for o in Outcome)


_ID_CHARS = 46  # longest test id drawn in the forest plot; its tooltip has all of it


def render_html(doc: dict) -> str:
    """The whole page for report document ``doc``."""
    results = [r for r in doc.get("results") or [] if isinstance(r, dict)]
    body = [_header(doc, results)]
    if results:
        names = short_ids([str(r.get("nodeid", "")) for r in results], width=_ID_CHARS)
        body.append("<h2>Overview</h2>" + _legend() + forest(results, names))
        body.append("<h2>Tests</h2>" + _tests(results, drivers=drivers_named(doc)))
    else:
        body.append('<p class="empty">No sway results: no test in this run measured a probe.</p>')
    body.append(f"<footer>pytest-sway report, schema {esc(doc.get('schema', '?'))}</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>pytest-sway report</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


# -- header ----------------------------------------------------------------------


def _header(doc: dict, results: list[dict]) -> str:
    counts = {o: sum(r.get("outcome") == o for r in results) for o in OUTCOMES}
    pills = "".join(
        f'<span class="pill" style="background:{COLORS[o]}">{counts[o]} {o}</span>' if counts[o]
        else f'<span class="pill zero">0 {o}</span>'
        for o in OUTCOMES
    )  # fmt: skip
    tests = len({r.get("nodeid") for r in results})
    # A baseline regression gate can fail a test whose own gate passed. Only a failed one is a
    # regression; an inconclusive one (no regression ruled out, none shown) has a pill of its own.
    regressed = sum(regression_verdict(r) == REGRESSED for r in results)
    if regressed:
        pills += f'<span class="pill" style="background:{COLORS[Outcome.FAILED.value]}">{regressed} regressed vs baseline</span>'
    inconclusive = sum(regression_verdict(r) == INCONCLUSIVE_VS_BASELINE for r in results)
    if inconclusive:
        pills += (f'<span class="pill" style="background:{COLORS[Outcome.INCONCLUSIVE.value]}">{inconclusive} '
                  "inconclusive vs baseline</span>")  # fmt: skip
    out = [
        "<header><h1>pytest-sway report</h1>",
        f'<p class="summary">{pills}<span class="muted">{len(results)} results in {tests} tests</span></p>',
        f"<p><b>Backend</b> {esc(describe_backend(doc.get('backend') or {}))}</p>",
    ]
    corr = doc.get("correction")
    if isinstance(corr, dict) and corr.get("method") not in (None, "none"):
        conf = finite(corr.get("confidence"))
        level = f": each interval at {conf * 100:.4g}% confidence" if conf is not None else ""
        out.append(
            f"<p><b>Multiple-testing correction</b> {esc(corr['method'])} over m = {esc(corr.get('m', '?'))} "
            f"gated results{esc(level)}</p>"
        )
    backend: dict = doc["backend"] if isinstance(doc.get("backend"), dict) else {}
    provenance: dict = doc["provenance"] if isinstance(doc.get("provenance"), dict) else {}
    tables = [
        _kv_table("Settings", doc.get("settings")),
        _kv_table("Backend", backend),
        # Provenance repeats the backend's identity; show what it adds (hashes, versions).
        _kv_table("Provenance", {k: v for k, v in provenance.items() if backend.get(k) != v}),
    ]
    out.append('<div class="tables">' + "".join(tables) + "</div></header>")
    return "\n".join(out)


def _kv_table(title: str, mapping: Any) -> str:
    """A two-column table of the set values; one level of nesting becomes ``key.sub`` rows."""
    if not isinstance(mapping, dict):
        return ""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        elif value is not None:
            flat[key] = value
    if not flat:
        return ""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(_scalar(v))}</td></tr>" for k, v in flat.items())
    return f'<table class="kv"><caption>{esc(title)}</caption>{rows}</table>'


def _legend() -> str:
    keys = "".join(f'<span><i style="background:{COLORS[o]}"></i>{o}</span>' for o in OUTCOMES)
    return (
        f'<p class="legend">{keys}<span><i class="gate-key"></i>gate threshold</span>'
        '<span>&#9664; unbounded side</span><span class="muted">dot: estimate, bar: CI, one axis per probe; '
        "a row links to its test</span></p>"
    )


# -- forest plot -----------------------------------------------------------------


# -- per-test sections -----------------------------------------------------------


def _tests(results: list[dict], *, drivers: bool = True) -> str:
    by_test: dict[str, list[int]] = {}
    for i, r in enumerate(results):
        by_test.setdefault(str(r.get("nodeid", "")), []).append(i)
    return "\n".join(
        f'<section class="test"><h3 class="nodeid">{esc(nodeid)}</h3>'
        + "".join(_result(i, results[i], drivers=drivers) for i in members)
        + "</section>"
        for nodeid, members in by_test.items()
    )


def _result(i: int, r: dict, *, drivers: bool = True) -> str:
    outcome = str(r.get("outcome"))
    color = outcome_color(outcome)
    source = f" &middot; {esc(r['source'])}" if r.get("source") else ""
    out = [
        f'<div class="result" id="r{i}" style="border-left-color:{color}">',
        f'<div class="rhead"><span class="badge" style="background:{color}">{esc(outcome)}</span>'
        f'<b>{esc(r.get("label"))}</b><span class="muted">{esc(r.get("kind"))}{source}</span></div>',
    ]
    if row_estimate(r) is not None:
        out.append(f'<p class="meta">{esc(_meta(r))}</p>')
        out.extend(
            f'<p class="meta"><b>Note</b> {esc(note)}</p>' for note in r.get("notes") or () if isinstance(note, str)
        )
        out.extend(_slice_lines(r))
        if isinstance(r.get("params"), dict) and r["params"]:
            params = " · ".join(f"{k}: {_param(v)}" for k, v in r["params"].items())
            out.append(f'<p class="meta muted">{esc(params)}</p>')
        curve = row_details(r).get("curve")
        out.append('<div class="plots">' + strip_plot(r, color) + (ablation_chart(curve) if curve else "") + "</div>")
    if r.get("message") and outcome != Outcome.PASSED:
        out.append(f'<pre class="message" style="border-left-color:{color}">{esc(r["message"])}</pre>')
    if drivers and outcome in (Outcome.FAILED, Outcome.INCONCLUSIVE) and isinstance(r.get("drivers"), list):
        out.append(_gate_drivers(r))
    evidence = [str(line) for line in r.get("evidence") or () if isinstance(line, str)]
    if evidence and outcome in (Outcome.FAILED, Outcome.INCONCLUSIVE):  # the message's last lines
        out.append(
            f'<pre class="message evidence" style="border-left-color:{color}">{esc(chr(10).join(evidence))}</pre>'
        )
    if isinstance(r.get("baseline"), dict) and r["baseline"]:
        out.append(_baseline(r["baseline"], r.get("n")))
    if isinstance(row_details(r).get("examples"), list) and row_details(r)["examples"]:
        out.append(_examples(row_details(r)["examples"]))
    if isinstance(row_details(r).get("token_changes"), (list, TokenChanges)):
        out.append(_token_changes(row_details(r), r.get("values")))
    out.append("</div>")
    return "\n".join(out)


def _meta(r: dict) -> str:
    conf = finite(r.get("confidence"))
    groups = f" ({r['n_groups']} groups)" if r.get("n_groups") is not None else ""
    parts = [f"n = {r.get('n')}{groups}", f"estimate {number(row_estimate(r))}",
             (f"{conf * 100:.4g}% CI " if conf is not None else "CI ") + ci_text(r)]  # fmt: skip
    if r.get("ci_method"):
        from ..stats.methods import interval_how

        parts.append(interval_how(r["ci_method"], r.get("resamples") or 0, r.get("seed")))
    bounds = r.get("bounds")
    if isinstance(bounds, dict):
        parts.append(bounded_text(bounds))
    gates = row_thresholds(r)
    parts.append("gate " + " and ".join(f"{name} {t:g}" for t, name in gates) if gates else "no gate")
    duration = finite(r.get("duration_s"))
    if duration is not None:
        parts.append(f"{duration * 1000:.0f} ms" if duration < 1 else f"{duration:.2f} s")
    return " · ".join(parts)


def bounded_text(bounds: dict) -> str:
    """A bounded result's two ends, in the metadata line: what each interval is and which the gate judged."""

    def pair(ends) -> str:
        low, high = (list(ends) + [None, None])[:2] if isinstance(ends, list) else (None, None)
        return f"[{number(low, NEG_INF)}, {number(high, POS_INF)}]"

    judged = bounds.get("judged")
    return (
        f"bounded from the top-{bounds.get('k')} log-probabilities: low ends' mean {number(bounds.get('mean_low'))} "
        f"CI {pair(bounds.get('ci_of_low'))}, high ends' mean {number(bounds.get('mean_high'), POS_INF)} "
        f"CI {pair(bounds.get('ci_of_high'))}; "
        + (f"the gate judged the {judged}" if judged else "no gate judged them")
    )


def _slice_lines(r: dict) -> list[str]:
    """One line per slice: its outcome, n, estimate and CI."""
    slices = r.get("slices")
    if not isinstance(slices, dict):
        return []
    lines = []
    for name, s in slices.items():
        if not isinstance(s, dict):
            continue
        outcome = str(s.get("outcome"))
        groups = f" ({s['n_groups']} groups)" if s.get("n_groups") is not None else ""
        lines.append(
            f'<p class="meta"><span class="badge" style="background:{outcome_color(outcome)}">{esc(outcome)}</span>'
            f"slice <b>{esc(name)}</b> · n = {esc(s.get('n'))}{esc(groups)} · estimate {number(s.get('estimate'))} · "
            f"CI {esc(ci_text(s))}</p>"
        )
    return lines


def _gate_drivers(r: dict) -> str:
    """The items behind a failed gate, per failing side: a heading and a table."""
    values = [v for v in map(finite, r.get("values") or []) if v is not None]
    sections = row_sections(r, values, finite)
    return "".join(_drivers_table(heading, drivers) for heading, drivers in sections)


def _drivers_table(heading: str, drivers: list[dict], *, baseline: bool = False) -> str:
    caption = f"<caption>Drivers: {esc(heading)}</caption>"
    if not drivers:
        return f'<table class="drivers">{caption}</table>'
    head = "<tr><th>value</th>" + ("<th>baseline</th><th>change</th>" if baseline else "") + "<th>item</th></tr>"
    rows = []
    for d in drivers:
        value, saved = finite(d.get("value")), finite(d.get("baseline_value"))
        cells = [number(value)]
        if baseline:
            change = f"{value - saved:+.4g}" if value is not None and saved is not None else "-"
            cells += [number(saved), change]
        cells = [f'<td class="n">{esc(c)}</td>' for c in cells]
        rows.append("<tr>" + "".join(cells) + f"<td>{esc(d.get('item', ''))}</td></tr>")
    return f'<table class="drivers">{caption}{head}{"".join(rows)}</table>'


def _baseline(b: dict, n=None) -> str:
    """The comparison with the saved baseline: paired change per item, its CI, and
    the regression gate (``max_regression``) when one was set."""
    parts = [f"<b>Baseline</b> {esc(b.get('status', '?'))}"]
    if finite(b.get("baseline_estimate")) is not None:
        parts.append(f"baseline estimate {number(b['baseline_estimate'])}")
    delta = finite(b.get("delta"))
    if delta is not None:
        ci = f"[{number(b.get('ci_low'), NEG_INF)}, {number(b.get('ci_high'), POS_INF)}]"
        parts.append(f"change vs baseline {delta:+.4g} {esc(ci)}")
    if finite(b.get("max_regression")) is not None:
        better = f", {b['direction']} is better" if b.get("direction") else ""
        parts.append(f"max regression {number(b['max_regression'])}{esc(better)}")
    if b.get("outcome"):
        parts.append(f'<span style="color:{outcome_color(b["outcome"])};font-weight:600">{esc(b["outcome"])}</span>')
    out = '<p class="baseline">' + " &middot; ".join(parts) + "</p>"
    if b.get("message"):
        out += f'<pre class="message" style="border-left-color:{outcome_color(b.get("outcome"))}">{esc(b["message"])}</pre>'
    drivers, regressed = b.get("drivers"), b.get("regressed_items")
    # Drivers were looked for (a failed or inconclusive regression gate, --sway-drivers above 0).
    if isinstance(drivers, list) and isinstance(regressed, int) and b.get("direction") in ("higher", "lower"):
        heading = regression_heading(b["direction"], regressed, n or 0, len(drivers))
        out += _drivers_table(heading, [d for d in drivers if isinstance(d, dict)], baseline=True)
    return out


def _examples(examples: list) -> str:
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(x.get(k, ''))}</td>" for k in ("prompt", "base", "finetuned")) + "</tr>"
        for x in examples
        if isinstance(x, dict)
    )
    return ('<table class="examples"><caption>changed continuations</caption>'
            f"<tr><th>prompt</th><th>base</th><th>fine-tuned</th></tr>{rows}</table>")  # fmt: skip


#: Most prompts whose token lists the page shows (the most moved first); the JSON report has all.
_TOKEN_PROMPTS = 100
#: How whitespace and control characters inside a token are drawn.
_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}


def _token_changes(details: dict, values: Any) -> str:
    """delta_kl's token lists: the tokens most often promoted and suppressed over
    the prompts, then (collapsed) each prompt's most raised and lowered tokens."""
    k = details.get("tokens_per_prompt", "?")
    ranked = details.get("tokens_ranked_by", "p_ft - p_base")
    per_prompt = details["token_changes"]  # a list read from a JSON report, or a session's TokenChanges
    n = len(per_prompt)
    tables = []
    for key, title in (("promoted", "most often promoted"), ("suppressed", "most often suppressed")):
        entries = [e for e in details.get(key) or [] if isinstance(e, dict)]
        rows = "".join(
            f"<tr><td>{_token(e)}</td><td>{esc(e.get('count'))} of {n}</td><td>{_signed(e.get('mean_change'))}</td></tr>"
            for e in entries
        )
        if not rows:
            rows = '<tr><td colspan="3" class="muted">none: no probability changed</td></tr>'
        tables.append(
            f'<table class="tokcount"><caption>{title}</caption>'
            f"<tr><th>token</th><th>prompts</th><th>mean change</th></tr>{rows}</table>"
        )
    values = values if isinstance(values, list) else []
    value_of = [finite(values[i]) if i < len(values) else None for i in range(n)]
    sort_by = [-math.inf if v is None else v for v in value_of]
    order = sorted(range(n), key=lambda i: (-sort_by[i], i))
    shown = order[:_TOKEN_PROMPTS]
    listed = [(i, per_prompt[i]) for i in shown]
    rows = "".join(
        f'<tr><td class="prompt">{esc(e.get("prompt", ""))}</td><td>{number(value_of[i])}</td>'
        f"<td>{_token_list(e.get('raised'))}</td><td>{_token_list(e.get('lowered'))}</td></tr>"
        for i, e in listed
        if isinstance(e, dict)
    )
    more = f"; the {len(shown)} most moved here, all {n} in the JSON report" if n > len(shown) else ", most moved first"
    return (
        f'<p class="tokhead"><b>What changed, token by token</b> <span class="muted">each prompt\'s top {esc(k)} '
        f"tokens by {esc(ranked)} (change of next-token probability), raised and lowered; counted over the "
        f"{n} prompts</span></p>"
        f'<div class="tokens">{"".join(tables)}</div>'
        f"<details><summary>per prompt: tokens raised and lowered most ({n} prompts{esc(more)})</summary>"
        '<table class="tokprompts"><tr><th>prompt</th><th>value</th><th>raised: p_base \u2192 p_ft</th>'
        f"<th>lowered: p_base \u2192 p_ft</th></tr>{rows}</table></details>"
    )


def _token_list(entries: Any) -> str:
    if not isinstance(entries, list) or not entries:
        return '<span class="muted">none</span>'
    return "<br>".join(
        f"{_token(e)} {_prob(e.get('p_base'))} \u2192 {_prob(e.get('p_ft'))}" for e in entries if isinstance(e, dict)
    )


def _token(e: dict) -> str:
    """A token's text with its spaces and control characters drawn (the exact text in the tooltip)."""
    text = str(e.get("token", ""))
    shown = "".join(_VISIBLE.get(ch, ch if ch.isprintable() else f"\\x{ord(ch):02x}") for ch in text) or "\u2205"
    return f'<code class="tok" title="{esc(json.dumps(text, ensure_ascii=False))} (id {esc(e.get("id"))})">{esc(shown)}</code>'


def _prob(x) -> str:
    x = finite(x)
    return "-" if x is None else f"{x:.3g}"


def _signed(x) -> str:
    x = finite(x)
    return "-" if x is None else f"{x:+.3g}"


# -- numbers, axes, text ---------------------------------------------------------


def _scalar(v) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _param(v) -> str:
    if isinstance(v, dict) and set(v) == {"count"}:
        return f"{v['count']} items"
    return clip(_scalar(v), 60)


_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;background:#fff;color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,"Noto Sans","Liberation Sans",sans-serif}
main{max-width:1100px;margin:0 auto;padding:24px 28px 40px}
h1{font-size:26px;margin:0 0 6px}
h2{font-size:19px;margin:34px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:18px 0 2px}
pre,.nodeid,.examples td{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
.muted,.caption,figcaption{color:var(--muted)}
.caption{margin-left:12px;font-size:12.5px;font-weight:400}
.summary{margin:6px 0 12px}
.pill{display:inline-block;padding:1px 11px;margin-right:6px;border-radius:999px;color:#fff;font-weight:600;
font-size:13px}
.pill.zero{background:#eaeef2;color:var(--muted);font-weight:500}
.tables{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:14px 22px;align-items:start}
table{border-collapse:collapse;font-size:12.5px}
caption{text-align:left;font-weight:600;font-size:13px;padding:0 0 2px}
th,td{text-align:left;vertical-align:top;padding:2px 8px 2px 0;border-bottom:1px solid #eaeef2}
.kv th{color:var(--muted);font-weight:500;white-space:nowrap}
.kv td{overflow-wrap:anywhere}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12.5px;margin:0 0 4px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:5px;vertical-align:-1px}
.legend i.gate-key{width:0;height:12px;border-radius:0;border-left:2px dashed #24292f}
svg{display:block;max-width:100%;height:auto}
svg text{font-size:12px;fill:var(--fg);font-variant-numeric:tabular-nums}
.forest .stripe{fill:var(--soft)}
.forest a:hover text{text-decoration:underline}
.num{fill:var(--fg)}
.outcome{font-weight:600}
.tick{font-size:11px;fill:var(--muted)}
.grid{stroke:#e4e8ec;stroke-width:1}
.grid.zero{stroke:#8c959f}
.axis{stroke:#8c959f}
.ci-bar{stroke-width:3;stroke-linecap:round}
.gate{stroke:#24292f;stroke-width:1.5;stroke-dasharray:4 3}
.strip-ci{opacity:.13}
.item{fill-opacity:.55}
.strip-est{stroke:#24292f;stroke-width:2}
.ablation-band{fill:#0969da;opacity:.15}
.ablation-line{fill:none;stroke:#0969da;stroke-width:2}
.ablation-point{fill:#0969da}
.axis-title{fill:var(--muted)}
.test{margin-top:18px}
.nodeid{font-size:13.5px;overflow-wrap:anywhere}
.result{border:1px solid var(--line);border-left:4px solid;border-radius:6px;padding:10px 14px;margin:8px 0}
.rhead{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.badge{color:#fff;border-radius:4px;padding:0 7px;font-size:12px;font-weight:600}
.meta{margin:4px 0;font-size:13px}
.plots{display:flex;flex-wrap:wrap;gap:8px 28px;align-items:flex-start}
figure{margin:6px 0 0}
figcaption{font-size:12px}
pre.message{background:var(--soft);border-left:3px solid;padding:8px 12px;margin:10px 0 4px;white-space:pre-wrap;
overflow-wrap:anywhere;font-size:12.5px}
.baseline{margin:8px 0 0;font-size:13px}
.examples,.drivers{margin-top:10px}
.drivers td{white-space:pre-wrap;overflow-wrap:anywhere;padding-right:16px}
.drivers td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.examples td{white-space:pre-wrap;overflow-wrap:anywhere;padding-right:16px}
.tokhead{margin:10px 0 2px;font-size:13px}
.tokens{display:flex;flex-wrap:wrap;gap:8px 36px;align-items:flex-start}
code.tok{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;background:#eef1f6;
border-radius:3px;padding:0 3px;white-space:pre}
details{margin:8px 0 0;font-size:12.5px}
summary{cursor:pointer;color:var(--muted)}
.tokprompts td{padding-right:16px}
.tokprompts td.prompt{max-width:380px;overflow-wrap:anywhere}
.empty{font-size:16px;color:var(--muted);margin:28px 0}
footer{margin-top:36px;color:var(--muted);font-size:12px}
"""
