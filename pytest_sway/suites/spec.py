"""``--sway-suite`` and ``--sway-suite-thresholds``: which built-in battery, which of its parts,
and the gates' thresholds (pure: no pytest).

``default`` runs every part; ``default:knowledge,text`` runs those. Each part has one gated test
(a retention gate: the fine-tune must not move general behaviour far from the base) whose threshold
``sway_suite_thresholds = knowledge=-0.05 prompts=0.05`` overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

#: Each suite's parts, in the order they run.
SUITES = {"default": ("prompts", "text", "knowledge", "chat")}

#: Each part's gate: the marker keyword it sets and its default. prompts: mean delta_kl (JS, nats)
#: below; text: mean NLL shift per token (nats) below; knowledge: paired change in accuracy above
#: (non-inferiority); chat: mean per-token JS divergence below. Set from what SmolLM2 gives unchanged,
#: with null adapters, with the demo's adapter and with that adapter scaled up (docs/battery.md,
#: benchmarks/bench_battery_null.py).
GATES = {
    "prompts": ("below", 0.05),
    "text": ("below", 0.1),
    "knowledge": ("above", -0.05),
    "chat": ("below", 0.05),
}

SUITE_HELP = (
    f"run a built-in retention battery as tests: {', '.join(SUITES)}, or e.g. default:knowledge,text "
    f"(parts: {', '.join(SUITES['default'])})"
)


@dataclass(frozen=True)
class Suite:
    """A built-in battery and the parts of it to run."""

    name: str
    parts: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.name}:{','.join(self.parts)}"


def parse_suite(raw: str, base: Path | None = None) -> Suite:
    """``default`` or ``default:part,part``; ValueError naming the suites or parts there are."""
    name, _, rest = raw.partition(":")
    name = name.strip()
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; the built-in suites are {', '.join(SUITES)}")
    known = SUITES[name]
    if not rest.strip():
        if ":" in raw:
            raise ValueError(f"no parts after {name}: ; give some of {', '.join(known)}, or just {name}")
        return Suite(name, known)
    wanted = [part.strip() for part in rest.split(",")]
    unknown = [part for part in wanted if part not in known]
    if unknown or "" in wanted:
        raise ValueError(
            f"suite {name} has no part {', '.join(map(repr, unknown or ['']))}; its parts are {', '.join(known)} "
            f"(e.g. {name}:{known[2]},{known[1]})"
        )
    return Suite(name, tuple(part for part in known if part in wanted))  # run order, each once


def parse_thresholds(raw: str, base: Path | None = None) -> dict[str, float]:
    """``part=number ...`` (spaces or commas between), e.g. ``knowledge=-0.05 prompts=0.05``."""
    out: dict[str, float] = {}
    for entry in raw.replace(",", " ").split():
        part, eq, value = entry.partition("=")
        if not eq:
            raise ValueError(f"expected part=number entries, e.g. knowledge=-0.05 prompts=0.05; got {entry!r}")
        if part not in GATES:
            raise ValueError(f"no part {part!r}; the battery's gated parts are {', '.join(GATES)}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{part}: expected a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"{part}: expected a finite number, got {value!r}")
        if part in out:
            raise ValueError(f"{part} is given twice ({out[part]:g} and {number:g}); give it once")
        _check_range(part, number)
        out[part] = number
    return out


def _check_range(part: str, number: float) -> None:
    """Refuse a threshold no fine-tune could pass, one every fine-tune passes, or one that reverses
    what the gate asks (a slip of sign or of units)."""
    default = GATES[part][1]
    if part in ("prompts", "chat") and not 0 < number < math.log(2):
        raise ValueError(
            f"{part}={number:g}: its gate is a Jensen-Shannon divergence below the threshold, which lies between "
            f"0 and ln 2 = 0.693 nats, so {'no' if number <= 0 else 'every'} fine-tune would pass; give a bound "
            f"inside (the default is {default:g})"
        )
    if part == "knowledge" and number > 0:
        raise ValueError(
            f"knowledge={number:g} would demand that the fine-tune gain {number:.0%} accuracy; the retention "
            f"gate's threshold is the loss it tolerates, negative (knowledge={-number:g} allows a {number:.0%} loss)"
        )
    if part == "knowledge" and number <= -1:
        raise ValueError(
            f"knowledge={number:g}: the change in accuracy is a fraction between -1 and 1, so every fine-tune "
            "would pass; 5 points is knowledge=-0.05"
        )


def threshold(part: str, overrides: dict[str, float] | None) -> tuple[str, float]:
    """``(keyword, value)`` of ``part``'s gate: ``("below", 0.05)``, the override's value where given."""
    keyword, default = GATES[part]
    return keyword, (overrides or {}).get(part, default)
