"""The terminal summary: the table under pytest's ``sway`` section and its formatters (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..stats.drivers import visible
from ..stats.outcome import Outcome
from .rows import sort_rows

_ID_WIDTH = 60


def summary_lines(rows: Sequence[dict], *, footer: str) -> list[str]:
    """The table under pytest's ``sway`` section; no lines when no rows."""
    if not rows:
        return []
    rows = sort_rows(rows)
    names = short_ids([r["nodeid"] for r in rows])
    with_baseline = any(r.get("baseline") is not None for r in rows)
    table: list[tuple[str, ...]] = [("test", "probe", "n", "estimate", ci_header(rows), "gate", "outcome")]
    if with_baseline:
        table[0] += ("vs baseline",)
    for name, row in zip(names, rows):
        if row["outcome"] == Outcome.ERROR:
            table.append(
                (name, row["label"], "-", "-", "-", gate_text(row), "ERROR") + (("-",) if with_baseline else ())
            )
            continue
        curve = (row.get("details") or {}).get("curve")
        table.append(
            (
                name,
                row["label"] + (" " + sparkline([point["mean"] for point in curve]) if curve else ""),
                n_text(row),
                number_text(row["estimate"]),
                interval_cell(row),
                gate_text(row),
                outcome_text(row),
            )
            + ((versus_text(row.get("baseline")),) if with_baseline else ())
        )
        for slice_name, part in (row.get("slices") or {}).items():
            table.append(
                (
                    f"  slice {slice_name}",
                    "",
                    n_text(part),
                    number_text(part["estimate"]),
                    interval_cell(part, row.get("bounds")),
                    gate_text(row),
                    outcome_text(part),
                )
                + (("",) if with_baseline else ())
            )
    table = [tuple(visible(c) for c in r) for r in table]  # labels and slice names: no raw ESC on a terminal
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    right = {2, 3}  # numbers align right
    lines = []
    for r in table:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    for name, row in zip(names, rows):
        lines += [visible(f"note: {name}: {note}") for note in row.get("notes") or ()]
    lines.append(footer)
    return lines


#: The tag the table puts after an interval that is not the run's bootstrap.
METHOD_TAGS = {"all-equal": "all-equal", "clopper-pearson": "CP", "betting": "betting", "tango": "tango"}


def interval_cell(row, bounds: dict | None = None) -> str:
    """A row's (or slice's) interval, tagged with its method where that is not the bootstrap, and
    ``bounded k=20`` where it is a bounded result's (``bounds``: a slice's row's, else the row's own)."""
    tags = [METHOD_TAGS.get(row.get("ci_method", ""), "")]
    bounds = bounds if bounds is not None else row.get("bounds")
    if isinstance(bounds, dict):
        tags.append(bounded_tag(bounds))
    tag = ", ".join(t for t in tags if t)
    return f"[{number_text(row['ci_low'])}, {number_text(row['ci_high'])}]" + (f" {tag}" if tag else "")


def bounded_tag(bounds: dict) -> str:
    """``bounded k=20``: the tag after a bounded result's interval."""
    return f"bounded k={bounds.get('k')}"


#: What the footer says a bounded interval is.
BOUNDED_NOTE = (
    "the engine returned only the top-k log-probabilities, so each item's value is known to lie between two ends; "
    "the gate judged the conservative end: the interval's low is the low ends' (above=), its high the high ends' "
    "(below=)"
)


def methods_text(rows: Sequence[dict], bootstrap: str) -> str:
    """The footer's account of the intervals: the bootstrap, then each tag used and what it means."""
    from ..stats.methods import interval_how

    methods = {
        part.get("ci_method") for r in rows if "ci_method" in r for part in [r, *(r.get("slices") or {}).values()]
    }
    names = [f"{tag}: {interval_how(m, 0, '').split(',')[0]}" for m, tag in METHOD_TAGS.items() if m in methods]
    bootstrapped = bool(methods - set(METHOD_TAGS))
    tags = sorted({bounded_tag(r["bounds"]) for r in rows if isinstance(r.get("bounds"), dict)})
    bounded = [f"{', '.join(tags)}: {BOUNDED_NOTE}"] if tags else []
    return "; ".join(([bootstrap] if bootstrapped or not names else []) + names + bounded)


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    """``▁▂▄▆█``: each value's height between the smallest and the largest."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = high - low
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        else:
            out.append(_BARS[round((v - low) / span * (len(_BARS) - 1)) if span > 0 else 0])
    return "".join(out)


def describe_backend(info: dict) -> str:
    """``hf ./base + ./runs/v3 (cpu, float32)``, ``dummy (effect 0.5)``."""
    text = str(info.get("name", "?"))
    if info.get("model"):
        text += f" {info['model']}"
        other = info.get("adapter") or info.get("finetuned")
        if other:
            text += f" + {other}"
    extras = [str(info[k]) for k in ("device", "dtype") if info.get(k)]
    if info.get("effect") is not None:
        extras.append(f"effect {info['effect']}")
    if info.get("noise_floor") is not None:  # an engine's batch-composition noise, measured at startup
        extras.append(f"batch noise {info['noise_floor']:.2g} nats")
    return text + (f" ({', '.join(extras)})" if extras else "")


def ci_header(rows) -> str:
    """The interval column's heading: ``95% CI`` when every row has that level, else ``CI``."""
    levels = {r.get("confidence") for r in rows if r["outcome"] != Outcome.ERROR}
    if len(levels) == 1:
        (level,) = levels
        return f"{level * 100:.4g}% CI"
    return "CI"


def n_text(row) -> str:
    """Items, and the groups the bootstrap resampled: ``24 (6 groups)``."""
    return f"{row['n']} ({row['n_groups']} groups)" if row.get("n_groups") is not None else str(row["n"])


def number_text(x) -> str:
    """A number in four significant digits; ``inf``, ``-inf``, ``-`` for none."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "inf" if x is not None and x > 0 else ("-inf" if x is not None else "-")
    return f"{x:.4g}"


def gate_text(row) -> str:
    """A row's thresholds: ``>= 0.05``, ``<= 0.1``, both, or ``-``."""
    parts = []
    if row.get("above") is not None:
        parts.append(f">= {row['above']:g}")
    if row.get("below") is not None:
        parts.append(f"<= {row['below']:g}")
    return ", ".join(parts) if parts else "-"


def outcome_text(row) -> str:
    """A row's outcome in words, with the items an inconclusive gate would need."""
    outcome = row["outcome"]
    if outcome == Outcome.FAILED:
        return "FAILED"
    if outcome == Outcome.INCONCLUSIVE:
        needed = row.get("items_needed")
        return f"FAILED (inconclusive: ~{needed} items)" if needed else "FAILED (inconclusive)"
    return outcome


def drivers_named(doc: dict) -> bool:
    """Whether the run named drivers (``--sway-drivers`` above 0): a failed gate's rows then
    carry them, and a report shows its headings (the JSON's ``drivers`` is ``[]`` either way)."""
    k = (doc.get("settings") or {}).get("drivers")
    return not isinstance(k, int) or k > 0


REGRESSED = "regressed"
INCONCLUSIVE_VS_BASELINE = "inconclusive"


def regression_verdict(row: dict) -> str | None:
    """What a row's regression gate found against the baseline: ``"regressed"`` (it failed),
    ``"inconclusive"`` (a regression beyond max_regression could not be ruled out: this fails
    the test, but is not counted as a regression), or None (passed, reported, not compared)."""
    baseline = row.get("baseline")
    outcome = baseline.get("outcome") if isinstance(baseline, dict) else None
    if outcome == Outcome.FAILED:
        return REGRESSED
    if outcome == Outcome.INCONCLUSIVE:
        return INCONCLUSIVE_VS_BASELINE
    return None


def versus_text(comparison: dict | None) -> str:
    """A comparison with the baseline: the change and its interval, and whether it regressed
    (``REGRESSED``) or could not be told apart from a regression (``inconclusive``)."""
    if not comparison:
        return "-"
    if comparison["status"] != "compared":
        return comparison["status"]
    delta = comparison.get("delta")
    sign = "+" if delta is not None and delta >= 0 else ""
    text = f"Δ {sign}{number_text(delta)} [{number_text(comparison.get('ci_low'))}, {number_text(comparison.get('ci_high'))}]"
    verdict = regression_verdict({"baseline": comparison})
    if verdict == REGRESSED:
        text += " REGRESSED"
    elif verdict == INCONCLUSIVE_VS_BASELINE:
        text += " inconclusive"
    return text


def short_ids(nodeids: list[str], width: int = _ID_WIDTH) -> list[str]:
    """Drop the file (or else the folders) every id shares; shorten long ids
    from the left, keeping the test name, which is what tells rows apart."""
    files = [n.split("::", 1)[0] for n in nodeids]
    folders = [f.split("/")[:-1] for f in files]
    common = 0
    if folders and all(folders):
        while all(len(f) > common and f[common] == folders[0][common] for f in folders):
            common += 1
    cut = len("/".join(folders[0][:common])) + 1 if common else 0
    if len(set(files)) == 1 and all("::" in n for n in nodeids):
        cut = len(files[0]) + 2
    return [n[cut:] if len(n) - cut <= width else "..." + n[-(width - 3) :] for n in nodeids]
