"""How fast is pytest-sway's delta_kl, against the floor and against dlm-sway?

    python benchmarks/bench_probes.py                 # the tables in docs/performance.md (about 10 minutes on 2 cores)
    python benchmarks/bench_probes.py --quick         # tiny model only, fewer repetitions

For the tiny test model and for SmolLM2-135M (the built-in ``smollm2-135m``),
with 8, 64 and 512 prompts, in one process:

* the floor: the same prompts through raw transformers + peft, batched as the
  plugin batches them (sorted by length, 32 per batch, left-padded with
  position ids, last-position logits only), one pass with the adapter
  disabled and one with it enabled, then the full-vocabulary Jensen-Shannon
  divergence per prompt;
* pytest-sway's ``delta_kl`` on the same prompts (a fresh session memo each
  time), bootstrap interval included;
* dlm-sway's delta_kl, when ``dlm_sway`` is importable
  (``pip install "dlm-sway[hf]==0.1.0"``), timed by its own reported duration.

Each figure is the median of several repetitions. Then, in subprocesses: a
whole pytest run of a 10-test suite sharing prompts (and how many base
forward passes it made), the plugin's overhead on a suite without sway tests,
peak memory against a plain model load running the same forward passes, and
a rerun with another adapter against the base-output cache.

The ``tokens`` part (``--parts tokens``) times delta_kl at 512 prompts with its
token lists (the probe as shipped) and without them (the same probe with
``top_tokens=0``), taking turns (who goes first alternates), a fresh session
memo each time, and prints the
ratio of the medians, the median of the paired ratios, and the ratio of the
median CPU times of the process (steadier than wall time on a shared machine).

    python benchmarks/bench_probes.py --parts tokens --reps 5

The ``scale`` part (``--parts scale``; not in the default set, it takes long)
runs a suite of delta_kl (two divergences), null_contrast and adapter_ablation
(``--scale-suite delta_kl``: delta_kl only; ``--scale-suite pytest``: the four
as marked tests that pytest runs, writing every report) on SmolLM2 at 256, 1024 and 4096
prompts of about 12 tokens (``--scale-sizes``), each size in a
fresh process, and prints the peak resident memory while the suite runs, over
the memory after the model load, with the time per prompt and the forward
passes made; ``--scale-cache`` repeats each size with ``--sway-cache-dir`` set.

    python benchmarks/bench_probes.py --parts scale --scale-sizes 256,1024,4096
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SIZES = (8, 64, 512)
PARTS = ("probes", "responses", "tokens", "suite", "overhead", "memory", "cache")
EXTRA_PARTS = ("scale",)
SCALE_SIZES = (256, 1024, 4096)
BATCH = 32
SUBJECTS = ("the refund window", "a password reset", "the delivery date", "the warranty", "an invoice",
            "the mobile app", "a broken screen", "the loyalty card")  # fmt: skip


def make_pairs(n: int) -> list[tuple[str, str]]:
    """``n`` (prompt, response) pairs, responses of about 20 to 30 tokens."""
    return [
        (
            prompt,
            f" Thanks for asking about {SUBJECTS[i % len(SUBJECTS)]}. Open the settings page, choose "
            f"option {i % 7 + 1} and follow the {i % 3 + 2} steps shown there; it takes a minute.",
        )
        for i, prompt in enumerate(make_prompts(n))
    ]


def make_prompts(n: int) -> list[str]:
    """``n`` distinct prompts of 4 to about 40 words."""
    out = []
    for i in range(n):
        subject = SUBJECTS[i % len(SUBJECTS)]
        detail = " and".join([" I already tried the help page"] * (i % 5))
        out.append(f"Customer {i} asks about {subject}{detail}. The answer is")
    return out


# -- models -------------------------------------------------------------------------------


def prepare_models(root: Path, names) -> dict:
    """``name -> (base folder, adapter, second adapter)``, built once into ``root``."""
    from pytest_sway.backends.builtin_models import ensure_smollm2
    from pytest_sway.testing import build_tiny_model, train_lora_adapter

    models = {}
    for name in names:
        folder = root / name
        if name == "tiny":
            base = folder / "base"
            if not (base / "config.json").is_file():
                build_tiny_model(base)
            kwargs = {}
        else:
            base = ensure_smollm2()
            kwargs = {"steps": 2, "target_modules": ["q_proj", "v_proj"], "anchor_texts": ()}
        adapters = []
        for i, text in enumerate(("Refunds take 45 days.", "Passwords reset from Settings.")):
            path = folder / f"adapter{i}"
            if not (path / "adapter_config.json").is_file():
                train_lora_adapter(base, path, [text], **kwargs)
            adapters.append(str(path))
        models[name] = (str(base), *adapters)
    return models


# -- the floor: raw transformers + peft, batched like the plugin --------------------------------


class Floor:
    def __init__(self, base: str, adapter: str):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
        self.model.eval()
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def js(self, prompts: list[str]):
        torch = self.torch
        seqs = self.tokenizer(prompts)["input_ids"]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        batches = [order[start : start + BATCH] for start in range(0, len(order), BATCH)]
        inputs = []
        for rows in batches:
            width = max(len(seqs[i]) for i in rows)
            ids = torch.full((len(rows), width), self.pad)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, width - len(seqs[i]) :] = torch.tensor(seqs[i])
                mask[r, width - len(seqs[i]) :] = 1
            inputs.append(dict(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)))
        out = torch.empty(len(seqs), dtype=torch.float64)
        with torch.inference_mode():
            with self.model.disable_adapter():
                base = [self.model(**x, logits_to_keep=1).logits[:, -1] for x in inputs]
            tuned = [self.model(**x, logits_to_keep=1).logits[:, -1] for x in inputs]
            for rows, b, t in zip(batches, base, tuned):
                p, q = t.double().softmax(-1), b.double().softmax(-1)
                m = (p + q) / 2
                kl = lambda a: torch.where(a > 0, a * (a.log() - m.log()), 0.0).sum(-1)  # noqa: E731
                out[rows] = 0.5 * kl(p) + 0.5 * kl(q)
        return out.numpy()

    def response_js(self, pairs: list[tuple[str, str]]):
        """Mean per-position JS over each teacher-forced response: per batch of 32 (sorted by
        length, left-padded, position ids), one pass with the adapter disabled and one enabled,
        logits of the response positions only, float64 log-softmax."""
        import numpy as np

        torch = self.torch
        items = []
        for prompt, response in pairs:
            enc = self.tokenizer(prompt + response, return_offsets_mapping=True)
            first = next(i for i, (lo, hi) in enumerate(enc["offset_mapping"]) if hi > len(prompt) and hi > lo)
            items.append((enc["input_ids"], first))
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
        out = np.empty(len(items))
        for start in range(0, len(order), BATCH):
            rows = order[start : start + BATCH]
            width = max(len(items[i][0]) for i in rows)
            keep = max(len(items[i][0]) - items[i][1] for i in rows) + 1
            ids = torch.full((len(rows), width), self.pad)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                seq = items[i][0]
                ids[r, width - len(seq) :] = torch.tensor(seq)
                mask[r, width - len(seq) :] = 1
            x = dict(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
            with torch.inference_mode():
                with self.model.disable_adapter():
                    base = self.model(**x, logits_to_keep=keep).logits
                tuned = self.model(**x, logits_to_keep=keep).logits
                for r, i in enumerate(rows):
                    n = len(items[i][0]) - items[i][1]
                    lb = base[r, keep - n - 1 : keep - 1].double().log_softmax(-1)
                    lt = tuned[r, keep - n - 1 : keep - 1].double().log_softmax(-1)
                    p, q = lt.exp(), lb.exp()
                    log_m = ((p + q) / 2).log()
                    js = 0.5 * (p * (lt - log_m)).sum(-1) + 0.5 * (q * (lb - log_m)).sum(-1)
                    out[i] = float(js.mean())
        return out


# -- timing -----------------------------------------------------------------------------------


def median_times(fns, reps: int) -> list[float]:
    """Median wall time of each function, the functions taking turns so that
    a slow spell of the machine hits them alike."""
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def time_dlm_sway(base: str, adapter: str, prompts: list[str], reps: int):
    """dlm-sway's delta_kl: (median reported duration, its per-prompt values), or None if not installed."""
    try:
        from dlm_sway.backends import build
        from dlm_sway.core.model import ModelSpec
        from dlm_sway.suite.runner import run
        from dlm_sway.suite.spec import SuiteDefaults, SuiteModels, SwaySpec
    except ImportError:
        return None
    import torch

    ft = ModelSpec(kind="hf", base=base, adapter=adapter, dtype="fp32", device="cpu")
    backend = build(ft)
    spec = SwaySpec(
        models=SuiteModels(base=ModelSpec(kind="hf", base=base, dtype="fp32", device="cpu"), ft=ft),
        defaults=SuiteDefaults(seed=0),
        suite=[{"name": "delta_kl", "kind": "delta_kl", "prompts": prompts, "divergence": "js"}],
    )
    durations = []
    for _ in range(reps):
        backend._inst.cache.clear()  # its forward-pass cache would answer the repeats
        result = run(spec, backend, skip_preflight=True).probes[0]
        durations.append(result.duration_s)
    torch.use_deterministic_algorithms(False)  # dlm-sway's runner turns it on for the whole process
    return statistics.median(durations), list(result.evidence["per_prompt"])


def probe_tables(models: dict, sizes, reps: int) -> list[dict]:
    import numpy as np

    from pytest_sway import run_probe
    from pytest_sway.backends.hf import HFBackend

    rows = []
    for name, (base, adapter, _) in models.items():
        floor = Floor(base, adapter)
        start = time.perf_counter()
        backend = HFBackend("smollm2-135m" if name == "smollm2-135m" else base, adapter=adapter)
        print(f"  {name}: backend built (tokenizer, model, adapter) in {time.perf_counter() - start:.2f} s", flush=True)
        for n in sizes:
            prompts = make_prompts(n)
            reps_n = 3 * reps if name == "tiny" else reps if n < 512 else max(1, reps // 2)

            def sway():
                backend._memo.clear()
                return run_probe("delta_kl", backend, prompts=prompts)

            floor_values, sway_values = floor.js(prompts), sway().values  # also the warm-up
            floor_s, sway_s = median_times([lambda: floor.js(prompts), sway], reps_n)
            dlm = time_dlm_sway(base, adapter, prompts, 1 if n == 512 else reps_n)
            dlm_s, dlm_error = None, None
            if dlm is not None:
                dlm_s, dlm_values = dlm
                dlm_error = float(np.max(np.abs(np.array(dlm_values) - floor_values) / floor_values))
            rows.append(
                {
                    "model": name,
                    "n": n,
                    "floor_s": floor_s,
                    "sway_s": sway_s,
                    "ratio": sway_s / floor_s,
                    "dlm_s": dlm_s,
                    "dlm_ratio": None if dlm_s is None else dlm_s / floor_s,
                    "max_js_difference": float(np.abs(floor_values - sway_values).max()),
                    "dlm_max_relative_error": dlm_error,
                }
            )
            print(
                f"  {name:8} n={n:4}: floor {floor_s:.3f}s, sway {sway_s:.3f}s ({sway_s / floor_s:.2f}x)"
                + ("" if dlm_s is None else f", dlm-sway {dlm_s:.3f}s ({dlm_s / floor_s:.1f}x)"),
                flush=True,
            )
    return rows


def response_tables(models: dict, n: int, reps: int) -> list[dict]:
    """response_divergence against its floor (two teacher-forced batched passes and the JS)."""
    import numpy as np

    from pytest_sway import run_probe
    from pytest_sway.backends.hf import HFBackend

    rows = []
    for name, (base, adapter, _) in models.items():
        floor = Floor(base, adapter)
        backend = HFBackend("smollm2-135m" if name == "smollm2-135m" else base, adapter=adapter)
        pairs = make_pairs(n)

        def sway():
            backend._memo.clear()
            backend._responses.clear()
            return run_probe("response_divergence", backend, pairs=pairs)

        floor_values, sway_values = floor.response_js(pairs), sway().values  # also the warm-up
        floor_s, sway_s = median_times([lambda: floor.response_js(pairs), sway], 3 * reps if name == "tiny" else reps)
        positions = sum(
            len(r.values)
            for r in backend.response_divergences([p for p, _ in pairs], [r for _, r in pairs], divergence="js")
        )
        rows.append(
            {
                "model": name,
                "n": n,
                "positions": positions,
                "floor_s": floor_s,
                "sway_s": sway_s,
                "ratio": sway_s / floor_s,
                "max_difference": float(np.abs(floor_values - sway_values).max()),
            }
        )
        print(f"  {name:8} n={n}: floor {floor_s:.3f}s, sway {sway_s:.3f}s ({sway_s / floor_s:.2f}x)", flush=True)
    return rows


def token_cost(models: dict, n: int, reps: int) -> list[dict]:
    """delta_kl with and without its token lists, interleaved: what the lists cost."""
    import dataclasses
    import functools

    import numpy as np

    from pytest_sway import run_probe
    from pytest_sway.backends.hf import HFBackend
    from pytest_sway.probes import ProbeRegistry, delta_kl

    plain = dataclasses.replace(
        delta_kl.PROBE, kind="delta_kl_without_tokens", measure=functools.partial(delta_kl.measure, top_tokens=0)
    )
    registry = ProbeRegistry([delta_kl.PROBE, plain])
    rows = []
    for name, (base, adapter, _) in models.items():
        backend = HFBackend("smollm2-135m" if name == "smollm2-135m" else base, adapter=adapter)
        prompts = make_prompts(n)

        def run(kind):
            backend._memo.clear()  # a fresh session: every forward pass again
            backend._prompts._texts.clear()  # and every token's text
            return run_probe(kind, backend, prompts=prompts, registry=registry)

        with_lists, without = run("delta_kl"), run(plain.kind)  # also the warm-up
        assert np.array_equal(with_lists.values, without.values)
        times: list[list[float]] = [[], []]
        cpu: list[list[float]] = [[], []]  # this process's CPU time: less swayed by other jobs on the machine
        for rep in range(3 * reps if name == "tiny" else reps):
            turns = list(zip(("delta_kl", plain.kind), times, cpu))
            for kind, spent, used in turns if rep % 2 == 0 else turns[::-1]:  # who goes first alternates
                start, start_cpu = time.perf_counter(), time.process_time()
                run(kind)
                spent.append(time.perf_counter() - start)
                used.append(time.process_time() - start_cpu)
        with_s, without_s = statistics.median(times[0]), statistics.median(times[1])
        paired = statistics.median(a / b for a, b in zip(*times))
        cpu_ratio = statistics.median(cpu[0]) / statistics.median(cpu[1])
        alone_s = lists_alone(backend, prompts, 3 * reps)
        rows.append(
            {
                "model": name,
                "n": n,
                "reps": len(times[0]),
                "with_s": with_s,
                "without_s": without_s,
                "ratio": with_s / without_s,
                "paired_ratio": paired,
                "cpu_ratio": cpu_ratio,
                "alone_s": alone_s,
                "json_bytes": len(json.dumps(with_lists.details)),
            }
        )
        print(
            f"  {name:8} n={n}: with token lists {with_s:.3f}s, without {without_s:.3f}s "
            f"({with_s / without_s:.3f}x; median of paired ratios {paired:.3f}x; CPU time {cpu_ratio:.3f}x); "
            f"the lists' own work timed alone {alone_s:.4f}s ({alone_s / without_s:.2%} of the probe without them)",
            flush=True,
        )
    return rows


def lists_alone(backend, prompts: list[str], reps: int) -> float:
    """The token lists' own work at ``len(prompts)`` prompts, timed apart from the forward
    passes (steady where the whole probe's time is not): the device step on chunks of the
    real vocabulary, and the host's (answers from a warm memo, with lists minus without,
    plus building the details). Median seconds."""
    import torch

    from pytest_sway.backends.hf import _token_candidates
    from pytest_sway.backends.token_changes import TOP_TOKENS, token_details

    rows = backend._divergence_rows
    generator = torch.Generator().manual_seed(0)
    chunk = [torch.randn(rows, backend.vocab_size, generator=generator, dtype=torch.float64) for _ in "ab"]
    b, o = (x.log_softmax(-1) for x in chunk)
    chunks = -(-len(prompts) // rows)
    backend.divergences_and_tokens(prompts, divergence="js", top_tokens=TOP_TOKENS)  # warm memo

    def host_with():
        backend._prompts._texts.clear()
        _, tops = backend.divergences_and_tokens(prompts, divergence="js", top_tokens=TOP_TOKENS)
        token_details(prompts, tops, k=TOP_TOKENS)

    spent = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(chunks):
            _token_candidates(torch, b, o, TOP_TOKENS)
        device = time.perf_counter() - start
        start = time.perf_counter()
        host_with()
        with_lists = time.perf_counter() - start
        start = time.perf_counter()
        backend.divergences(prompts, divergence="js")
        spent.append(device + with_lists - (time.perf_counter() - start))
    return statistics.median(spent)


# -- whole runs, in subprocesses ------------------------------------------------------------------

SUITE = """
import json
import pytest

PROMPTS = {prompts!r}
KINDS = ["js", "kl", "reverse_kl", "tv"]


@pytest.mark.parametrize("divergence", KINDS)
def test_delta_kl(sway, divergence):
    sway.delta_kl(PROMPTS, divergence=divergence)


@pytest.mark.parametrize("half", [0, 1])
def test_halves(sway, half):
    sway.delta_kl(PROMPTS[half::2])


@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.0)
def test_marker_js():
    pass


@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS[:16], divergence="tv", above=0.0)
def test_marker_tv_head():
    pass


@pytest.mark.sway_probe("adapter_ablation", prompts=PROMPTS[:8], scales=[0, 0.5, 1])
def test_ablation_head():
    pass


def test_forward_passes(sway):
    with open("forwarded.json", "w") as fh:
        json.dump({{"|".join(k): v for k, v in sway.backend.forwarded.items()}}, fh)
"""


def run_pytest(args, cwd, env=None) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 5):
        raise RuntimeError(f"pytest failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed


def suite_run(base: str, adapter: str, n: int, tmp: Path) -> dict:
    folder = tmp / "suite"
    folder.mkdir(exist_ok=True)
    prompts = make_prompts(n)
    (folder / "test_suite.py").write_text(SUITE.format(prompts=prompts))
    wall = run_pytest([f"--sway-model={base}", f"--sway-adapter={adapter}"], folder)
    forwarded = json.loads((folder / "forwarded.json").read_text())
    return {
        "tests": 10,
        "prompts": n,
        "wall_s": wall,
        "base_forwards": forwarded.get("next|base", 0),
        "finetuned_forwards": forwarded.get("next|fine-tuned", 0),
    }


def plugin_overhead(tmp: Path, reps: int) -> dict:
    folder = tmp / "plain"
    folder.mkdir(exist_ok=True)
    (folder / "test_plain.py").write_text("".join(f"def test_{i}():\n    pass\n" for i in range(50)))
    run_pytest([], folder)  # warm the file cache
    with_plugin, without = [], []
    for _ in range(reps):
        with_plugin.append(run_pytest([], folder))
        without.append(run_pytest(["-p", "no:pytest_sway"], folder))
    return {
        "with_s": statistics.median(with_plugin),
        "without_s": statistics.median(without),
        "overhead_ms": 1000 * (statistics.median(with_plugin) - statistics.median(without)),
    }


PEAK = """
import json, resource, sys
base, adapter, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, {bench!r})
from bench_probes import Floor, make_prompts
prompts = make_prompts(n)
if mode == "plain":
    Floor(base, adapter).js(prompts)
else:
    from pytest_sway import run_probe
    from pytest_sway.backends.hf import HFBackend
    run_probe("delta_kl", HFBackend(base, adapter=adapter), prompts=prompts)
now = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print(json.dumps([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, now]))
"""


def peak_rss(base: str, adapter: str, n: int) -> dict:
    out = {}
    for mode in ("plain", "sway"):
        script = PEAK.format(bench=str(Path(__file__).parent))
        done = subprocess.run(
            [sys.executable, "-c", script, base, adapter, str(n), mode], capture_output=True, text=True, check=True
        )
        peak, end = json.loads(done.stdout.strip().splitlines()[-1])
        out[f"{mode}_mib"], out[f"{mode}_end_mib"] = peak / 1024, end / 1024
    out["ratio"] = out["sway_mib"] / out["plain_mib"]
    return out


SCALE = """
import json, sys, tempfile, time
sys.path.insert(0, {bench!r})
base, adapter, n, cached, suite = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "cache", sys.argv[5]
from bench_probes import make_prompts
from pytest_sway import run_probe
from pytest_sway.backends.hf import HFBackend


def mib(field):
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(field + ":"))) / 1024


backend = HFBackend(base, adapter=adapter, cache_dir=tempfile.mkdtemp() if cached else None)
# Warm up every code path on other prompts, then forget them.
warm = ["Warm-up prompt number %d says" % i for i in range(8)]
run_probe("null_contrast", backend, prompts=warm, seeds=1)
run_probe("adapter_ablation", backend, prompts=warm, scales=[0, 0.5, 1])
backend._memo.clear()
backend.forwarded.clear()
# Short prompts (about 12 tokens): the memory in question is per prompt, not per token.
prompts = [p.replace(" and I already tried the help page", "") for p in make_prompts(n)]
loaded = mib("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to what is resident now
start = time.perf_counter()
if suite == "pytest":
    import pytest_suite

    pytest_suite.run(backend, prompts)
else:
    run_probe("delta_kl", backend, prompts=prompts, divergence="js")
    run_probe("delta_kl", backend, prompts=prompts, divergence="kl")
    if suite == "full":
        run_probe("null_contrast", backend, prompts=prompts, seeds=2)
        run_probe("adapter_ablation", backend, prompts=prompts, scales=[0, 0.5, 1])
seconds = time.perf_counter() - start
print(json.dumps(dict(n=n, cached=cached, loaded_mib=loaded, peak_mib=mib("VmHWM"), end_mib=mib("VmRSS"),
                      seconds=seconds, forwarded={{"|".join(k): v for k, v in backend.forwarded.items()}},
                      memo_items=len(backend._memo.answers), logit_store_mib=backend._memo.logits.bytes / 2**20)))
"""


def scale_run(base: str, adapter: str, n: int, cached: bool, suite: str) -> dict:
    """The scale suite at ``n`` prompts in a fresh process (memory after load, peak while it runs)."""
    script = SCALE.format(bench=str(Path(__file__).parent))
    done = subprocess.run(
        [sys.executable, "-c", script, base, adapter, str(n), "cache" if cached else "memo", suite],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"scale run at {n} prompts failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cache_rerun(base: str, adapter: str, adapter2: str, n: int, tmp: Path, reps: int) -> dict:
    from pytest_sway import run_probe
    from pytest_sway.backends.hf import HFBackend

    prompts = make_prompts(n)
    firsts, seconds, size = [], [], 0
    for _ in range(reps):
        cache = tempfile.mkdtemp(prefix="cache-", dir=tmp)  # empty: the first run must fill it
        first = HFBackend(base, adapter=adapter, cache_dir=str(cache))
        firsts.append(run_probe("delta_kl", first, prompts=prompts).duration_s)
        second = HFBackend(base, adapter=adapter2, cache_dir=str(cache))
        seconds.append(run_probe("delta_kl", second, prompts=prompts).duration_s)
        assert second.cache.hits == n and not second.forwarded[("next", "base")]
        size = first.cache.size_bytes()
    first_s, second_s = statistics.median(firsts), statistics.median(seconds)
    return {
        "prompts": n,
        "first_s": first_s,
        "second_s": second_s,
        "ratio": second_s / first_s,
        "cache_mib": size / 2**20,
    }


# -- report ---------------------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, fewer repetitions")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per timing (median reported)")
    parser.add_argument(
        "--models", default=None, help="comma-separated subset of tiny,smollm2-135m (default: both; --quick: tiny)"
    )
    parser.add_argument("--work", default=None, help="folder for the benchmark's models (default: a temp dir)")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS + EXTRA_PARTS)} (default: all but scale)",
    )
    parser.add_argument(
        "--scale-sizes", default=",".join(map(str, SCALE_SIZES)), help="prompt counts of the scale part"
    )
    parser.add_argument(
        "--scale-suite",
        choices=("full", "pytest", "delta_kl"),
        default="full",
        help="scale part: the four-probe suite through run_probe, the same suite as marked tests run by pytest "
        "with all its reports (pytest_suite.py), or delta_kl's two divergences only (faster)",
    )
    parser.add_argument(
        "--scale-cache",
        action="store_true",
        help="scale part: also run each size with --sway-cache-dir (evicted base logits read back)",
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS + EXTRA_PARTS):
        parser.error(f"--parts: unknown {', '.join(sorted(parts - set(PARTS)))}")
    names = ("tiny",) if args.quick else ("tiny", "smollm2-135m")
    if parts == {"scale"} and not args.quick:
        names = ("smollm2-135m",)
    if args.models:
        names = tuple(args.models.split(","))
        if not set(names) <= {"tiny", "smollm2-135m"}:
            parser.error(f"--models: expected tiny and/or smollm2-135m, got {args.models}")
    reps = 2 if args.quick else args.reps
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="sway-bench-"))
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads; work folder {work}",
        flush=True,
    )
    models = prepare_models(work, names)
    real = models[names[-1]]
    if "probes" in parts:
        print("delta_kl probe time against the floor (median of repetitions):", flush=True)
        rows = probe_tables(models, SIZES, reps)
        print()
        print(
            "| model | prompts | floor (s) | pytest-sway (s) | pytest-sway / floor | largest JS difference from the "
            "floor | dlm-sway (s) | dlm-sway / floor | dlm-sway's largest JS error |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            dlm = "-" if r["dlm_s"] is None else f"{r['dlm_s']:.3f}"
            dlm_ratio = "-" if r["dlm_ratio"] is None else f"{r['dlm_ratio']:.1f}x"
            dlm_error = "-" if r["dlm_max_relative_error"] is None else f"{100 * r['dlm_max_relative_error']:.0f}%"
            print(
                f"| {r['model']} | {r['n']} | {r['floor_s']:.3f} | {r['sway_s']:.3f} | {r['ratio']:.2f}x | "
                f"{r['max_js_difference']:.1e} | {dlm} | {dlm_ratio} | {dlm_error} |"
            )
        print()
    if "responses" in parts:
        print("response_divergence probe time against its floor (median of repetitions):", flush=True)
        rows = response_tables(models, 64, reps)
        print()
        print(
            "| model | items | response positions | floor (s) | pytest-sway (s) | pytest-sway / floor | "
            "largest difference from the floor |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['model']} | {r['n']} | {r['positions']} | {r['floor_s']:.3f} | {r['sway_s']:.3f} | "
                f"{r['ratio']:.2f}x | {r['max_difference']:.1e} |"
            )
        print()
    if "tokens" in parts:
        print("delta_kl with and without its token lists (interleaved, medians):", flush=True)
        rows = token_cost(models, 512, reps)
        print()
        print(
            "| model | prompts | repetitions | without token lists (s) | with token lists (s) | ratio of medians | "
            "median of paired ratios | CPU time, ratio of medians | the lists' own work alone (s) | details in JSON (KB) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['model']} | {r['n']} | {r['reps']} | {r['without_s']:.3f} | {r['with_s']:.3f} | "
                f"{r['ratio']:.3f}x | {r['paired_ratio']:.3f}x | {r['cpu_ratio']:.3f}x | {r['alone_s']:.4f} | {r['json_bytes'] / 1000:.0f} |"
            )
        print()
    if "suite" in parts:
        suite = suite_run(real[0], real[1], 64, work)
        print(
            f"10-test suite on {names[-1]}, {suite['prompts']} shared prompts: {suite['wall_s']:.1f} s wall; base "
            f"forward passes {suite['base_forwards']} (one per prompt: {suite['base_forwards'] == suite['prompts']}), "
            f"fine-tuned {suite['finetuned_forwards']}",
            flush=True,
        )
    if "overhead" in parts:
        overhead = plugin_overhead(work, 11 if not args.quick else 5)
        print(
            f"plugin overhead on 50 tests without sway tests: {overhead['overhead_ms']:.0f} ms "
            f"({overhead['with_s']:.3f} s with, {overhead['without_s']:.3f} s without; medians)",
            flush=True,
        )
    if "memory" in parts:
        for n in (64, 512):
            m = peak_rss(real[0], real[1], n)
            print(
                f"peak RSS, {names[-1]}, {n} prompts: plain load + same forward passes {m['plain_mib']:.0f} MiB, "
                f"pytest-sway {m['sway_mib']:.0f} MiB ({m['ratio']:.2f}x); at the end {m['plain_end_mib']:.0f} and "
                f"{m['sway_end_mib']:.0f} MiB",
                flush=True,
            )
    if "cache" in parts:
        cache = cache_rerun(real[0], real[1], real[2], 64, work, 3 if not args.quick else 1)
        print(
            f"base-output cache, {names[-1]}, {cache['prompts']} prompts: first run {cache['first_s']:.3f} s, rerun "
            f"with another adapter {cache['second_s']:.3f} s ({cache['ratio']:.2f}x); {cache['cache_mib']:.1f} MiB "
            "on disk",
            flush=True,
        )
    if "scale" in parts:
        what = {
            "full": "delta_kl js and kl, null_contrast seeds=2, adapter_ablation scales 0, 0.5, 1",
            "pytest": "the same four probes as marked tests run by pytest, with the JSON, HTML, Markdown and "
            "JUnit reports",
            "delta_kl": "delta_kl js and kl",
        }[args.scale_suite]
        print(f"scale suite on {names[-1]} ({what}), prompts of about 12 tokens, a fresh process per row:", flush=True)
        print(
            "| prompts | disk cache | RSS after load (MiB) | peak while running (MiB) | peak - load (MiB) | "
            "seconds | ms per prompt | base passes per prompt | all passes per prompt |"
        )
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        for n in (int(x) for x in args.scale_sizes.split(",")):
            for cached in (False, True) if args.scale_cache else (False,):
                r = scale_run(real[0], real[1], n, cached, args.scale_suite)
                passes = sum(v for k, v in r["forwarded"].items())
                print(
                    f"| {n} | {'yes' if cached else 'no'} | {r['loaded_mib']:.0f} | {r['peak_mib']:.0f} | "
                    f"{r['peak_mib'] - r['loaded_mib']:.0f} | {r['seconds']:.1f} | {1000 * r['seconds'] / n:.1f} | "
                    f"{r['forwarded'].get('next|base', 0) / n:.2f} | {passes / n:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
