"""The outcomes of a probe in a test (pure, no numpy: reports and baselines read them too)."""

from __future__ import annotations

from enum import Enum


class Outcome(str, Enum):
    """What became of a probe in a test: the same words in every report."""

    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"  # the interval straddles the threshold: fails the test
    REPORTED = "reported"  # no threshold: measured and shown, not gated
    ERROR = "error"  # the probe could not run

    def __str__(self) -> str:
        return self.value

    @property
    def ok(self) -> bool:
        return self in (Outcome.PASSED, Outcome.REPORTED)
