"""Result rows and their serialisations: the JSON report and JUnit properties (pure).

A *row* is the JSON-able record of one probe run in one test. Rows are built
where the test runs (an xdist worker, or the only process), travel on the
pytest report, and are rendered by the controller (see ``summary`` for the
terminal table, ``html`` for the page).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypedDict

from ..backends.token_changes import TokenChanges, is_packed
from ..stats.gate import Verdict
from ..stats.outcome import Outcome
from .outputs import JSON_KIND

#: The JSON report's schema: ``report-v{SCHEMA}.schema.json`` beside this module describes it.
#: 2: every result row (and slice, and baseline comparison) has every key, whatever the options.
SCHEMA = 2


class SliceRow(TypedDict, total=False):
    """One slice of a sliced result: ``ResultRow["slices"][name]``."""

    n: int
    n_groups: int | None
    estimate: float
    ci_low: float
    ci_high: float
    outcome: str
    items_needed: int | None
    ci_method: str
    seed: int


class ResultRow(TypedDict, total=False):
    """One probe run in one test: built where the test ran, carried to the controller on the
    pytest report (plain builtins only: xdist serialises it), and written to the JSON as is.
    An error row (a marked test whose probe could not run) has the identity, gate and outcome
    keys only."""

    nodeid: str
    index: int  # the test's position in the collection: reports sort by it
    order: int  # the result's position in its test (0: the error row of a marker)
    source: str  # "marker" or "fixture"
    kind: str
    label: str
    params: dict[str, Any]
    n: int
    n_groups: int | None
    estimate: float
    ci_low: float
    ci_high: float
    confidence: float
    ci_method: str
    resamples: int
    seed: int
    above: float | None
    below: float | None
    outcome: str  # an Outcome's value
    gates: int
    items_needed: int | None
    message: str
    values: list[float]
    items: list[str]
    duration_s: float
    support: list | None
    notes: list[str]
    details: dict[str, Any]
    slices: dict[str, SliceRow]
    drivers: list[dict[str, Any]]
    drivers_scope: dict[str, Any]
    bounds: dict[str, Any] | None
    evidence: list[str]
    baseline: dict[str, Any]


def result_row(result, *, nodeid: str, index: int, order: int, source: str) -> ResultRow:
    """The row for one ``ProbeResult``, judged by the gates checked on it."""
    above, below, gate, verdict = _judged(result.checks)
    row: ResultRow = {
        "nodeid": nodeid,
        "index": index,
        "order": order,
        "source": source,
        "kind": result.kind,
        "label": result.label,
        "params": summarize_params(result.params),
        "n": result.n,
        "estimate": result.estimate,
        "ci_low": result.ci.low,
        "ci_high": result.ci.high,
        "confidence": result.confidence,
        "ci_method": result.method,
        "resamples": result.resamples,
        "support": support_json(result.support),
        "seed": result.seed,
        "above": above,
        "below": below,
        "outcome": verdict.outcome.value,  # a plain str: rows cross xdist's wire
        # A marker without a threshold judges nothing; a sliced result's gate judges every slice too.
        "gates": sum(gate.active for gate, _ in result.checks) * result.gates_per_check,
        "items_needed": verdict.items_needed,
        "message": verdict.message,
        "values": [float(v) for v in result.values],
        "items": list(result.items),
        "duration_s": result.duration_s,
        "details": jsonable(result.details),
    }
    row["notes"] = list(result.notes)
    row["bounds"] = bounds_json(result.bounds, above, below)
    _add_layout(row, result)
    # What a failed gate's message says after its drivers: every report shows these lines too.
    row["evidence"] = result.evidence_lines() if gate is not None and not verdict.ok else []
    row["drivers"] = []
    if result.max_drivers > 0:
        # Only a failed or inconclusive gate has drivers: a passing one has no wrong side to name,
        # and its weakest items can be read from values and items.
        scope = result.driver_scope(gate) if gate is not None and not verdict.ok else None
        row["drivers"] = result.drivers(gate, scope) if scope is not None else []
        # Only slices failed: the drivers are theirs. A bounded result gated below= only: its drivers
        # are upper ends, and the reports count the items past the threshold among those.
        upper_only = scope is not None and scope.highs is not None and gate.above is None
        if scope is not None and (scope.slices or upper_only):
            values = scope.highs if upper_only and scope.highs is not None else scope.values
            row["drivers_scope"] = {
                "slices": list(scope.slices),
                "values": [float(v) for v in values],
                "ci_low": scope.ci_low,
                "ci_high": scope.ci_high,
            }
    return row


def bounds_json(bounds, above: float | None, below: float | None) -> dict[str, Any] | None:
    """A bounded result's two ends as the JSON holds them (an unbounded end: null, JSON has no
    infinity), and which of them the gate judged; None for exact values."""
    if bounds is None:
        return None
    return {
        "k": bounds.k,
        "mean_low": _finite(bounds.mean_low),
        "mean_high": _finite(bounds.mean_high),
        "ci_of_low": [_finite(x) for x in bounds.ci_of_low],
        "ci_of_high": [_finite(x) for x in bounds.ci_of_high],
        "judged": bounds.judged(above, below),
    }


def _finite(x) -> float | None:
    return float(x) if math.isfinite(x) else None


def support_json(support) -> list | None:
    """A declared support as JSON: ``[low, high]``, null for an open side (JSON has no infinity);
    null when the probe declared none."""
    if support is None:
        return None
    return [float(x) if math.isfinite(x) else None for x in support]


def _add_layout(out: ResultRow, result) -> None:
    """``n_groups`` (None without groups), ``slices`` (name -> n, estimate, CI, outcome; empty without)."""
    out["n_groups"] = result.n_groups
    out["slices"] = {}
    if result.slices:
        for name, s in result.slices.items():
            verdicts = [dict(verdict.slices).get(name, Verdict(Outcome.REPORTED)) for _, verdict in result.checks]
            worst = min(verdicts or [Verdict(Outcome.REPORTED)], key=lambda v: _SEVERITY.index(v.outcome))
            part: SliceRow = {
                "n": s.n,
                "n_groups": s.n_groups,
                "estimate": s.estimate,
                "ci_low": s.ci.low,
                "ci_high": s.ci.high,
                "outcome": worst.outcome.value,
                "items_needed": worst.items_needed,
                "ci_method": s.method,
                "seed": s.seed,
            }
            out["slices"][name] = part


_SEVERITY = (Outcome.FAILED, Outcome.INCONCLUSIVE, Outcome.PASSED, Outcome.REPORTED)


def _judged(checks):
    """Strictest thresholds over a result's checks, and the worst check (its gate and verdict)."""
    aboves = [g.above for g, _ in checks if g.above is not None]
    belows = [g.below for g, _ in checks if g.below is not None]
    gate, worst = min(checks, key=lambda c: _SEVERITY.index(c[1].outcome), default=(None, Verdict(Outcome.REPORTED)))
    return (max(aboves) if aboves else None), (min(belows) if belows else None), gate, worst


def rows_for_test(
    nodeid: str, *, results, request, index: int, error: str | None, comparisons: dict | None = None
) -> list[ResultRow]:
    """Rows for one test: one per probe run (with its baseline comparison, by
    position), and an error row first for a marked test whose probe could not
    run (``error`` says why)."""
    marker_ran = request is not None and error is None
    rows = []
    for i, r in enumerate(results):
        row = result_row(
            r, nodeid=nodeid, index=index, order=i + 1, source="marker" if i == 0 and marker_ran else "fixture"
        )
        if comparisons and i + 1 in comparisons:
            row["baseline"] = jsonable(comparisons[i + 1])
        rows.append(row)
    if error is not None and request is not None:
        rows.insert(
            0,
            {
                "nodeid": nodeid,
                "index": index,
                "order": 0,
                "source": "marker",
                "kind": request.kind,
                "label": request.kind,
                "above": request.gate.above,
                "below": request.gate.below,
                "outcome": Outcome.ERROR.value,
                "message": error,
            },
        )
    return rows


_JUNIT_FIELDS = (
    "kind", "label", "n", "n_groups", "estimate", "ci_low", "ci_high", "confidence", "ci_method", "resamples", "seed",
    "above", "below", "outcome", "duration_s",
)  # fmt: skip


def junit_properties(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(name, value)`` pairs for JUnit XML: ``sway.estimate`` etc. for a test's
    first probe, ``sway[2].estimate`` for its second.

    Every property is always present, empty where it does not apply (no ``below``
    on an ``above`` gate, no numbers on a probe that could not run), so a CI
    script can read them without checking which exist.
    """
    props = []
    for i, row in enumerate(rows):
        prefix = "sway" if i == 0 else f"sway[{i + 1}]"
        for key in _JUNIT_FIELDS:
            props.append((f"{prefix}.{key}", "" if row.get(key) is None else str(row[key])))
        props.append((f"{prefix}.message", row.get("message") or ""))
        props.append((f"{prefix}.values", json.dumps(row["values"]) if "values" in row else ""))
        # Compact: [[item, value], ...] of a failed gate's drivers; empty where none.
        drivers = [[d["item"], d["value"]] for d in row.get("drivers") or ()]
        props.append((f"{prefix}.drivers", json.dumps(drivers, ensure_ascii=False) if drivers else ""))
        props.append((f"{prefix}.slices", json.dumps(jsonable(row["slices"])) if row.get("slices") else ""))
        # A bounded result's two ends and which the gate judged (JSON, as in the report); empty for exact values.
        props.append((f"{prefix}.bounds", json.dumps(row["bounds"]) if row.get("bounds") else ""))
        # The lines a failed gate's message ends with (examples, tokens), one per line; empty where none.
        props.append((f"{prefix}.evidence", "\n".join(row.get("evidence") or ())))
    return props


def summarize_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters for reports: long lists become their length."""
    out = {}
    for name, value in params.items():
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (str, list, tuple)):
            out[name] = {"count": len(value)}
            source = getattr(value, "source", None)
            if source:  # items read from a JSONL file
                out[name]["file"] = source
            slices = getattr(value, "slice_names", ())  # the names judged and counted (ItemList)
            if slices:
                out[name]["slices"] = len(slices)
        else:
            out[name] = jsonable(value)
    return out


def jsonable(value, *, packed: bool = True):
    """numpy scalars and arrays, tuples and non-finite floats made JSON-safe, and
    delta_kl's ``TokenChanges`` packed into plain builtins, as a row carries them
    (``packed=False``: packed ones made ``TokenChanges`` again, as a report document
    holds them for ``json_pieces`` and the HTML page).

    What is JSON-safe already is returned as is, not copied: a row shares its
    details with its ``ProbeResult``."""
    if isinstance(value, TokenChanges):
        return value.packed() if packed else value
    if is_packed(value):
        return value if packed else TokenChanges.unpack(value)
    if isinstance(value, dict):
        return _jsonable_dict(value, packed)
    if isinstance(value, list):
        return _jsonable_list(value, packed)
    if isinstance(value, tuple):
        return [jsonable(v, packed=packed) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and type(value) is not str:  # a Conversation: plain text travels to xdist's controller
        return str(value)
    return value


def _jsonable_dict(value: dict, packed: bool) -> dict:
    out: dict | None = None if type(value) is dict else {}  # a subclass is always copied into a plain dict
    for i, (key, item) in enumerate(value.items()):
        new_key = key if type(key) is str else str(key)
        new_item = jsonable(item, packed=packed)
        if out is None and (new_key is not key or new_item is not item):
            out = dict(itertools.islice(value.items(), i))  # the entries before, unchanged
        if out is not None:
            out[new_key] = new_item
    return value if out is None else out


def _jsonable_list(value: list, packed: bool) -> list:
    out: list | None = None if type(value) is list else []
    for i, item in enumerate(value):
        new_item = jsonable(item, packed=packed)
        if out is None and new_item is not item:
            out = value[:i]
        if out is not None:
            out.append(new_item)
    return value if out is None else out


def sort_rows(rows: Iterable[dict]) -> list[dict]:
    """Collection order, then the order probes ran inside a test.

    Every xdist worker collects the same items in the same order, so this is
    the serial order whatever the scheduling.
    """
    return sorted(rows, key=lambda r: (r["index"], r.get("order", 0), r["nodeid"]))


# -- JSON ---------------------------------------------------------------------------

#: Every key of a result in the JSON, in order, with what it holds where it does not apply: the
#: same keys in every result, whatever the options and outcome (an error row: nulls and empties).
_JSON_FIELDS: dict[str, Any] = {
    "nodeid": None, "kind": None, "label": None, "source": None, "params": {}, "n": None, "n_groups": None,
    "estimate": None, "ci_low": None, "ci_high": None, "confidence": None, "ci_method": None, "resamples": None,
    "seed": None, "support": None, "notes": [], "above": None, "below": None, "outcome": None, "items_needed": None,
    "message": "", "values": [], "slices": {}, "duration_s": None, "details": {}, "drivers": [],
    "drivers_scope": None, "bounds": None, "evidence": [], "baseline": None,
}  # fmt: skip

#: The keys of a result's ``baseline`` (a comparison with the saved run), each always present:
#: a comparison that did not happen (no saved values, another model) has its status and message.
_BASELINE_FIELDS: dict[str, Any] = {
    "status": None, "outcome": None, "message": "", "delta": None, "ci_method": None, "ci_low": None,
    "ci_high": None, "baseline_estimate": None, "max_regression": None, "direction": None, "drivers": [],
    "regressed_items": None,
}  # fmt: skip


def _json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the JSON holds it: every key of ``_JSON_FIELDS``, in that order."""
    out = {k: jsonable(row[k], packed=False) if k in row else copy.deepcopy(empty) for k, empty in _JSON_FIELDS.items()}
    if isinstance(out["baseline"], dict):
        out["baseline"] = {
            **{k: out["baseline"].get(k, copy.deepcopy(empty)) for k, empty in _BASELINE_FIELDS.items()},
            **out["baseline"],
        }
    return out


def json_document(
    rows: Sequence[dict],
    *,
    backend: dict,
    settings: dict,
    provenance: dict | None = None,
    correction: dict | None = None,
    forward_passes: dict | None = None,
    forward_calls: dict | None = None,
) -> dict[str, Any]:
    """The JSON report's document: what ``json_pieces`` writes and the HTML and Markdown
    pages read. Token lists in it are ``TokenChanges`` (sequences of the JSON's entries).
    ``forward_passes`` and ``forward_calls`` are what the backends counted, by process and in
    total (``workers.forward_report``), or None."""
    doc = {
        "kind": JSON_KIND,
        "schema": SCHEMA,
        "backend": jsonable(backend),
        "settings": jsonable(settings),
        # Always present: null without --sway-html, a baseline or a correction.
        "provenance": jsonable(provenance) if provenance else None,
        "correction": jsonable(correction) if correction and correction.get("method") not in (None, "none") else None,
        # Always present: null where no backend counted its forward passes (the dummy backend).
        "forward_passes": forward_passes,
        "forward_calls": forward_calls,
        "results": [_json_row(row) for row in sort_rows(rows)],
    }
    return doc


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the report ``json_document`` makes: the package's
    ``reports/report-v{SCHEMA}.schema.json``, for a CI script to validate a report against."""
    from importlib.resources import files

    return json.loads(files(__package__).joinpath(f"report-v{SCHEMA}.schema.json").read_text(encoding="utf-8"))


class _Encoder(json.JSONEncoder):
    """JSON with ``TokenChanges`` written out as their lists of dicts, one table at a time."""

    def default(self, o):
        if isinstance(o, TokenChanges):
            return list(o)
        return super().default(o)


def json_pieces(doc: dict) -> Iterator[str]:
    """The report's JSON text in pieces, as ``write_output`` takes it: the token lists of
    10,000 prompts are tens of MB of text, which need never be in memory at once."""
    yield from _Encoder(indent=2, allow_nan=False).iterencode(doc)
    yield "\n"
