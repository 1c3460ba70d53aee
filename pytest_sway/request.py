"""``@pytest.mark.sway_probe(...)`` arguments, parsed and validated (pure).

Imported when the first marker is parsed (it needs numpy), not when pytest
starts. The plugin calls :func:`parse_marker` at collection time, so a typo in a
marker is a collection error naming the test, not a failure minutes into a
run after a model has loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ProbeParamError
from .probes.base import ProbeRegistry
from .result import Gate
from .stats import check_arguments

MARKER_EXAMPLE = "sway_probe('delta_kl', prompts=[...], above=0.05)"


@dataclass(frozen=True)
class ProbeRequest:
    kind: str
    params: dict[str, Any]
    gate: Gate
    confidence: float | None = None
    resamples: int | None = None
    method: str | None = None


def parse_marker(args: tuple, kwargs: dict[str, Any], registry: ProbeRegistry) -> ProbeRequest:
    """Turn marker arguments into a validated request, or raise ``ProbeParamError``."""
    if len(args) != 1:
        raise ProbeParamError(
            f"expected exactly one positional argument, the probe kind, got {len(args)}; "
            f"write {MARKER_EXAMPLE}"
        )
    kind = args[0]
    probe = registry.get(kind)
    kwargs = dict(kwargs)
    above, below = kwargs.pop("above", None), kwargs.pop("below", None)
    confidence = kwargs.pop("confidence", None)
    resamples = kwargs.pop("resamples", None)
    method = kwargs.pop("method", None)
    try:
        gate = Gate(above=above, below=below)
    except ValueError as exc:
        raise ProbeParamError(f"{kind}: {exc}") from None
    try:
        check_arguments(0.95 if confidence is None else confidence, resamples, method)
    except ValueError as exc:
        raise ProbeParamError(f"{kind}: {exc}") from None
    return ProbeRequest(
        kind=kind,
        params=probe.validate(kwargs),
        gate=gate,
        confidence=None if confidence is None else float(confidence),
        resamples=resamples,
        method=method,
    )
