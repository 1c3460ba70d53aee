"""The sway markers on a test, checked, and the gates they add to the family (pure).

``sway_probe`` runs a probe and gates its interval; ``sway_gates(n)`` says how
many gates a test body judges through the ``sway`` fixture, so that the
Bonferroni correction can count every gate before any is judged. Nothing here
is silently dropped: a second ``sway_probe`` on one test (stacked, or from its
class or module) and a misspelt sway marker are errors.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import SwayError, is_whole

PROBE_MARKER = "sway_probe"
GATES_MARKER = "sway_gates"
_KNOWN = (PROBE_MARKER, GATES_MARKER)


def sway_marker(markers: Iterable):
    """The test's one ``sway_probe`` marker, or None; SwayError for two or for an unknown sway marker."""
    found = []
    for marker in markers:
        if marker.name == PROBE_MARKER:
            found.append(marker)
        elif marker.name.lower().startswith("sway") and marker.name not in _KNOWN:
            raise SwayError(
                f"unknown marker @pytest.mark.{marker.name}: pytest-sway's markers are "
                f"{', '.join('@pytest.mark.' + k for k in _KNOWN)}; a misspelt marker gates nothing"
            )
    if len(found) > 1:
        kinds = ", ".join(repr(m.args[0]) if m.args else "?" for m in found)
        raise SwayError(
            f"{len(found)} @pytest.mark.sway_probe markers apply to this test ({kinds}; stacked, or from its class "
            "or module), and one test checks one marker gate: split it into one test per probe, or run the other "
            "probes in the body through the `sway` fixture"
        )
    return found[0] if found else None


def declared_gates(markers: Iterable) -> int | None:
    """Gates the body declares it judges (``sway_gates(n)``), or None when it declares none."""
    found = [m for m in markers if m.name == GATES_MARKER]
    if not found:
        return None
    if len(found) > 1:
        raise SwayError(f"{len(found)} @pytest.mark.sway_gates markers apply to this test; give one")
    marker = found[0]
    n = marker.args[0] if len(marker.args) == 1 and not marker.kwargs else None
    if not is_whole(n) or n < 0:
        raise SwayError(
            "@pytest.mark.sway_gates takes one whole number >= 0, the gates the test body judges, "
            f"e.g. @pytest.mark.sway_gates(3); got args={marker.args!r} kwargs={marker.kwargs!r}"
        )
    return n


def body_allowance(declared: int | None, *, uses_sway: bool) -> int:
    """Gates the correction counts for a test's body: what ``sway_gates(n)`` declares; without it,
    1 for a body that uses the ``sway`` fixture and 0 for one that does not (a body that only reads
    ``sway_result``)."""
    if declared is not None:
        return declared
    return 1 if uses_sway else 0


def gates_of(request, body: int, *, baseline: bool, max_regression: float | None) -> int:
    """How many gates one test adds to the Bonferroni family: the marker's interval gate (one per
    interval it judges: the overall one and one per slice of its items); its regression gate when a
    baseline is given and a ``max_regression`` applies; and ``body``, the gates counted for its body
    (:func:`body_allowance`)."""
    gates = 0
    if request is not None:
        from .stats.slices import slice_count

        gates += request.gate.active * (1 + slice_count(request.params))
        regression = request.max_regression if request.max_regression is not None else max_regression
        if baseline and regression is not None and request.gate.direction is not None:
            gates += 1
    return gates + body


def body_gates(results, *, marker: bool) -> int:
    """Gates judged in a test's body: every check on its results but the marker's own, each
    counting the intervals it judged (the overall one and one per slice)."""
    checks = sum(len(r.checks) * r.gates_per_check for r in results)
    if marker and results and results[0].checks:
        checks -= results[0].gates_per_check
    return checks
