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
import math
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import is_number, is_whole, short_repr
from ..stats.drivers import DEFAULT_DRIVERS, regression_drivers, regression_text
from ..stats.outcome import Outcome
from .outputs import BASELINE_KIND as KIND

_REPORTED = Outcome.REPORTED.value  # rows and comparisons hold plain strings

SCHEMA = 1

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
        if row.get("outcome") == Outcome.ERROR or "values" not in row:
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
    problem = _content_problem(doc)
    if problem:
        raise ValueError(
            f"{path} is a pytest-sway baseline with malformed content: {problem}. Write it again with "
            "--sway-save-baseline (baselines are not meant to be edited by hand)"
        )
    return doc


def _content_problem(doc: dict) -> str | None:
    """What is wrong with a baseline's content, or None: every field a comparison reads is checked."""
    if not isinstance(doc.get("provenance", {}), dict):
        return "'provenance' is not a mapping"
    tests = doc.get("tests")
    if not isinstance(tests, dict):
        return "'tests' is missing" if tests is None else f"'tests' is a {type(tests).__name__}, not a mapping"
    for nodeid, entries in tests.items():
        if not isinstance(entries, list):
            return f"the entry of test {nodeid!r} is a {type(entries).__name__}, not a list of results"
        for k, entry in enumerate(entries):
            where = f"test {nodeid!r}, result {k + 1}"
            if not isinstance(entry, dict):
                return f"{where} is a {type(entry).__name__}, not a mapping"
            for key, ok, expected in _ENTRY_FIELDS:
                if key not in entry:
                    return f"{where} has no {key!r}"
                if not ok(entry[key]):
                    return f"{where}: {key!r} is {short_repr(entry[key], 40)}, expected {expected}"
            if len(entry["items"]) != len(entry["values"]):
                return f"{where} has {len(entry['items'])} items but {len(entry['values'])} values"
    return None


def _finite(x) -> bool:
    return is_number(x) and math.isfinite(x)


_ENTRY_FIELDS = (
    ("label", lambda x: isinstance(x, str) and bool(x), "a probe label such as 'delta_kl(js)'"),
    ("order", lambda x: is_whole(x) and x >= 0, "a whole number >= 0"),
    (
        "items",
        lambda x: isinstance(x, list) and len(x) >= 2 and all(isinstance(i, str) for i in x),
        "a list of at least 2 item strings",
    ),
    ("values", lambda x: isinstance(x, list) and all(_finite(v) for v in x), "a list of finite numbers"),
    ("estimate", _finite, "a finite number"),
)


def find_entry(baseline: dict, nodeid: str, label: str, order: int) -> dict | None:
    entries = baseline["tests"].get(nodeid, [])
    same = [e for e in entries if e["label"] == label]
    return next((e for e in same if e["order"] == order), same[0] if same else None)


def provenance_mismatch(now: dict, then: dict) -> str | None:
    """What differs in the base model's identity, or None."""
    diffs = [f"{k}: {then.get(k)!r} then, {now.get(k)!r} now" for k in _MUST_MATCH if now.get(k) != then.get(k)]
    return "; ".join(diffs) or None


def paired_values(items, entry) -> tuple[list[float] | None, str | None]:
    """The saved value of each current item, in the current order (matched by item, not
    position); or None and what changed in the item set."""
    now, then = Counter(items), Counter(entry["items"])
    if now != then:
        added, removed = sum((now - then).values()), sum((then - now).values())
        return None, f"{added} item(s) added, {removed} removed since the baseline"
    saved: dict[str, list[float]] = {}
    for item, value in zip(entry["items"], entry["values"]):
        saved.setdefault(item, []).append(float(value))
    seen: Counter = Counter()
    out = []
    for item in items:
        out.append(saved[item][seen[item]])
        seen[item] += 1
    return out, None


def paired_differences(items, values, entry) -> tuple[list[float] | None, str | None]:
    """Current minus saved value, item by item; or None and what changed in the item set."""
    saved, change = paired_values(items, entry)
    if saved is None:
        return None, change
    return [float(v) - s for v, s in zip(values, saved)], None


def compare_with_baseline(
    doc: dict,
    nodeid: str,
    result,
    order: int,
    *,
    provenance_now: dict,
    ci_method: str,
    gate=None,
    max_regression: float | None = None,
) -> dict[str, Any]:
    """Compare the ``order``-th result of test ``nodeid`` with its saved values in baseline ``doc``.

    With a one-sided ``gate`` and a ``max_regression`` the comparison is a gate
    (a regression beyond it fails); otherwise it is reported only.
    """
    from ..stats.bootstrap import Bootstrap

    return compare(
        result,
        find_entry(doc, nodeid, result.label, order),
        provenance_now=provenance_now,
        provenance_then=doc.get("provenance", {}),
        bootstrap=Bootstrap(
            confidence=result.confidence, resamples=result.resamples or None, method=ci_method, seed=result.seed
        ),
        max_regression=max_regression,
        direction=gate.direction if gate is not None else None,
    )


def compare(
    result,
    entry: dict | None,
    *,
    provenance_now: dict,
    provenance_then: dict,
    bootstrap,
    max_regression: float | None,
    direction: str | None,
) -> dict[str, Any]:
    """The ``baseline`` part of a result row. With a regression gate, ``outcome`` is its verdict:
    failed means a regression beyond ``max_regression``; inconclusive means one could not be ruled
    out (it fails the test too, but is not a regression)."""
    from ..stats.gate import Gate, IntervalEstimate

    if entry is None:
        return {"status": NO_BASELINE, "outcome": _REPORTED, "message": "no saved values for this probe"}
    mismatch = provenance_mismatch(provenance_now, provenance_then)
    if mismatch:
        return {"status": PROVENANCE_MISMATCH, "outcome": _REPORTED, "message": f"not compared: {mismatch}"}
    saved, change = paired_values(result.items, entry)
    if saved is None:
        return {"status": ITEMS_CHANGED, "outcome": _REPORTED, "message": f"not compared: {change}"}
    import numpy as np

    from ..stats.methods import groups_note, interval_how
    from ..stats.paired import change_interval
    from ..stats.shapes import at_ends, needed_by

    current, before = np.asarray(result.values, dtype=np.float64), np.asarray(saved, dtype=np.float64)
    values = current - before
    support = getattr(result, "support", None)
    step: float | None = None
    if result.method == "tango":  # its values are changes of paired 0/1 outcomes already
        step = 1.0
    elif support is not None and at_ends(current, support) is not None and at_ends(before, support) is not None:
        step = float(support[1]) - float(support[0])  # 0/1 outcomes at the support's two ends
    # Paired differences of grouped items are as dependent as the items: whole groups count.
    ci, method, resamples = change_interval(
        current, before, support=support, outcome_step=step, bootstrap=bootstrap, groups=result.groups
    )
    width = float(support[1]) - float(support[0]) if support is not None else math.inf
    delta = IntervalEstimate(
        label=f"{result.label} - baseline",
        estimate=float(values.mean()),
        ci=ci,
        confidence=bootstrap.confidence,
        n=values.size,
        how=interval_how(method, resamples, bootstrap.seed) + groups_note(method, result.n_groups),
        needed=None
        if result.groups is not None
        else needed_by(method, values, (-width, width), confidence=bootstrap.confidence, seed=bootstrap.seed),
    )
    out = {
        "status": COMPARED,
        "delta": delta.estimate,
        "ci_method": method,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "baseline_estimate": entry["estimate"],
        "max_regression": max_regression,
        "direction": direction,
        "outcome": _REPORTED,
        "message": "",
    }
    if max_regression is not None and direction is not None:
        # Higher is better for an `above` gate: the delta may fall by at most max_regression.
        gate = Gate(above=-max_regression) if direction == "higher" else Gate(below=max_regression)
        verdict = gate.judge(delta)
        out["outcome"] = verdict.outcome.value
        if not verdict.ok:
            head, _, how = verdict.message.partition("\n")
            if verdict.outcome == Outcome.FAILED:
                said = f"A regression against the baseline beyond max_regression={max_regression:g}."
            else:  # the interval reaches past the bound: no regression shown, none ruled out
                said = (
                    "Regression check inconclusive: it could not rule out a regression against the baseline "
                    f"beyond max_regression={max_regression:g} (nor confirm one)."
                )
            out["message"] = f"{head} {said}\n{how}"
            k = getattr(result, "max_drivers", DEFAULT_DRIVERS)
            if k > 0:
                out["drivers"], out["regressed_items"] = regression_drivers(
                    result.items, result.values, saved, direction=direction, k=k
                )
    return out


def comparison_failure(comparison: dict, n: int) -> str:
    """What a failed or inconclusive regression gate says: the comparison's message, then its drivers."""
    text = comparison["message"]
    if "drivers" in comparison:
        text += "\n" + regression_text(
            comparison["drivers"],
            direction=comparison["direction"],
            regressed=comparison["regressed_items"],
            n=n,
        )
    return text
