"""``@pytest.mark.sway_probe(...)`` arguments, parsed and validated (pure).

Imported when the first marker is parsed (it needs numpy), not when pytest
starts. The plugin calls :func:`parse_marker` at collection time, so a typo in a
marker is a collection error naming the test, not a failure minutes into a
run after a model has loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ProbeParamError, is_number
from ..probes.registry import ProbeRegistry
from ..stats.bootstrap import check_arguments
from ..stats.gate import Gate
from ..stats.methods import DEFAULT_CONFIDENCE

MARKER_EXAMPLE = "sway_probe('delta_kl', prompts=[...], above=0.05)"


@dataclass(frozen=True)
class ProbeRequest:
    kind: str
    params: dict[str, Any]
    gate: Gate
    confidence: float | None = None
    resamples: int | None = None
    method: str | None = None
    #: With --sway-baseline: the largest allowed move against the gate's direction.
    max_regression: float | None = None


def parse_marker(args: tuple, kwargs: dict[str, Any], registry: ProbeRegistry, *, base_dir=None) -> ProbeRequest:
    """Turn marker arguments into a validated request, or raise ``ProbeParamError``.
    Items files (a string where a probe takes items) are relative to ``base_dir``, the test file's folder."""
    if len(args) != 1:
        raise ProbeParamError(
            f"expected exactly one positional argument, the probe kind, got {len(args)}; write {MARKER_EXAMPLE}"
        )
    kind = args[0]
    probe = registry.get(kind)
    kwargs = dict(kwargs)
    above, below = kwargs.pop("above", None), kwargs.pop("below", None)
    confidence = kwargs.pop("confidence", None)
    resamples = kwargs.pop("resamples", None)
    method = kwargs.pop("method", None)
    max_regression = kwargs.pop("max_regression", None)
    try:
        gate = Gate(above=above, below=below)
    except ValueError as exc:
        raise ProbeParamError(f"{kind}: {exc}") from None
    try:
        check_arguments(DEFAULT_CONFIDENCE if confidence is None else confidence, resamples, method)
    except ValueError as exc:
        raise ProbeParamError(f"{kind}: {exc}") from None
    if max_regression is not None:
        if not is_number(max_regression) or not max_regression >= 0:
            raise ProbeParamError(f"{kind}: max_regression must be a number >= 0, got {max_regression!r}")
        if gate.direction is None:
            raise ProbeParamError(
                f"{kind}: max_regression needs exactly one of above= or below=, which says which way is a regression"
            )
    return ProbeRequest(
        kind=kind,
        params=probe.validate(kwargs, base_dir=base_dir),
        gate=gate,
        confidence=None if confidence is None else float(confidence),
        resamples=resamples,
        method=method,
        max_regression=None if max_regression is None else float(max_regression),
    )
