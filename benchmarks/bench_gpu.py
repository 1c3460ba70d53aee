"""The GPU path, measured: pytest-sway against the floor on models of real shapes, in bfloat16.

    python3 benchmarks/bench_gpu.py --device cuda --shapes 1b,8b --out gpu.json
    python benchmarks/bench_gpu.py --device cpu --shapes tiny --prompts 24     # what the test runs

Nothing is downloaded: each shape is a randomly initialised Llama of that shape
(``1b``: Llama-3.2-1B's; ``8b``: Llama-3.1-8B's; ``tiny``: 2 layers), built in
place on the device in bfloat16, with a random LoRA adapter (r=16 on every
linear layer, B drawn non-zero so the adapter does something) and a word
tokenizer (``t123`` is token 123), over ``--prompts`` prompts of 16-256 tokens.

Per shape and probe (``PROBES``; delta_kl here):

* **floor**: raw transformers + peft, batched as the plugin batches (sorted by
  length, 32 per pass, left-padded with position ids, last-position logits
  only), one pass with the adapter disabled and one with it enabled, then the
  full-vocabulary divergence in float64 on the device;
* **pytest-sway**: ``run_probe`` on an ``HFBackend`` wrapping the same model
  objects (fresh memo each repetition, bootstrap included);
* ratio of medians, prompt tokens per second (both passes counted), peak
  device memory above the weights, the largest difference between the two;
* **float32 agreement**: the divergence from the very logits the backend used,
  computed in float32 instead of float64: the error the arithmetic adds;
* **noise floor**: the divergence between two computations of the *same* base
  model on the same prompts in different batch compositions (sorted batches
  against shuffled ones): what bfloat16 rounding alone moves a prompt, the
  smallest effect a gate can honestly resolve. Also in float32 where the
  shape's float32 weights fit (``--fp32-noise-shapes``).

It prints a table after each shape and rewrites ``--out`` (JSON) as it goes, so
a shape that fails (out of memory, over ``--budget-s``) leaves the others'
results. The repository root is put on ``sys.path`` here: pytest_sway need not
be installed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

BATCH = 32
SHAPES = {
    # Llama-3.2-1B
    "1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
        rope_theta=500000.0,
    ),
    # Llama-3.1-8B
    "8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
        rope_theta=500000.0,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1000,
        tie_word_embeddings=False,
        rope_theta=10000.0,
    ),
}


# -- models, adapter, tokenizer, prompts ------------------------------------------------------------


class WordTokenizer:
    """``"t5 t17 t3"`` -> ``[5, 17, 3]``: what the backend needs of a tokenizer, nothing downloaded."""

    pad_token_id = 0
    eos_token_id = 0
    unk_token_id = 0
    bos_token = None
    chat_template = None
    model_max_length = 1 << 20

    def __call__(self, texts, add_special_tokens=True, return_offsets_mapping=False, **kwargs):
        def ids(text):
            return [int(word[1:]) for word in text.split()]

        if return_offsets_mapping:  # one text: each word's (start, end) characters, as a fast tokenizer gives
            spans, at = [], 0
            for word in texts.split():
                at = texts.index(word, at)
                spans.append((at, at + len(word)))
                at += len(word)
            return {"input_ids": ids(texts), "offset_mapping": spans}
        return {"input_ids": [ids(t) for t in texts] if isinstance(texts, list) else ids(texts)}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"t{i}" for i in ids)

    def batch_decode(self, seqs, **kwargs):  # delta_kl's token lists name each token
        return [self.decode(ids) for ids in seqs]

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


#: Tokens in each response that response_divergence teacher-forces.
RESPONSE_TOKENS = 32


def make_responses(n: int, vocab: int, seed: int = 1) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [" " + " ".join(f"t{i}" for i in rng.integers(1, vocab, RESPONSE_TOKENS)) for _ in range(n)]


def make_prompts(n: int, vocab: int, seed: int = 0) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(16, 257, n)
    return [" ".join(f"t{i}" for i in rng.integers(1, vocab, length)) for length in lengths]


def build_model(shape: str, device: str, dtype, lora_std: float):
    """A random Llama of ``shape`` on ``device`` in ``dtype``, with a random r=16 LoRA on every linear layer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(max_position_embeddings=8192, **SHAPES[shape])
    torch.manual_seed(0)  # a benchmark script: the random weights are the same every run
    with torch.device(device):  # weights created on the device, not copied there
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
    generator = torch.Generator(device="cpu").manual_seed(1)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: a no-op adapter
                param.copy_((torch.randn(param.shape, generator=generator) * lora_std).to(param))
    peft.eval()
    return peft


def make_backend(peft_model, tokenizer, batch_size: int = BATCH):
    """An ``HFBackend`` around model objects already in memory: its loaders are patched to return them,
    so everything else (device, dtype, memo, batching) is the backend's own code."""
    from unittest import mock

    from pytest_sway.backends import builtin_models, hf
    from pytest_sway.backends.hf import loading

    base = peft_model.get_base_model()
    patches = dict(
        _locate=lambda *args, **kwargs: None,  # the names below are not folders: nothing to find
        _load_tokenizer=lambda *args, **kwargs: tokenizer,
        _load_model=lambda *args, **kwargs: base,
        _attach_adapter=lambda *args, **kwargs: peft_model,
    )
    with contextlib.ExitStack() as stack:
        for name, fn in patches.items():
            if not hasattr(loading, name):
                raise RuntimeError(f"pytest_sway.backends.hf.loading has no {name} any more: update make_backend")
            stack.enter_context(mock.patch.object(loading, name, fn))
        stack.enter_context(mock.patch.object(builtin_models, "resolve_model", lambda name, *args, **kwargs: name))
        device = str(base.get_input_embeddings().weight.device)
        backend = hf.HFBackend(
            "random-" + type(base).__name__,
            adapter="random-lora",
            device=device,
            dtype=str(base.dtype).replace("torch.", ""),
            batch_size=batch_size,
        )
    # The GPU path's batching (length-sorted, left-padded), also when this runs on the CPU, where the
    # backend would otherwise batch by exact length for bit-identical values: the floor batches the same.
    backend._planner.exact_shapes = False
    return backend


# -- the floor: raw transformers + peft -------------------------------------------------------------


def floor_logits(model, seqs: list, *, adapter: bool, order=None, batch: int = BATCH):
    """Last-position logits per sequence (rows in ``seqs`` order), batched like the plugin:
    ``order`` (default: by length) cut into passes of ``batch``, left-padded, with position ids."""
    import torch

    device = model.get_input_embeddings().weight.device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i])) if order is None else list(order)
    out = None
    context = contextlib.nullcontext() if adapter else model.disable_adapter()
    with torch.inference_mode(), context:
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            width = max(len(seqs[i]) for i in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, width - len(seqs[i]) :] = torch.tensor(seqs[i])
                mask[r, width - len(seqs[i]) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                logits_to_keep=1,
                use_cache=False,
            ).logits[:, -1]
            if out is None:
                out = torch.empty((len(seqs), logits.shape[-1]), dtype=logits.dtype, device=logits.device)
            out[torch.tensor(rows, device=logits.device)] = logits
    return out


def js(base_logits, other_logits, dtype, rows: int = 64):
    """Full-vocabulary Jensen-Shannon per row, computed in ``dtype`` on the logits' device (numpy float64 out)."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, base_logits.shape[0], rows):
            q = base_logits[start : start + rows].to(dtype).softmax(-1)
            p = other_logits[start : start + rows].to(dtype).softmax(-1)
            log_m = ((p + q) / 2).log()
            left = torch.where(p > 0, p * (p.log() - log_m), 0.0).sum(-1)
            right = torch.where(q > 0, q * (q.log() - log_m), 0.0).sum(-1)
            out.append((0.5 * (left + right)).clamp(min=0).double().cpu())
    return torch.cat(out).numpy()


# -- probes: one entry each, sway side and floor side ---------------------------------------------


@dataclass(frozen=True)
class BenchProbe:
    name: str
    sway: Callable  # (backend, prompts, responses) -> per-item values (numpy)
    floor: Callable  # (peft model, prompt token sequences, response token sequences) -> per-item values (numpy)
    passes: int  # forward passes over the prompts per run (for tokens per second)
    responses: bool = False  # whether each item also holds a teacher-forced response


def _sway_delta_kl(backend, prompts, responses):
    from pytest_sway import run_probe

    return run_probe("delta_kl", backend, prompts=prompts, divergence="js").values


def _floor_delta_kl(model, seqs, answers):
    import torch

    return js(floor_logits(model, seqs, adapter=False), floor_logits(model, seqs, adapter=True), torch.float64)


def _sway_response_divergence(backend, prompts, responses):
    from pytest_sway import run_probe

    return run_probe("response_divergence", backend, pairs=list(zip(prompts, responses)), divergence="js").values


def _floor_response_divergence(model, seqs, answers, batch: int = BATCH):
    """Both variants teacher-forced on prompt + response, batched like the plugin (by length, left-padded,
    position ids, the response positions' logits only); full-vocabulary JS in float64 per position,
    averaged over each response."""
    import numpy as np
    import torch

    full = [s + a for s, a in zip(seqs, answers)]
    keep = max(len(a) for a in answers) + 1
    device = model.get_input_embeddings().weight.device
    order = sorted(range(len(full)), key=lambda i: len(full[i]))
    out = np.empty(len(full))
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            width = max(len(full[i]) for i in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, width - len(full[i]) :] = torch.tensor(full[i])
                mask[r, width - len(full[i]) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs = dict(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                logits_to_keep=keep,
                use_cache=False,
            )
            with model.disable_adapter():
                base = model(**kwargs).logits
            tuned = model(**kwargs).logits
            for r, i in enumerate(rows):
                n = len(answers[i])  # position p predicts token p + 1: the logits before each response token
                out[i] = js(base[r, keep - n - 1 : keep - 1], tuned[r, keep - n - 1 : keep - 1], torch.float64).mean()
    return out


PROBES = [
    BenchProbe("delta_kl", _sway_delta_kl, _floor_delta_kl, passes=2),
    BenchProbe("response_divergence", _sway_response_divergence, _floor_response_divergence, passes=2, responses=True),
]


# -- measuring ------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> int:
    import torch

    if not device.startswith("cuda"):
        return 0
    _sync(device)
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def _peak_mib(device: str, start: int):
    import torch

    if not device.startswith("cuda"):
        return None
    _sync(device)
    return (torch.cuda.max_memory_allocated() - start) / 2**20


def timed(fn, device: str):
    _sync(device)
    start = time.perf_counter()
    value = fn()
    _sync(device)
    return time.perf_counter() - start, value


def measure_shape(shape: str, args, deadline: float, result: dict) -> dict:
    """Fill ``result`` step by step (what is done stays there if a later step fails)."""
    import numpy as np
    import torch

    from pytest_sway import BASE, FINETUNED

    device, dtype = args.device, getattr(torch, args.dtype)
    result.update(shape=shape, config=SHAPES[shape], prompts=args.prompts, dtype=args.dtype)
    start = time.perf_counter()
    model = build_model(shape, device, dtype, args.lora_std)
    _sync(device)
    result["init_s"] = time.perf_counter() - start
    result["params_b"] = sum(p.numel() for p in model.parameters()) / 1e9
    tokenizer = WordTokenizer()
    prompts = make_prompts(args.prompts, SHAPES[shape]["vocab_size"])
    responses = make_responses(args.prompts, SHAPES[shape]["vocab_size"])
    seqs = [tuple(tokenizer(p)["input_ids"]) for p in prompts]
    answers = [tuple(tokenizer(r)["input_ids"]) for r in responses]
    tokens = sum(len(s) for s in seqs)
    result["prompt_tokens"] = tokens
    backend = make_backend(model, tokenizer)
    print(
        f"  {shape}: {result['params_b']:.2f}B parameters built on {device} in {result['init_s']:.1f} s; "
        f"{args.prompts} prompts, {tokens} tokens",
        flush=True,
    )

    probes = result["probes"] = {}
    for probe in PROBES:
        if time.perf_counter() > deadline:
            probes[probe.name] = {"skipped": "time budget"}
            continue

        def sway():
            backend._memo.clear()
            backend._responses.clear()
            return probe.sway(backend, prompts, responses)

        floor = lambda: probe.floor(model, seqs, answers)  # noqa: E731
        probe_tokens = tokens + (RESPONSE_TOKENS * len(prompts) if probe.responses else 0)
        sway(), floor()  # warm-up (kernel selection, allocator)
        sway_times, floor_times, sway_peak, floor_peak = [], [], 0.0, 0.0
        for _ in range(args.reps):
            mark = _peak_reset(device)
            t, floor_values = timed(floor, device)
            floor_times.append(t)
            floor_peak = max(floor_peak, _peak_mib(device, mark) or 0.0)
            mark = _peak_reset(device)
            t, sway_values = timed(sway, device)
            sway_times.append(t)
            sway_peak = max(sway_peak, _peak_mib(device, mark) or 0.0)
        sway_s, floor_s = statistics.median(sway_times), statistics.median(floor_times)
        probes[probe.name] = {
            "sway_s": sway_s,
            "floor_s": floor_s,
            "ratio": sway_s / floor_s,
            "sway_tokens_per_s": probe.passes * probe_tokens / sway_s,
            "floor_tokens_per_s": probe.passes * probe_tokens / floor_s,
            "sway_peak_mib": sway_peak if device.startswith("cuda") else None,
            "floor_peak_mib": floor_peak if device.startswith("cuda") else None,
            "mean": float(np.mean(sway_values)),
            "max_abs_difference_from_floor": float(np.max(np.abs(np.asarray(sway_values) - floor_values))),
        }
        print(
            f"  {shape} {probe.name}: floor {floor_s:.3f} s, pytest-sway {sway_s:.3f} s ({sway_s / floor_s:.2f}x)",
            flush=True,
        )

    if time.perf_counter() < deadline:
        # The float64 values against float32 arithmetic on the very logits the backend used.
        labels = list(prompts)
        backend._memo.clear()
        b = torch.stack(backend.next_token_logits(seqs, BASE, labels=labels))
        f = torch.stack(backend.next_token_logits(seqs, FINETUNED, labels=labels))
        backend._memo.clear()
        from_backend = backend.divergences(prompts, divergence="js")
        in64, in32 = js(b, f, torch.float64), js(b, f, torch.float32)
        result["float32_agreement"] = {
            "max_abs": float(np.max(np.abs(in32 - in64))),
            "max_rel": float(np.max(np.abs(in32 - in64) / np.maximum(in64, 1e-30))),
            "median_rel": float(np.median(np.abs(in32 - in64) / np.maximum(in64, 1e-30))),
            "float64_vs_backend_max_abs": float(np.max(np.abs(in64 - from_backend))),
        }
        del b, f
    if time.perf_counter() < deadline:
        result["noise_floor"] = {args.dtype: noise_floor(model, seqs)}
        if shape in args.fp32_noise_shapes.split(",") and time.perf_counter() < deadline and args.dtype != "float32":
            try:
                model.to(torch.float32)
                result["noise_floor"]["float32"] = noise_floor(model, seqs)
            except torch.OutOfMemoryError as exc:
                result["noise_floor"]["float32"] = {"error": f"out of memory: {exc}".splitlines()[0]}
    result["total_s"] = time.perf_counter() - start
    backend.close()
    return result


def noise_floor(model, seqs) -> dict:
    """JS between the base's logits in sorted batches and in shuffled batches: rounding alone."""
    import numpy as np
    import torch

    shuffled = np.random.default_rng(7).permutation(len(seqs))
    a = floor_logits(model, seqs, adapter=False)
    b = floor_logits(model, seqs, adapter=False, order=shuffled)
    values = js(a, b, torch.float64)
    identical = float(np.mean(values == 0.0))
    del a, b
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p95": float(np.quantile(values, 0.95)),
        "max": float(values.max()),
        "share_exactly_zero": identical,
    }


# -- report -----------------------------------------------------------------------------------------


def table(results: dict) -> str:
    lines = [
        "| shape | probe | floor (s) | pytest-sway (s) | ratio | tokens/s (sway) | tokens/s (floor) | "
        "peak GPU MiB sway / floor | mean JS | max diff vs floor | float32 max rel err | "
        "noise floor JS mean / p95 / max |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for shape, r in results.items():
        if "error" in r:
            lines.append(f"| {shape} | failed: {r['error']} |")
        noise = r.get("noise_floor", {})
        noise_text = (
            "; ".join(
                f"{k}: {v['mean']:.1e} / {v['p95']:.1e} / {v['max']:.1e}" for k, v in noise.items() if "mean" in v
            )
            or "-"
        )
        agree = r.get("float32_agreement")
        for name, p in r.get("probes", {}).items():
            if "skipped" in p:
                lines.append(f"| {shape} | {name} | skipped ({p['skipped']}) |")
                continue
            peak = "-" if p["sway_peak_mib"] is None else f"{p['sway_peak_mib']:.0f} / {p['floor_peak_mib']:.0f}"
            lines.append(
                f"| {shape} | {name} | {p['floor_s']:.3f} | {p['sway_s']:.3f} | {p['ratio']:.2f}x | "
                f"{p['sway_tokens_per_s']:.0f} | {p['floor_tokens_per_s']:.0f} | {peak} | {p['mean']:.3g} | "
                f"{p['max_abs_difference_from_floor']:.1e} | {'-' if agree is None else format(agree['max_rel'], '.1e')} "
                f"| {noise_text} |"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--shapes", default="1b,8b", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (median reported)")
    parser.add_argument("--lora-std", type=float, default=2e-3, help="standard deviation of the random lora_B")
    parser.add_argument(
        "--fp32-noise-shapes",
        default="1b,tiny",
        help="shapes whose noise floor is also "
        "measured in float32 (the weights are cast in place: 4 bytes per parameter)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="start no new step after this many seconds (results so far are kept)",
    )
    parser.add_argument("--out", default=None, help="JSON results, rewritten after each shape")
    args = parser.parse_args(argv)
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"--shapes: unknown {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
    import torch
    import transformers

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    started = time.perf_counter()
    deadline = started + args.budget_s
    info = {
        "device": args.device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "prompts": args.prompts,
        "reps": args.reps,
        "shapes": {},
    }
    print(
        f"bench_gpu: {info['gpu'] or args.device}, torch {info['torch']}, transformers {info['transformers']}, "
        f"{args.prompts} prompts, {args.dtype}",
        flush=True,
    )

    def save():
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(info, indent=2))

    for shape in shapes:
        if time.perf_counter() > deadline:
            info["shapes"][shape] = {"error": "skipped: time budget spent"}
        else:
            result = info["shapes"][shape] = {}
            try:
                measure_shape(shape, args, deadline, result)
            except Exception as exc:  # out of memory, or anything else: keep what was measured
                result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                print(f"  {shape}: failed: {result['error']}", flush=True)
        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        info["elapsed_s"] = time.perf_counter() - started
        save()
        print(table(info["shapes"]), flush=True)
    return info


if __name__ == "__main__":
    main()
