"""Baselines: a run's per-item values saved with provenance, and paired comparisons against them.

``--sway-save-baseline`` writes, for every probe run, the per-item values keyed
by item (prompt, case, text). ``--sway-baseline`` matches the current run's
values to the saved ones item by item, not by position, and bootstraps the
mean of the paired differences. A comparison is only made when it means
something: a changed item set or a different base model (or dtype) is
reported instead.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

SCHEMA = 1
KIND = "pytest-sway baseline"

COMPARED = "compared"
NO_BASELINE = "no baseline"
ITEMS_CHANGED = "items changed"
PROVENANCE_MISMATCH = "provenance mismatch"

#: Provenance fields that must agree for values to be comparable. The adapter
#: (or fine-tuned checkpoint) is what changes between baselines, so it is not one.
_MUST_MATCH = ("name", "model", "model_sha256", "dtype", "vocab_size", "seed")


def baseline_document(rows, *, provenance: dict, settings: dict) -> dict[str, Any]:
    tests: dict[str, list] = {}
    for row in rows:
        if row.get("outcome") == "error" or "values" not in row:
            continue
        tests.setdefault(row["nodeid"], []).append(
            {
                "order": row["order"],
                "kind": row["kind"],
                "label": row["label"],
                "params": row["params"],
                "items": row["items"],
                "values": row["values"],
                "estimate": row["estimate"],
                "ci_low": row["ci_low"],
                "ci_high": row["ci_high"],
                "above": row["above"],
                "below": row["below"],
            }
        )
    return {"schema": SCHEMA, "kind": KIND, "provenance": provenance, "settings": settings, "tests": tests}


def load_baseline(path: Path) -> dict[str, Any]:
    """Read a baseline file, or raise ValueError saying what is wrong with it."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ValueError(f"{path} is not a pytest-sway baseline; write one with --sway-save-baseline")
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path} has baseline schema {doc.get('schema')!r}; this pytest-sway reads schema {SCHEMA}")
    return doc


def find_entry(baseline: dict, nodeid: str, label: str, order: int) -> dict | None:
    entries = baseline["tests"].get(nodeid, [])
    same = [e for e in entries if e["label"] == label]
    return next((e for e in same if e["order"] == order), same[0] if same else None)


def provenance_mismatch(now: dict, then: dict) -> str | None:
    """What differs in the base model's identity, or None."""
    diffs = [f"{k}: {then.get(k)!r} then, {now.get(k)!r} now" for k in _MUST_MATCH if now.get(k) != then.get(k)]
    return "; ".join(diffs) or None


def paired_differences(items, values, entry) -> tuple[list[float] | None, str | None]:
    """Current minus saved value, item by item; or None and what changed in the item set."""
    now, then = Counter(items), Counter(entry["items"])
    if now != then:
        added, removed = sum((now - then).values()), sum((then - now).values())
        return None, f"{added} item(s) added, {removed} removed since the baseline"
    saved: dict[str, list[float]] = {}
    for item, value in zip(entry["items"], entry["values"]):
        saved.setdefault(item, []).append(value)
    seen: Counter = Counter()
    diffs = []
    for item, value in zip(items, values):
        diffs.append(float(value) - float(saved[item][seen[item]]))
        seen[item] += 1
    return diffs, None


def compare(result, entry: dict | None, *, provenance_now: dict, provenance_then: dict, bootstrap,
            max_regression: float | None, direction: str | None) -> dict[str, Any]:
    """The ``baseline`` part of a result row; ``outcome`` failed/inconclusive means a regression gate failed."""
    from .result import Gate, ProbeResult

    if entry is None:
        return {"status": NO_BASELINE, "outcome": "reported", "message": "no saved values for this probe"}
    mismatch = provenance_mismatch(provenance_now, provenance_then)
    if mismatch:
        return {"status": PROVENANCE_MISMATCH, "outcome": "reported", "message": f"not compared: {mismatch}"}
    diffs, change = paired_differences(result.items, result.values, entry)
    if diffs is None:
        return {"status": ITEMS_CHANGED, "outcome": "reported", "message": f"not compared: {change}"}
    import numpy as np

    values = np.array(diffs)
    ci = bootstrap.interval(values)
    delta = ProbeResult(
        kind=result.kind, estimate=float(values.mean()), ci=ci, confidence=bootstrap.confidence, n=values.size,
        values=values, method=bootstrap.method, resamples=bootstrap.resamples, seed=bootstrap.seed, params={},
        label=f"{result.label} - baseline",
    )
    out = {"status": COMPARED, "delta": delta.estimate, "ci_low": ci.low, "ci_high": ci.high,
           "baseline_estimate": entry["estimate"], "max_regression": max_regression, "direction": direction,
           "outcome": "reported", "message": ""}
    if max_regression is not None and direction is not None:
        # Higher is better for an `above` gate: the delta may fall by at most max_regression.
        gate = Gate(above=-max_regression) if direction == "higher" else Gate(below=max_regression)
        verdict = gate.judge(delta)
        out["outcome"] = verdict.outcome
        if not verdict.ok:
            out["message"] = f"regression against the baseline beyond max_regression={max_regression:g}:\n{verdict.message}"
    return out


def direction_of(above, below) -> str | None:
    """Which way is better for a gate: ``higher`` (above=), ``lower`` (below=), or None."""
    if above is not None and below is None:
        return "higher"
    if below is not None and above is None:
        return "lower"
    return None
