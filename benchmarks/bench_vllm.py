"""The vLLM backend against the hf backend: time, agreement, and what top-k bounds cost a gate.

    HF_HUB_OFFLINE=1 python benchmarks/bench_vllm.py --prompts 12 \\
        --vllm-args "gpu_memory_utilization=0.25 max_model_len=2048"          # a CPU machine
    python benchmarks/bench_vllm.py --prompts 12 --vllm-args "dtype=bfloat16"   # a GPU (hf in bfloat16 too)

One ``VLLMBackend`` and one ``HFBackend`` on the same model and adapter
(default: the built-in ``smollm2-135m`` and ``conftest_examples/support-adapter``),
each started once. Three parts, printed as markdown tables:

* **the engine**: its start time (``vllm.LLM`` alone) and the startup
  self-checks' findings (``pytest_sway.backends.vllm.checks``), with the hf
  backend's load time beside them;
* **probes**: every probe the vLLM backend serves, on ``--prompts`` items from
  ``conftest_examples/support_data.py`` (and ``data/general_knowledge.jsonl``
  for ``choice_accuracy``), run through ``run_probe`` once per backend (the
  backends memoise per item: a second run would time the memo). Both are warmed
  first by a probe on two prompts no other probe uses. Per probe: items, vLLM
  and hf seconds (wall clock around ``run_probe``, bootstrap included), their
  ratio, and the largest per-item difference between the two backends' values;
* **bounds**: full next-token rows from the engine for the base and the
  fine-tune on ``--prompts`` support questions (chat formatted: the adapter
  moves them) and as many general prompts (plain text: it leaves them nearly
  alone), as the demo gates them, then per ``--k`` what a run capped at ``k`` log-probabilities
  per side would have judged (``topk.width_cost``): the mean exact JS and TV,
  the mean low and high ends and the mean width; and per ``--thresholds``, of the
  prompts whose exact value lies above (below) the threshold, the fraction whose
  whole interval does too, which is what an ``above=`` (``below=``) gate can
  still see.

The engine spawns processes, so this file runs under ``__main__`` only. On the
CPU vLLM's ``auto`` dtype is bfloat16 and the backend forces float32 (as hf);
give ``dtype=...`` in ``--vllm-args`` to choose (hf follows it). ``--out``
writes every figure as JSON. The repository root is put on ``sys.path`` here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "conftest_examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "conftest_examples"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

#: Prompts used only to warm both backends (the memo keys on token ids: no probe below reuses them).
WARM = ["Tell me a joke about cats.", "What is two plus two?"]


def probe_calls(n: int) -> list[tuple[str, dict]]:
    """``(label, run_probe keyword arguments)`` for every probe, ``n`` items each (fewer where the data has fewer)."""
    from support_data import FACT_CASES, GENERAL_PROMPTS, GENERAL_TEXTS, PREFERENCES, TARGET_QUESTIONS

    questions = []
    with open(ROOT / "conftest_examples" / "data" / "general_knowledge.jsonl") as fh:
        for line in fh:
            row = json.loads(line)
            questions.append((row["question"], row["choices"], row["answer"]))
    target, general = TARGET_QUESTIONS[:n], GENERAL_PROMPTS[:n]
    return [
        ("delta_kl js", dict(kind="delta_kl", prompts=target, chat=True, divergence="js")),
        ("delta_kl kl", dict(kind="delta_kl", prompts=target, chat=True, divergence="kl")),
        ("completion_lift", dict(kind="completion_lift", cases=FACT_CASES[:n], chat=True)),
        ("perplexity_shift", dict(kind="perplexity_shift", texts=GENERAL_TEXTS[:n])),
        ("preference_shift", dict(kind="preference_shift", triples=PREFERENCES[:n], chat=True)),
        ("greedy_change", dict(kind="greedy_change", prompts=target, chat=True, max_new_tokens=12)),
        ("response_divergence", dict(kind="response_divergence", prompts=general, max_new_tokens=16)),
        ("choice_accuracy", dict(kind="choice_accuracy", questions=questions[:n])),
        ("null_contrast", dict(kind="null_contrast", prompts=target, chat=True, seeds=2)),
        ("adapter_ablation", dict(kind="adapter_ablation", prompts=target, chat=True)),
    ]


def bench_probes(vllm_backend, hf_backend, n: int) -> list[dict]:
    import numpy as np

    from pytest_sway.measure.run import run_probe

    for backend in (vllm_backend, hf_backend):  # warm-up: first requests, first LoRA load, first kernels
        run_probe("delta_kl", backend, prompts=WARM, chat=True)
    rows = []
    for label, call in probe_calls(n):
        params = dict(call)
        kind = params.pop("kind")
        found, spent = {}, {}
        for name, backend in (("vllm", vllm_backend), ("hf", hf_backend)):
            start = time.perf_counter()
            found[name] = run_probe(kind, backend, **params)
            spent[name] = time.perf_counter() - start
        a, b = (np.asarray(found[s].values, dtype=np.float64) for s in ("vllm", "hf"))
        row = {
            "probe": label,
            "items": int(found["vllm"].n),
            "vllm_s": spent["vllm"],
            "hf_s": spent["hf"],
            "ratio": spent["vllm"] / spent["hf"],
            "max_diff": float(np.max(np.abs(a - b))) if a.shape == b.shape else float("nan"),
            "estimate_vllm": float(found["vllm"].estimate),
            "estimate_hf": float(found["hf"].estimate),
        }
        rows.append(row)
        print(
            f"  {label}: {row['items']} items, vllm {row['vllm_s']:.2f} s, hf {row['hf_s']:.2f} s, "
            f"max |diff| {row['max_diff']:.2g}",
            flush=True,
        )
    return rows


def bench_widths(backend, sets: dict[str, list], ks: list[int], thresholds: dict[str, list[float]]) -> dict:
    """Exact against bounded next-token divergences from the engine's full rows; ``sets`` maps a
    name to token-id sequences. Widths per set, gate fractions over all of them."""
    import numpy as np

    from pytest_sway.backends.topk import width_cost

    engine = backend.engine
    names = [name for name, seqs in sets.items() for _ in seqs]
    seqs = [seq for part in sets.values() for seq in part]
    start = time.perf_counter()
    base = [engine.full_row(ids, logp) for ids, logp in engine.next_logprobs(seqs, None, -1)]
    tuned = [engine.full_row(ids, logp) for ids, logp in engine.next_logprobs(seqs, backend.adapter_path, -1)]
    rows_s = time.perf_counter() - start
    out = {"prompts": len(seqs), "rows_s": rows_s, "by_k": []}
    for k in ks:
        entry: dict = {"k": k}
        for kind in thresholds:
            got = np.array([width_cost(t, b, k, kind) for t, b in zip(tuned, base)])  # (exact, low, high)
            exact, low, high = got[:, 0], got[:, 1], got[:, 2]
            per_set = {}
            for name in sets:
                at = np.array([n == name for n in names])
                per_set[name] = {
                    "exact": float(exact[at].mean()),
                    "low": float(low[at].mean()),
                    "high": float(high[at].mean()),
                    "width": float((high - low)[at].mean()),
                    "max_width": float((high - low)[at].max()),
                }
            seen = {}
            for t in thresholds[kind]:
                above, below = exact > t, exact < t
                seen[str(t)] = {
                    "exact_above": int(above.sum()),
                    "bounds_above": int((low > t).sum()),
                    "exact_below": int(below.sum()),
                    "bounds_below": int((high < t).sum()),
                }
            entry[kind] = {"sets": per_set, "thresholds": seen}
        out["by_k"].append(entry)
    return out


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="model name or folder (default: smollm2-135m)")
    parser.add_argument("--adapter", default=str(ROOT / "conftest_examples" / "support-adapter"), help="LoRA folder")
    parser.add_argument("--prompts", type=int, default=12, help="items per probe, and per prompt set for bounds")
    parser.add_argument("--k", default="20,100,1000", help="top-k caps to bound with (comma separated)")
    parser.add_argument("--js-thresholds", default="0.01,0.05,0.3", help="JS gate thresholds (nats)")
    parser.add_argument("--tv-thresholds", default="0.05,0.1,0.5", help="TV gate thresholds")
    parser.add_argument("--vllm-args", default="", help='engine arguments, "NAME=VALUE ..." (as --sway-vllm-args)')
    parser.add_argument("--dtype", default="auto", help="as --sway-dtype, for both backends (auto: float32 on CPU)")
    parser.add_argument("--skip-probes", action="store_true", help="only the engine and the bounds")
    parser.add_argument("--out", help="write every figure here as JSON")
    args = parser.parse_args(argv)

    from support_data import GENERAL_PROMPTS, TARGET_QUESTIONS

    from pytest_sway.backends.builtin_models import resolve_model
    from pytest_sway.backends.hf.backend import HFBackend
    from pytest_sway.backends.vllm.backend import VLLMBackend
    from pytest_sway.backends.vllm.engine import Engine, engine_args, parse_engine_args

    user = parse_engine_args(args.vllm_args)
    hf_dtype = str(user.get("dtype", args.dtype))
    report: dict = {"model": args.model, "adapter": args.adapter, "vllm_args": user, "dtype": args.dtype}

    start = time.perf_counter()
    engine = Engine(resolve_model(args.model), engine_args(user, dtype=args.dtype))
    report["engine_start_s"] = time.perf_counter() - start
    start = time.perf_counter()
    vb = VLLMBackend(args.model, adapter=args.adapter, dtype=args.dtype, vllm_args=user, engine=engine)
    report["self_checks_s"] = time.perf_counter() - start
    report["findings"] = dict(vb.findings)
    report["describe"] = vb.describe()
    start = time.perf_counter()
    hb = HFBackend(args.model, adapter=args.adapter, dtype=hf_dtype)
    report["hf_load_s"] = time.perf_counter() - start
    hf_info = hb.describe()
    print(
        f"engine started in {report['engine_start_s']:.1f} s; self-checks {report['self_checks_s']:.1f} s", flush=True
    )

    try:
        if not args.skip_probes:
            report["probes"] = bench_probes(vb, hb, args.prompts)
        n = args.prompts
        thresholds = {
            "js": [float(t) for t in args.js_thresholds.split(",")],
            "tv": [float(t) for t in args.tv_thresholds.split(",")],
        }
        ks = [int(k) for k in args.k.split(",")]
        sets = {  # as the demo gates them: the questions it learned in chat, general prompts as plain text
            "support questions (chat)": vb.encode_prompts(TARGET_QUESTIONS[:n], chat=True),
            "general prompts (plain)": vb.encode_prompts(GENERAL_PROMPTS[:n], chat=False),
        }
        report["bounds"] = bench_widths(vb, sets, ks, thresholds)
    finally:
        vb.close()
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2, default=str))

    f = report["findings"]
    print()
    print(
        f"vLLM {engine.version}, dtype {vb.describe()['dtype']} (hf: {hf_info.get('dtype')}, "
        f"{hf_info.get('device')}); model {args.model}, adapter {Path(args.adapter).name}"
    )
    print()
    print(
        table(
            ["engine", "value"],
            [
                ["vllm.LLM start", f"{report['engine_start_s']:.1f} s"],
                ["self-checks", f"{report['self_checks_s']:.1f} s"],
                ["hf backend load", f"{report['hf_load_s']:.1f} s"],
                ["adapter change (largest, top-20)", f"{f['adapter_change']:.3g} nats"],
                ["prompt vs generation log-prob (largest gap)", f"{f['logprob_agreement']:.3g} nats"],
                ["batch-order noise (largest)", f"{f['noise_floor']:.3g} nats"],
            ],
        )
    )
    if "probes" in report:
        print()
        print(
            table(
                ["probe", "items", "vLLM s", "hf s", "vLLM / hf", "max abs diff per item"],
                [
                    [
                        r["probe"],
                        str(r["items"]),
                        f"{r['vllm_s']:.2f}",
                        f"{r['hf_s']:.2f}",
                        f"{r['ratio']:.2f}",
                        f"{r['max_diff']:.2g}",
                    ]
                    for r in report["probes"]
                ],
            )
        )
    b = report["bounds"]
    print()
    print(f"bounds: {b['prompts']} prompts, full rows for both sides in {b['rows_s']:.1f} s")
    print()
    rows = []
    for name in sets:
        for entry in b["by_k"]:
            for kind in thresholds:
                e = entry[kind]["sets"][name]
                rows.append(
                    [
                        name,
                        str(entry["k"]),
                        kind,
                        f"{e['exact']:.4f}",
                        f"{e['low']:.4f}",
                        f"{e['high']:.4f}",
                        f"{e['width']:.4f}",
                        f"{e['max_width']:.4f}",
                    ]
                )
    header = ["prompts", "k", "divergence", "mean exact", "mean low", "mean high", "mean width", "max width"]
    print(table(header, rows))
    print()
    rows = []
    for entry in b["by_k"]:
        for kind in thresholds:
            for t, s in entry[kind]["thresholds"].items():
                rows.append(
                    [
                        str(entry["k"]),
                        kind,
                        t,
                        f"{s['bounds_above']}/{s['exact_above']}",
                        f"{s['bounds_below']}/{s['exact_below']}",
                    ]
                )
    print(
        table(
            ["k", "divergence", "threshold", "above: interval / exact", "below: interval / exact"],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
