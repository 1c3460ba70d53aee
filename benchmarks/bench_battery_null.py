"""What the default battery's gates read on null adapters: random LoRA updates with the real
adapter's structure and update norms (the hf backend's ``Variant(null_seed=k)``).

    HF_HUB_OFFLINE=1 python benchmarks/bench_battery_null.py --adapter conftest_examples/support-adapter --seeds 1 2 --scales 3

For the adapter itself, each null seed and each ``--scales`` multiple of the adapter's update
(a positive control: an over-strong fine-tune the gates should catch), runs every gated test of the battery
(``pytest_sway.suites.default.battery``: same probe, items and parameters) through ``run_probe`` on
one backend, whose fine-tuned side is swapped for the null variant, and prints each gate's estimate,
interval and the time. The base side is memoised in the one backend, so only the first variant pays it.
These numbers are what the default thresholds (``pytest_sway.suites.spec.GATES``) are set from.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

from pytest_sway.backends.base import FINETUNED, Variant
from pytest_sway.measure.run import run_probe
from pytest_sway.settings import Settings
from pytest_sway.suites.default import battery


class AsFinetuned:
    """A backend whose FINETUNED answers come from ``variant`` (everything else passes through)."""

    def __init__(self, backend, variant: Variant):
        self._backend, self._variant = backend, variant

    def __getattr__(self, name):
        attr = getattr(self._backend, name)
        if not callable(attr) or "variant" not in inspect.signature(attr).parameters:
            return attr

        def call(*args, **kwargs):
            bound = inspect.signature(attr).bind(*args, **kwargs)
            bound.apply_defaults()
            if bound.arguments["variant"] == FINETUNED:
                bound.arguments["variant"] = self._variant
            return attr(*bound.args, **bound.kwargs)

        return call


def gated_tests():
    """(part, probe kind, params with the gate keyword removed) of each gated battery test."""
    for part, name in battery.GATED.items():
        (mark,) = [m for m in getattr(battery, name).pytestmark if m.name == "sway_probe"]
        params = {k: v for k, v in mark.kwargs.items() if k not in ("above", "below")}
        yield part, mark.args[0], params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", default="conftest_examples/support-adapter")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2], help="null seeds (0, the adapter, always runs)")
    parser.add_argument("--scales", type=float, nargs="*", default=[],
                        help="also the adapter's update times these (e.g. 3: an over-strong fine-tune)")  # fmt: skip
    parser.add_argument("--parts", nargs="*", default=None, help="gated parts to run (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    cwd = Path.cwd()
    settings = Settings.from_raw({"model": args.model, "adapter": args.adapter}, {}, cwd=cwd, ini_dir=cwd)
    from pytest_sway.backends import make_backend

    start = time.perf_counter()
    backend = make_backend(settings)
    print(f"loaded {settings.loading()} in {time.perf_counter() - start:.1f} s", flush=True)
    rows = []
    variants = [("adapter", None)] + [(f"null {k}", Variant(null_seed=k)) for k in args.seeds]
    variants += [(f"x{scale:g}", Variant(scale=scale)) for scale in args.scales]
    for label, variant in variants:
        wrapped = backend if variant is None else AsFinetuned(backend, variant)
        for part, kind, params in gated_tests():
            if args.parts and part not in args.parts:
                continue
            start = time.perf_counter()
            result = run_probe(kind, wrapped, **params)
            row = dict(variant=label, part=part, kind=kind, n=result.n, estimate=result.estimate,
                       ci_low=result.ci.low, ci_high=result.ci.high, seconds=round(time.perf_counter() - start, 1))  # fmt: skip
            rows.append(row)
            print(f"{label:8} {part:9} {kind:20} n={result.n:4} {result.estimate:+.5f} "
                  f"[{result.ci.low:+.5f}, {result.ci.high:+.5f}]  {row['seconds']} s", flush=True)  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
