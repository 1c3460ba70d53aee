"""What the plugin remembers: one typed object per run and one per test (pure).

The plugin keeps a :class:`RunState` in ``config.stash`` and a :class:`TestState`
in each item's stash, under one key each; nothing else is stored on pytest's
objects. Only plain data lives here: the plugin's hooks fill it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .settings import Settings


@dataclass
class RunState:
    """One run (one xdist worker, or the controller)."""

    settings: Settings
    #: The ``--sway-baseline`` document, loaded and checked once.
    baseline: dict[str, Any] | None = None
    #: Probe registries by the hook implementations that built them.
    registries: dict[tuple, Any] = field(default_factory=dict)
    #: The built backend's ``describe()`` and, when a report needs it, its provenance.
    backend_info: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    #: Gates in the selected tests: m for the Bonferroni correction.
    family: int = 0
    #: The terminal line that shows what is loading and long work (a ``ProgressLine``), or None.
    progress: Any = None
    #: Forward passes counted per process (``main``, or an xdist worker's id), kept when the backend
    #: closes (``workers.forward_counts``); the controller adds each worker's as it finishes.
    forwards: dict[str, dict] = field(default_factory=dict)


@dataclass
class ItemState:
    """One test's sway markers, results and comparisons."""

    #: Position in the collection: reports sort by it, whatever the xdist scheduling.
    index: int = 0
    #: The validated ``sway_probe`` marker (a ``ProbeRequest``), if any.
    request: Any = None
    #: Gates the body declares with ``sway_gates(n)``, or None; and what the correction counts for it.
    declared: int | None = None
    body_allowance: int = 0
    #: Why its markers are invalid, when that was found after collection.
    invalid: str | None = None
    #: The marker's result, or why it could not be measured.
    marker_result: Any = None
    measure_error: str | None = None
    #: Every ``ProbeResult`` the test produced (the marker's first), and baseline comparisons by position.
    results: list[Any] = field(default_factory=list)
    comparisons: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Whether the test uses the ``sway`` fixture (its body may judge gates).
    uses_sway: bool = False

    def reported(self) -> None:
        """Forget this run of the test once its rows are built: the rows carry what the
        reports need, and results (a value and token lists per prompt) kept on every
        item would grow with the session. A rerun of the test starts from nothing."""
        self.results = []
        self.comparisons = {}
        self.marker_result = None
        self.measure_error = None
