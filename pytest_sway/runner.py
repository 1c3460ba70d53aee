"""Running a probe: validate, measure, bootstrap, wrap in a ProbeResult.

``run_probe`` is the programmatic entry point; :class:`Sway` binds it to one
backend, registry and seed (the ``sway`` fixture is one of these) and adds a
typed method per built-in probe.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from .errors import ProbeParamError
from .probes import ProbeRegistry, default_registry
from .result import ProbeResult
from .stats import Bootstrap


def run_probe(
    kind: str,
    backend,
    *,
    seed: int = 0,
    confidence: float = 0.95,
    resamples: int | None = None,
    method: str | None = None,
    registry: ProbeRegistry | None = None,
    **params: Any,
) -> ProbeResult:
    """Measure probe ``kind`` on ``backend`` and bootstrap a CI for its mean.

    ``params`` are the probe's own parameters (e.g. ``prompts=[...]``).
    Unknown kinds and unknown, missing or ill-typed parameters raise
    ``ValueError`` naming the kind and the parameter.
    """
    registry = registry if registry is not None else default_registry()
    probe = registry.get(kind)
    checked = probe.validate(params)
    try:
        bootstrap = Bootstrap(confidence=confidence, resamples=resamples, method=method, seed=seed)
    except ValueError as exc:
        raise ProbeParamError(f"{kind}: {exc}") from None
    return measure(probe, checked, backend, bootstrap)


def measure(probe, params: dict, backend, bootstrap: Bootstrap) -> ProbeResult:
    """Run an already-validated probe request."""
    start = time.perf_counter()
    m = probe.measure(backend, params, bootstrap)
    values = np.asarray(m.values, dtype=np.float64)
    if values.ndim != 1 or values.size != len(m.items):
        raise RuntimeError(
            f"probe {probe.kind!r} returned {values.shape} values for {len(m.items)} items; "
            "a probe must return one value per item"
        )
    ci = bootstrap.interval(values, support=m.support)
    return ProbeResult(
        kind=probe.kind,
        estimate=float(values.mean()),
        ci=ci,
        confidence=bootstrap.confidence,
        n=int(values.size),
        values=values,
        method=bootstrap.method,
        resamples=bootstrap.resamples,
        seed=bootstrap.seed,
        params=params,
        details=m.details,
        items=tuple(m.items),
        label=probe.label(params),
        duration_s=time.perf_counter() - start,
    )


class Sway:
    """Probes bound to one backend, registry and bootstrap seed.

    The ``sway`` fixture is one of these, seeded per test. ``run`` takes any
    registered probe; the typed methods below cover the built-in ones.
    ``confidence``, ``resamples`` and ``method`` given to a call override the
    runner's defaults for that call.
    """

    def __init__(
        self,
        backend,
        *,
        seed: int = 0,
        confidence: float = 0.95,
        resamples: int | None = None,
        method: str | None = None,
        registry: ProbeRegistry | None = None,
        on_result=None,
    ):
        self.backend = backend
        self.bootstrap = Bootstrap(confidence=confidence, resamples=resamples, method=method, seed=seed)
        self.registry = registry if registry is not None else default_registry()
        self._on_result = on_result

    def run(
        self,
        kind: str,
        *,
        confidence: float | None = None,
        resamples: int | None = None,
        method: str | None = None,
        **params: Any,
    ) -> ProbeResult:
        b = self.bootstrap
        result = run_probe(
            kind,
            self.backend,
            seed=b.seed,
            confidence=b.confidence if confidence is None else confidence,
            resamples=b.resamples if resamples is None else resamples,
            method=b.method if method is None else method,
            registry=self.registry,
            **params,
        )
        if self._on_result is not None:
            self._on_result(result)
        return result

    def delta_kl(self, prompts, *, divergence: str = "js", chat: bool = False, **ci) -> ProbeResult:
        """Divergence between base and fine-tuned next-token distributions, per prompt."""
        return self.run("delta_kl", prompts=prompts, divergence=divergence, chat=chat, **ci)


def derive_seed(base_seed: int, test_id: str) -> int:
    """A test's bootstrap seed: a stable hash of the run's seed and the test id,
    so a test gets the same CI alone, in a full run, in any order, on any worker."""
    digest = hashlib.blake2b(f"{base_seed}\0{test_id}".encode(), digest_size=4, person=b"sway-seed").digest()
    return int.from_bytes(digest, "little")
