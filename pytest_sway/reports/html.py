"""The sway report as one self-contained HTML page (pure).

``render_html(doc)`` turns the JSON report document (``report.json_document``,
schema 1) into one page with inline CSS and inline SVG: no scripts, fonts,
images or network references, so it opens offline and can be kept as a CI
artifact. The page depends only on ``doc`` (no timestamps).

Layout: a header (outcome counts, backend, settings, provenance, correction);
an overview forest plot; then one section per test with its per-item values,
failure message and drivers (the items behind a failed gate or regression),
baseline comparison and probe extras (ablation curve, greedy examples,
delta_kl's token lists).

The forest plot groups rows by probe label (and unit) with one shared x axis
per group: rows of one probe share units, so a shared axis makes their
estimates, widths and thresholds comparable at a glance, while different
probes (JS in [0, ln 2], Spearman in [-1, 1], lifts in nats) never share one.
Per-row axes would make every bar look alike and hide those differences.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from html import escape
from typing import Any

from ..backends.token_changes import TokenChanges
from ..errors import is_number
from ..stats.drivers import regression_heading, row_sections
from ..stats.outcome import Outcome
from .summary import describe_backend, short_ids

OUTCOMES = tuple(o.value for o in Outcome)
#: By outcome value: rows hold plain strings.
COLORS = {Outcome.PASSED.value: "#1a7f37", Outcome.FAILED.value: "#cf222e", Outcome.INCONCLUSIVE.value: "#b86e00",
          Outcome.REPORTED.value: "#6e7781", Outcome.ERROR.value: "#8250df"}  # fmt: skip

#: Beside each forest group's heading, for the built-in probes.
_CAPTIONS = {
    "delta_kl": "divergence of next-token distributions, fine-tuned vs base (JS is at most ln 2 = 0.693)",
    "completion_lift": "log p(completion) under the fine-tune minus under the base; positive = learned",
    "perplexity_shift": "NLL per token, fine-tuned minus base; positive = worse",
    "preference_shift": "change in the margin log p(chosen) - log p(rejected); positive = prefers chosen more",
    "adapter_ablation": "Spearman correlation of adapter scale with divergence, mean over prompts (-1 to 1)",
    "null_contrast": "divergence under the adapter minus under random adapters of its size",
    "greedy_change": "share of prompts whose greedy continuation changes (Wilson interval)",
}

_ID_CHARS = 46  # longest test id drawn in the forest plot; its tooltip has all of it

# Forest plot geometry in viewBox units (the SVG scales to the page width).
_W, _PLOT_X0, _PLOT_X1, _NUM_X = 1000, 345, 720, 736
_ROW_H, _TOP, _AXIS_H = 26, 6, 26

_NEG_INF, _POS_INF = "-\u221e", "+\u221e"  # a null CI bound: the interval is unbounded there


def render_html(doc: dict) -> str:
    """The whole page for report document ``doc``."""
    results = [r for r in doc.get("results") or [] if isinstance(r, dict)]
    body = [_header(doc, results)]
    if results:
        names = short_ids([str(r.get("nodeid", "")) for r in results], width=_ID_CHARS)
        body.append("<h2>Overview</h2>" + _legend() + _forest(results, names))
        body.append("<h2>Tests</h2>" + _tests(results))
    else:
        body.append('<p class="empty">No sway results: no test in this run measured a probe.</p>')
    body.append(f"<footer>pytest-sway report, schema {_e(doc.get('schema', '?'))}</footer>")
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
    regressed = sum(isinstance(r.get("baseline"), dict) and r["baseline"].get("outcome") in (Outcome.FAILED, Outcome.INCONCLUSIVE)
                    for r in results)  # fmt: skip
    if regressed:  # a baseline regression gate can fail a test whose own gate passed
        pills += f'<span class="pill" style="background:{COLORS[Outcome.FAILED.value]}">{regressed} regressed vs baseline</span>'
    out = [
        "<header><h1>pytest-sway report</h1>",
        f'<p class="summary">{pills}<span class="muted">{len(results)} results in {tests} tests</span></p>',
        f"<p><b>Backend</b> {_e(describe_backend(doc.get('backend') or {}))}</p>",
    ]
    corr = doc.get("correction")
    if isinstance(corr, dict) and corr.get("method") not in (None, "none"):
        conf = _finite(corr.get("confidence"))
        level = f": each interval at {conf * 100:.4g}% confidence" if conf is not None else ""
        out.append(
            f"<p><b>Multiple-testing correction</b> {_e(corr['method'])} over m = {_e(corr.get('m', '?'))} "
            f"gated results{_e(level)}</p>"
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
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_scalar(v))}</td></tr>" for k, v in flat.items())
    return f'<table class="kv"><caption>{_e(title)}</caption>{rows}</table>'


def _legend() -> str:
    keys = "".join(f'<span><i style="background:{COLORS[o]}"></i>{o}</span>' for o in OUTCOMES)
    return (
        f'<p class="legend">{keys}<span><i class="gate-key"></i>gate threshold</span>'
        '<span>&#9664; unbounded side</span><span class="muted">dot: estimate, bar: CI, one axis per probe; '
        "a row links to its test</span></p>"
    )


# -- forest plot -----------------------------------------------------------------


def _forest(results: list[dict], names: list[str]) -> str:
    """Rows that could not run first (they need attention), then one group per
    probe label and unit, in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(results):
        unit = _details(r).get("unit")
        key = (
            ("", None)
            if r.get("outcome") == Outcome.ERROR
            else (str(r.get("label")), None if unit is None else str(unit))
        )
        groups.setdefault(key, []).append(i)
    out = []
    for label, unit in sorted(groups, key=lambda key: key[0] != ""):  # sorted() is stable
        members = groups[(label, unit)]
        kinds = {results[i].get("kind") for i in members}
        caption = _CAPTIONS.get(str(kinds.pop()), "") if len(kinds) == 1 and label else ""
        out.append(
            f'<div class="group"><h3>{_e(label or "could not run")}'
            + (f' <span class="muted">({_e(unit)})</span>' if unit else "")
            + (f'<span class="caption">{_e(caption)}</span>' if caption else "")
            + "</h3>"
            + _forest_svg([(i, results[i], names[i]) for i in members])
            + "</div>"
        )
    return "\n".join(out)


def _forest_svg(rows: list[tuple[int, dict, str]]) -> str:
    numeric = [r for _, r, _ in rows if _estimate(r) is not None]
    plot_h = _ROW_H * len(rows)
    height = _TOP + plot_h + (_AXIS_H if numeric else 4)
    out = [f'<svg class="forest" viewBox="0 0 {_W} {height}" width="{_W}" height="{height}" role="img">']
    axis = None
    if numeric:
        axis = _Axis([0.0] + [v for r in numeric for v in _extent(r)], _PLOT_X0, _PLOT_X1)
        out.append(_x_axis(axis, _TOP, _TOP + plot_h, stripes=len(rows)))
    for k, (i, r, name) in enumerate(rows):
        y = _TOP + k * _ROW_H
        cy, text_y = y + _ROW_H / 2, f"{y + _ROW_H / 2 + 4:.1f}"
        color = _color(r.get("outcome"))
        out.append(f'<g class="row"><title>{_e(r.get("nodeid"))}\n{_e(r.get("label"))}: {_e(r.get("outcome"))}</title>'
                   f'<a href="#r{i}"><text class="rowlabel" x="6" y="{text_y}">{_e(name)}</text></a>')  # fmt: skip
        if axis is not None and _estimate(r) is not None:
            out.append(_interval_marks(r, axis, y, cy, color))
            out.append(f'<text class="num" x="{_NUM_X}" y="{text_y}">{_num(_estimate(r))}  {_ci(r)}</text>')
        else:  # an error row (or a row without an estimate) is text
            first = (str(r.get("message") or "no estimate").strip().splitlines() or [""])[0]
            text = f"{r.get('label')}: {first}" if r.get("outcome") == Outcome.ERROR else first
            out.append(f'<text class="errtext" x="{_PLOT_X0}" y="{text_y}" fill="{color}">{_e(_clip(text, 90))}</text>')
        out.append(f'<text class="outcome" x="{_W - 6}" y="{text_y}" text-anchor="end" fill="{color}">'
                   f"{_e(r.get('outcome'))}</text></g>")  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def _interval_marks(r: dict, axis: _Axis, y: float, cy: float, color: str) -> str:
    """Gate marks, the CI bar (arrow heads on unbounded sides) and the estimate dot."""
    out = [_gate_line(axis(t), y + 3, y + _ROW_H - 3, t, name) for t, name in _gates(r)]
    low, high = _finite(r.get("ci_low")), _finite(r.get("ci_high"))
    x_low = axis.x0 if low is None else axis(low)
    x_high = axis.x1 if high is None else axis(high)
    # A zero-width CI still shows: round caps draw a zero-length line as a dot.
    out.append(f'<line class="ci-bar" x1="{x_low:.1f}" x2="{x_high:.1f}" y1="{cy}" y2="{cy}" stroke="{color}"/>')
    for missing, x, direction in ((low, axis.x0, -1), (high, axis.x1, 1)):
        if missing is None:
            back = x - 8 * direction
            out.append(f'<polygon class="unbounded" points="{x},{cy} {back},{cy - 5} {back},{cy + 5}" '
                       f'fill="{color}"/>')  # fmt: skip
    est = _estimate(r)
    if est is not None:
        out.append(f'<circle class="est" cx="{axis(est):.1f}" cy="{cy}" r="5" fill="{color}"/>')
    return "".join(out)


def _tick(x, y, label: str, *, anchor: str = "middle") -> str:
    return f'<text class="tick" x="{x}" y="{y}" text-anchor="{anchor}">{label}</text>'


def _gate_line(x: float, y1: float, y2: float, threshold: float, name: str) -> str:
    return (f'<line class="gate" x1="{x:.1f}" x2="{x:.1f}" y1="{y1}" y2="{y2}">'
            f"<title>gate: {name} {threshold:g}</title></line>")  # fmt: skip


def _x_axis(axis: _Axis, top: float, bottom: float, *, stripes: int = 0) -> str:
    """Zebra stripes for ``stripes`` forest rows, grid lines (darker at 0), tick labels."""
    out = [f'<rect class="stripe" x="0" y="{top + k * _ROW_H}" width="{_W}" height="{_ROW_H}"/>'
           for k in range(0, stripes, 2)]  # fmt: skip
    for t in axis.ticks:
        x = f"{axis(t):.1f}"
        out.append(f'<line class="grid{" zero" if t == 0 else ""}" x1="{x}" x2="{x}" y1="{top}" y2="{bottom}"/>')
        out.append(_tick(x, bottom + 15, axis.label(t)))
    out.append(f'<line class="axis" x1="{axis.x0}" x2="{axis.x1}" y1="{bottom}" y2="{bottom}"/>')
    return "".join(out)


# -- per-test sections -----------------------------------------------------------


def _tests(results: list[dict]) -> str:
    by_test: dict[str, list[int]] = {}
    for i, r in enumerate(results):
        by_test.setdefault(str(r.get("nodeid", "")), []).append(i)
    return "\n".join(
        f'<section class="test"><h3 class="nodeid">{_e(nodeid)}</h3>'
        + "".join(_result(i, results[i]) for i in members)
        + "</section>"
        for nodeid, members in by_test.items()
    )


def _result(i: int, r: dict) -> str:
    outcome = str(r.get("outcome"))
    color = _color(outcome)
    source = f" &middot; {_e(r['source'])}" if r.get("source") else ""
    out = [
        f'<div class="result" id="r{i}" style="border-left-color:{color}">',
        f'<div class="rhead"><span class="badge" style="background:{color}">{_e(outcome)}</span>'
        f'<b>{_e(r.get("label"))}</b><span class="muted">{_e(r.get("kind"))}{source}</span></div>',
    ]
    if _estimate(r) is not None:
        out.append(f'<p class="meta">{_e(_meta(r))}</p>')
        out.extend(_slice_lines(r))
        if isinstance(r.get("params"), dict) and r["params"]:
            params = " · ".join(f"{k}: {_param(v)}" for k, v in r["params"].items())
            out.append(f'<p class="meta muted">{_e(params)}</p>')
        curve = _details(r).get("curve")
        out.append('<div class="plots">' + _strip_plot(r, color) + (_ablation_chart(curve) if curve else "") + "</div>")
    if r.get("message") and outcome != Outcome.PASSED:
        out.append(f'<pre class="message" style="border-left-color:{color}">{_e(r["message"])}</pre>')
    if outcome in (Outcome.FAILED, Outcome.INCONCLUSIVE) and isinstance(r.get("drivers"), list):
        out.append(_gate_drivers(r))
    if isinstance(r.get("baseline"), dict) and r["baseline"]:
        out.append(_baseline(r["baseline"], r.get("n")))
    if isinstance(_details(r).get("examples"), list) and _details(r)["examples"]:
        out.append(_examples(_details(r)["examples"]))
    if isinstance(_details(r).get("token_changes"), (list, TokenChanges)):
        out.append(_token_changes(_details(r), r.get("values")))
    out.append("</div>")
    return "\n".join(out)


def _meta(r: dict) -> str:
    conf = _finite(r.get("confidence"))
    groups = f" ({r['n_groups']} groups)" if r.get("n_groups") is not None else ""
    parts = [f"n = {r.get('n')}{groups}", f"estimate {_num(_estimate(r))}",
             (f"{conf * 100:.4g}% CI " if conf is not None else "CI ") + _ci(r)]  # fmt: skip
    if r.get("method"):
        from ..stats.methods import interval_how

        parts.append(interval_how(r["method"], r.get("resamples") or 0, r.get("seed")))
    gates = _gates(r)
    parts.append("gate " + " and ".join(f"{name} {t:g}" for t, name in gates) if gates else "no gate")
    duration = _finite(r.get("duration_s"))
    if duration is not None:
        parts.append(f"{duration * 1000:.0f} ms" if duration < 1 else f"{duration:.2f} s")
    return " · ".join(parts)


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
            f'<p class="meta"><span class="badge" style="background:{_color(outcome)}">{_e(outcome)}</span>'
            f"slice <b>{_e(name)}</b> · n = {_e(s.get('n'))}{_e(groups)} · estimate {_num(s.get('estimate'))} · "
            f"CI {_e(_ci(s))}</p>"
        )
    return lines


def _strip_plot(r: dict, color: str) -> str:
    """Every item's value as a dot over the shaded CI, with the estimate and gates.
    Dots are spread vertically by a fixed sequence so that equal values stay visible."""
    values = [v for v in map(_finite, r.get("values") or []) if v is not None]
    est, low, high = _estimate(r), _finite(r.get("ci_low")), _finite(r.get("ci_high"))
    w, top, bottom = 560, 8, 62
    axis = _Axis([0.0] + values + _extent(r), 12, w - 12)
    x_low = axis.x0 if low is None else axis(low)
    x_high = axis.x1 if high is None else axis(high)
    out = [
        f'<svg class="strip" viewBox="0 0 {w} {bottom + 22}" width="{w}" height="{bottom + 22}" role="img">',
        f"<title>{len(values)} per-item values of {_e(r.get('label'))}</title>",
        f'<rect class="strip-ci" x="{x_low:.1f}" y="{top}" width="{max(x_high - x_low, 1):.1f}" '
        f'height="{bottom - top}" fill="{color}"/>',
        _x_axis(axis, top, bottom),
    ]
    radius = 3.5 if len(values) <= 200 else 2.2
    for k, v in enumerate(values):
        spread = (k * 0.6180339887) % 1.0  # golden-ratio sequence: even, deterministic
        out.append(f'<circle class="item" cx="{axis(v):.1f}" cy="{top + 6 + spread * (bottom - top - 12):.1f}" '
                   f'r="{radius}" fill="{color}"><title>item {k + 1}: {v:.4g}</title></circle>')  # fmt: skip
    out += [_gate_line(axis(t), top, bottom, t, name) for t, name in _gates(r)]
    if est is not None:
        out.append(f'<line class="strip-est" x1="{axis(est):.1f}" x2="{axis(est):.1f}" y1="{top}" y2="{bottom}">'
                   f"<title>estimate {est:.4g}</title></line>")  # fmt: skip
    out.append("</svg>")
    caption = "shaded: CI, solid: estimate, dashed: gate"
    if r.get("method") == "wilson" and set(values) <= {0.0, 1.0}:  # a proportion: dots pile up, count them
        caption = f"{sum(values):.0f} of {len(values)} items are 1; {caption}"
    else:
        caption = f"per-item values; {caption}"
    return f"<figure>{''.join(out)}<figcaption>{_e(caption)}</figcaption></figure>"


def _ablation_chart(curve: Any) -> str:
    """Mean divergence from the base against adapter scale, with its CI band."""
    pts = []
    for p in curve if isinstance(curve, list) else []:
        s, m = (_finite(p.get("scale")), _finite(p.get("mean"))) if isinstance(p, dict) else (None, None)
        if s is not None and m is not None:
            lo, hi = _finite(p.get("ci_low")), _finite(p.get("ci_high"))
            pts.append((s, m, m if lo is None else lo, m if hi is None else hi))
    if len(pts) < 2:
        return ""
    pts.sort()
    w, h, left, right, bottom = 380, 200, 56, 366, 160
    xs = _Axis([p[0] for p in pts], left, right)
    ys = _Axis([0.0] + [p[2] for p in pts] + [p[3] for p in pts], bottom, 12, ticks=4)  # drawn upwards
    out = [f'<svg class="ablation" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">',
           "<title>mean divergence from the base against adapter scale</title>"]  # fmt: skip
    for t in ys.ticks:
        y = f"{ys(t):.1f}"
        out.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y}" y2="{y}"/>')
        out.append(_tick(left - 5, f"{ys(t) + 4:.1f}", ys.label(t), anchor="end"))
    out += [_tick(f"{xs(t):.1f}", bottom + 15, xs.label(t)) for t in xs.ticks]
    band = [(s, hi) for s, _, _, hi in pts] + [(s, lo) for s, _, lo, _ in reversed(pts)]
    out += [
        f'<line class="axis" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>',
        '<polygon class="ablation-band" points="' + " ".join(f"{xs(s):.1f},{ys(v):.1f}" for s, v in band) + '"/>',
        '<polyline class="ablation-line" points="' + " ".join(f"{xs(s):.1f},{ys(m):.1f}" for s, m, _, _ in pts) + '"/>',
    ]
    out += [f'<circle class="ablation-point" cx="{xs(s):.1f}" cy="{ys(m):.1f}" r="3">'
            f"<title>scale {s:g}: mean {m:.4g} [{lo:.4g}, {hi:.4g}]</title></circle>"
            for s, m, lo, hi in pts]  # fmt: skip
    out.append(f'<text class="axis-title" x="{(left + right) / 2}" y="{h - 6}" text-anchor="middle">'
               "adapter scale</text>"
               f'<text class="axis-title" transform="translate(14 {bottom / 2 + 6}) rotate(-90)" '
               'text-anchor="middle">mean divergence</text></svg>')  # fmt: skip
    caption = "divergence from the base vs adapter scale (band: CI)"
    return f"<figure>{''.join(out)}<figcaption>{caption}</figcaption></figure>"


def _gate_drivers(r: dict) -> str:
    """The items behind a failed gate, per failing side: a heading and a table."""
    values = [v for v in map(_finite, r.get("values") or []) if v is not None]
    sections = row_sections(r, values, _finite)
    return "".join(_drivers_table(heading, drivers) for heading, drivers in sections)


def _drivers_table(heading: str, drivers: list[dict], *, baseline: bool = False) -> str:
    caption = f"<caption>Drivers: {_e(heading)}</caption>"
    if not drivers:
        return f'<table class="drivers">{caption}</table>'
    head = "<tr><th>value</th>" + ("<th>baseline</th><th>change</th>" if baseline else "") + "<th>item</th></tr>"
    rows = []
    for d in drivers:
        value, saved = _finite(d.get("value")), _finite(d.get("baseline_value"))
        cells = [_num(value)]
        if baseline:
            change = f"{value - saved:+.4g}" if value is not None and saved is not None else "-"
            cells += [_num(saved), change]
        cells = [f'<td class="n">{_e(c)}</td>' for c in cells]
        rows.append("<tr>" + "".join(cells) + f"<td>{_e(d.get('item', ''))}</td></tr>")
    return f'<table class="drivers">{caption}{head}{"".join(rows)}</table>'


def _baseline(b: dict, n=None) -> str:
    """The comparison with the saved baseline: paired change per item, its CI, and
    the regression gate (``max_regression``) when one was set."""
    parts = [f"<b>Baseline</b> {_e(b.get('status', '?'))}"]
    if _finite(b.get("baseline_estimate")) is not None:
        parts.append(f"baseline estimate {_num(b['baseline_estimate'])}")
    delta = _finite(b.get("delta"))
    if delta is not None:
        ci = f"[{_num(b.get('ci_low'), _NEG_INF)}, {_num(b.get('ci_high'), _POS_INF)}]"
        parts.append(f"change vs baseline {delta:+.4g} {_e(ci)}")
    if _finite(b.get("max_regression")) is not None:
        better = f", {b['direction']} is better" if b.get("direction") else ""
        parts.append(f"max regression {_num(b['max_regression'])}{_e(better)}")
    if b.get("outcome"):
        parts.append(f'<span style="color:{_color(b["outcome"])};font-weight:600">{_e(b["outcome"])}</span>')
    out = '<p class="baseline">' + " &middot; ".join(parts) + "</p>"
    if b.get("message"):
        out += f'<pre class="message" style="border-left-color:{_color(b.get("outcome"))}">{_e(b["message"])}</pre>'
    drivers = b.get("drivers")
    if isinstance(drivers, list) and b.get("direction") in ("higher", "lower"):
        regressed = b.get("regressed_items")
        heading = regression_heading(
            b["direction"], regressed if isinstance(regressed, int) else len(drivers), n or 0, len(drivers)
        )
        out += _drivers_table(heading, [d for d in drivers if isinstance(d, dict)], baseline=True)
    return out


def _examples(examples: list) -> str:
    rows = "".join(
        "<tr>" + "".join(f"<td>{_e(x.get(k, ''))}</td>" for k in ("prompt", "base", "finetuned")) + "</tr>"
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
            f"<tr><td>{_token(e)}</td><td>{_e(e.get('count'))} of {n}</td><td>{_signed(e.get('mean_change'))}</td></tr>"
            for e in entries
        )
        if not rows:
            rows = '<tr><td colspan="3" class="muted">none: no probability changed</td></tr>'
        tables.append(
            f'<table class="tokcount"><caption>{title}</caption>'
            f"<tr><th>token</th><th>prompts</th><th>mean change</th></tr>{rows}</table>"
        )
    values = values if isinstance(values, list) else []
    value_of = [_finite(values[i]) if i < len(values) else None for i in range(n)]
    sort_by = [-math.inf if v is None else v for v in value_of]
    order = sorted(range(n), key=lambda i: (-sort_by[i], i))
    shown = order[:_TOKEN_PROMPTS]
    listed = [(i, per_prompt[i]) for i in shown]
    rows = "".join(
        f'<tr><td class="prompt">{_e(e.get("prompt", ""))}</td><td>{_num(value_of[i])}</td>'
        f"<td>{_token_list(e.get('raised'))}</td><td>{_token_list(e.get('lowered'))}</td></tr>"
        for i, e in listed
        if isinstance(e, dict)
    )
    more = f"; the {len(shown)} most moved here, all {n} in the JSON report" if n > len(shown) else ", most moved first"
    return (
        f'<p class="tokhead"><b>What changed, token by token</b> <span class="muted">each prompt\'s top {_e(k)} '
        f"tokens by {_e(ranked)} (change of next-token probability), raised and lowered; counted over the "
        f"{n} prompts</span></p>"
        f'<div class="tokens">{"".join(tables)}</div>'
        f"<details><summary>per prompt: tokens raised and lowered most ({n} prompts{_e(more)})</summary>"
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
    return f'<code class="tok" title="{_e(json.dumps(text, ensure_ascii=False))} (id {_e(e.get("id"))})">{_e(shown)}</code>'


def _prob(x) -> str:
    x = _finite(x)
    return "-" if x is None else f"{x:.3g}"


def _signed(x) -> str:
    x = _finite(x)
    return "-" if x is None else f"{x:+.3g}"


# -- numbers, axes, text ---------------------------------------------------------


class _Axis:
    """A linear map from data to drawing coordinates over round ticks (steps of
    1, 2 or 5 times a power of ten) covering ``points``. ``x0 > x1`` draws a y axis upwards."""

    def __init__(self, points: Iterable[float], x0: float, x1: float, *, ticks: int = 5):
        points = [p for p in points if p is not None and math.isfinite(p)] or [0.0]
        lo, hi = min(points), max(points)
        if hi <= lo:  # all equal: a window around the value
            pad = abs(lo) * 0.1 or 1.0
            lo, hi = lo - pad, hi + pad
        raw = (hi - lo) / ticks
        mag = 10.0 ** math.floor(math.log10(raw))
        self.step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))
        first, last = math.floor(lo / self.step + 1e-9), math.ceil(hi / self.step - 1e-9)
        self.ticks = [k * self.step for k in range(first, last + 1)]
        self.lo, self.hi, self.x0, self.x1 = self.ticks[0], self.ticks[-1], x0, x1

    def __call__(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        return self.x0 + (v - self.lo) / (self.hi - self.lo) * (self.x1 - self.x0)

    def label(self, v: float) -> str:
        decimals = max(0, -math.floor(math.log10(self.step) + 1e-9))
        text = f"{v:.{decimals}f}"
        return "0" if float(text) == 0 else text  # never "-0.0"


def _finite(x) -> float | None:
    if not is_number(x) or not math.isfinite(x):
        return None
    return float(x)


def _estimate(r: dict) -> float | None:
    return None if r.get("outcome") == Outcome.ERROR else _finite(r.get("estimate"))


def _extent(r: dict) -> list[float]:
    """The finite numbers a row draws: estimate, CI bounds, thresholds."""
    points = [_estimate(r), _finite(r.get("ci_low")), _finite(r.get("ci_high"))] + [t for t, _ in _gates(r)]
    return [p for p in points if p is not None]


def _details(r: dict) -> dict:
    return r["details"] if isinstance(r.get("details"), dict) else {}


def _gates(r: dict) -> list[tuple[float, str]]:
    sides = (("above", "CI low \u2265"), ("below", "CI high \u2264"))
    found = [(_finite(r.get(key)), name) for key, name in sides]
    return [(value, name) for value, name in found if value is not None]


def _color(outcome) -> str:
    return COLORS.get(outcome, COLORS[Outcome.REPORTED.value])


def _num(x, unbounded: str = "-") -> str:
    x = _finite(x)
    return unbounded if x is None else f"{x:.4g}"


def _ci(r: dict) -> str:
    return f"[{_num(r.get('ci_low'), _NEG_INF)}, {_num(r.get('ci_high'), _POS_INF)}]"


def _scalar(v) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _param(v) -> str:
    if isinstance(v, dict) and set(v) == {"count"}:
        return f"{v['count']} items"
    return _clip(_scalar(v), 60)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _e(x) -> str:
    return escape(str(x), quote=True)


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
