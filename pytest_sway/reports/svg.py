"""The report page's charts as inline SVG, and how a result row's numbers read there (pure).

``forest`` draws the overview: rows grouped by probe label (and unit) with one
shared x axis per group: rows of one probe share units, so a shared axis makes
their estimates, widths and thresholds comparable at a glance, while different
probes (JS in [0, ln 2], Spearman in [-1, 1], lifts in nats) never share one.
Per-row axes would make every bar look alike and hide those differences.
``strip_plot`` shows one result's per-item values over its interval;
``ablation_chart`` the adapter-scale curve.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from html import escape
from typing import Any

from ..errors import is_number
from ..stats.drivers import visible
from ..stats.outcome import Outcome

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
    "greedy_change": "share of prompts whose greedy continuation changes (Clopper-Pearson interval)",
}

# Forest plot geometry in viewBox units (the SVG scales to the page width).
_W, _PLOT_X0, _PLOT_X1, _NUM_X = 1000, 345, 720, 736

_ROW_H, _TOP, _AXIS_H = 26, 6, 26

NEG_INF, POS_INF = "-\u221e", "+\u221e"  # a null CI bound: the interval is unbounded there


def forest(results: list[dict], names: list[str]) -> str:
    """Rows that could not run first (they need attention), then one group per
    probe label and unit, in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(results):
        unit = row_details(r).get("unit")
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
            f'<div class="group"><h3>{esc(label or "could not run")}'
            + (f' <span class="muted">({esc(unit)})</span>' if unit else "")
            + (f'<span class="caption">{esc(caption)}</span>' if caption else "")
            + "</h3>"
            + _forest_svg([(i, results[i], names[i]) for i in members])
            + "</div>"
        )
    return "\n".join(out)


def _forest_svg(rows: list[tuple[int, dict, str]]) -> str:
    numeric = [r for _, r, _ in rows if row_estimate(r) is not None]
    plot_h = _ROW_H * len(rows)
    height = _TOP + plot_h + (_AXIS_H if numeric else 4)
    out = [f'<svg class="forest" viewBox="0 0 {_W} {height}" width="{_W}" height="{height}" role="img">']
    axis = None
    if numeric:
        axis = _Axis([0.0] + [v for r in numeric for v in row_extent(r)], _PLOT_X0, _PLOT_X1)
        out.append(_x_axis(axis, _TOP, _TOP + plot_h, stripes=len(rows)))
    for k, (i, r, name) in enumerate(rows):
        y = _TOP + k * _ROW_H
        cy, text_y = y + _ROW_H / 2, f"{y + _ROW_H / 2 + 4:.1f}"
        color = outcome_color(r.get("outcome"))
        out.append(f'<g class="row"><title>{esc(r.get("nodeid"))}\n{esc(r.get("label"))}: {esc(r.get("outcome"))}</title>'
                   f'<a href="#r{i}"><text class="rowlabel" x="6" y="{text_y}">{esc(name)}</text></a>')  # fmt: skip
        if axis is not None and row_estimate(r) is not None:
            out.append(_interval_marks(r, axis, y, cy, color))
            out.append(f'<text class="num" x="{_NUM_X}" y="{text_y}">{number(row_estimate(r))}  {ci_text(r)}</text>')
        else:  # an error row (or a row without an estimate) is text
            first = (str(r.get("message") or "no estimate").strip().splitlines() or [""])[0]
            text = f"{r.get('label')}: {first}" if r.get("outcome") == Outcome.ERROR else first
            out.append(f'<text class="errtext" x="{_PLOT_X0}" y="{text_y}" fill="{color}">{esc(clip(text, 90))}</text>')
        out.append(f'<text class="outcome" x="{_W - 6}" y="{text_y}" text-anchor="end" fill="{color}">'
                   f"{esc(r.get('outcome'))}</text></g>")  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def _interval_marks(r: dict, axis: _Axis, y: float, cy: float, color: str) -> str:
    """Gate marks, the CI bar (arrow heads on unbounded sides) and the estimate dot."""
    out = [_gate_line(axis(t), y + 3, y + _ROW_H - 3, t, name) for t, name in row_thresholds(r)]
    low, high = finite(r.get("ci_low")), finite(r.get("ci_high"))
    x_low = axis.x0 if low is None else axis(low)
    x_high = axis.x1 if high is None else axis(high)
    # A zero-width CI still shows: round caps draw a zero-length line as a dot.
    out.append(f'<line class="ci-bar" x1="{x_low:.1f}" x2="{x_high:.1f}" y1="{cy}" y2="{cy}" stroke="{color}"/>')
    for missing, x, direction in ((low, axis.x0, -1), (high, axis.x1, 1)):
        if missing is None:
            back = x - 8 * direction
            out.append(f'<polygon class="unbounded" points="{x},{cy} {back},{cy - 5} {back},{cy + 5}" '
                       f'fill="{color}"/>')  # fmt: skip
    est = row_estimate(r)
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


def strip_plot(r: dict, color: str) -> str:
    """Every item's value as a dot over the shaded CI, with the estimate and gates.
    Dots are spread vertically by a fixed sequence so that equal values stay visible."""
    values = [v for v in map(finite, r.get("values") or []) if v is not None]
    est, low, high = row_estimate(r), finite(r.get("ci_low")), finite(r.get("ci_high"))
    w, top, bottom = 560, 8, 62
    axis = _Axis([0.0] + values + row_extent(r), 12, w - 12)
    x_low = axis.x0 if low is None else axis(low)
    x_high = axis.x1 if high is None else axis(high)
    out = [
        f'<svg class="strip" viewBox="0 0 {w} {bottom + 22}" width="{w}" height="{bottom + 22}" role="img">',
        f"<title>{len(values)} per-item values of {esc(r.get('label'))}</title>",
        f'<rect class="strip-ci" x="{x_low:.1f}" y="{top}" width="{max(x_high - x_low, 1):.1f}" '
        f'height="{bottom - top}" fill="{color}"/>',
        _x_axis(axis, top, bottom),
    ]
    radius = 3.5 if len(values) <= 200 else 2.2
    for k, v in enumerate(values):
        spread = (k * 0.6180339887) % 1.0  # golden-ratio sequence: even, deterministic
        out.append(f'<circle class="item" cx="{axis(v):.1f}" cy="{top + 6 + spread * (bottom - top - 12):.1f}" '
                   f'r="{radius}" fill="{color}"><title>item {k + 1}: {v:.4g}</title></circle>')  # fmt: skip
    out += [_gate_line(axis(t), top, bottom, t, name) for t, name in row_thresholds(r)]
    if est is not None:
        out.append(f'<line class="strip-est" x1="{axis(est):.1f}" x2="{axis(est):.1f}" y1="{top}" y2="{bottom}">'
                   f"<title>estimate {est:.4g}</title></line>")  # fmt: skip
    out.append("</svg>")
    caption = "shaded: CI, solid: estimate, dashed: gate"
    if r.get("support") == [0.0, 1.0] and set(values) <= {0.0, 1.0}:  # a proportion: dots pile up, count them
        caption = f"{sum(values):.0f} of {len(values)} items are 1; {caption}"
    else:
        caption = f"per-item values; {caption}"
    return f"<figure>{''.join(out)}<figcaption>{esc(caption)}</figcaption></figure>"


def ablation_chart(curve: Any) -> str:
    """Mean divergence from the base against adapter scale, with its CI band."""
    pts = []
    for p in curve if isinstance(curve, list) else []:
        s, m = (finite(p.get("scale")), finite(p.get("mean"))) if isinstance(p, dict) else (None, None)
        if s is not None and m is not None:
            lo, hi = finite(p.get("ci_low")), finite(p.get("ci_high"))
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


def finite(x) -> float | None:
    if not is_number(x) or not math.isfinite(x):
        return None
    return float(x)


def row_estimate(r: dict) -> float | None:
    return None if r.get("outcome") == Outcome.ERROR else finite(r.get("estimate"))


def row_extent(r: dict) -> list[float]:
    """The finite numbers a row draws: estimate, CI bounds, thresholds."""
    points = [row_estimate(r), finite(r.get("ci_low")), finite(r.get("ci_high"))] + [t for t, _ in row_thresholds(r)]
    return [p for p in points if p is not None]


def row_details(r: dict) -> dict:
    return r["details"] if isinstance(r.get("details"), dict) else {}


def row_thresholds(r: dict) -> list[tuple[float, str]]:
    sides = (("above", "CI low \u2265"), ("below", "CI high \u2264"))
    found = [(finite(r.get(key)), name) for key, name in sides]
    return [(value, name) for value, name in found if value is not None]


def outcome_color(outcome) -> str:
    return COLORS.get(outcome, COLORS[Outcome.REPORTED.value])


def number(x, unbounded: str = "-") -> str:
    x = finite(x)
    return unbounded if x is None else f"{x:.4g}"


def ci_text(r: dict) -> str:
    return f"[{number(r.get('ci_low'), NEG_INF)}, {number(r.get('ci_high'), POS_INF)}]"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def esc(x) -> str:
    """``x`` as HTML text or an attribute value: markup escaped, and every character HTML rejects
    or hides (NUL, ESC, BEL, bidirectional overrides, lone surrogates, ...) written visibly as
    ``\\u001b`` (``stats.drivers.visible``); newlines and tabs stay."""
    return escape(visible(str(x), keep="\n\r\t"), quote=True)
