"""What reaches ``vllm.LLM``: the command line's engine arguments, by name, through settings, the
backend and the engine, checked against a stand-in vllm package (no vLLM, no devices). A multi-node
run (pipeline parallel over Ray) cannot be run here; that its settings arrive intact can."""

import dataclasses
import importlib.util
import sys
import types

import pytest

from pytest_sway.errors import BackendError
from pytest_sway.settings import Settings

pytest.importorskip("transformers")


@dataclasses.dataclass
class _EngineArgs:  # the names the stand-in accepts, as vLLM's EngineArgs fields
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    max_lora_rank: int = 16
    max_logprobs: int = 20
    enable_lora: bool = False
    seed: int = 0
    enforce_eager: bool = False


@pytest.fixture
def stand_in(monkeypatch):
    """A vllm package whose LLM records its arguments, then fails as a cluster-less machine would."""
    seen = {}

    class LLM:
        def __init__(self, **kwargs):
            seen.update(kwargs)
            raise RuntimeError("Ray is not initialized: no cluster to place 16 GPUs on")

    modules = {
        "vllm": types.SimpleNamespace(LLM=LLM, __version__="stand-in"),
        "vllm.engine": types.SimpleNamespace(),
        "vllm.engine.arg_utils": types.SimpleNamespace(EngineArgs=_EngineArgs),
        "vllm.platforms": types.SimpleNamespace(current_platform=types.SimpleNamespace(is_cpu=lambda: False)),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else found(name, *a))
    return seen


@pytest.fixture
def tiny_adapter_folders(tiny):
    return tiny["llama"]


def _settings(tmp_path, model, adapter, raw):
    return Settings.from_raw(
        {"backend": "vllm", "model": model, "adapter": adapter, "vllm_args": raw}, {}, cwd=tmp_path, ini_dir=tmp_path
    )


def test_multi_node_settings_reach_the_engine_by_name(stand_in, tmp_path, tiny_adapter_folders):
    from pytest_sway.backends.vllm.backend import VLLMBackend

    model, adapter = tiny_adapter_folders
    raw = "tensor_parallel_size=8 pipeline_parallel_size=2 distributed_executor_backend=ray max_model_len=4096"
    settings = _settings(tmp_path, model, adapter, raw)
    with pytest.raises(BackendError) as failed:
        VLLMBackend.from_settings(settings)
    assert stand_in["model"] == model
    assert stand_in["tensor_parallel_size"] == 8 and stand_in["pipeline_parallel_size"] == 2
    assert stand_in["distributed_executor_backend"] == "ray" and stand_in["max_model_len"] == 4096
    # The backend's own: LoRA per request, no logprobs cap; not float32 off the CPU (the checkpoint's dtype).
    assert stand_in["enable_lora"] is True and stand_in["max_logprobs"] == -1 and "dtype" not in stand_in
    message = str(failed.value)
    assert f"could not start model {model}" in message and "pipeline_parallel_size=2" in message
    assert "Ray is not initialized" in message


def test_dtype_and_user_arguments_win_over_defaults(stand_in, tmp_path, tiny_adapter_folders):
    from pytest_sway.backends.vllm.backend import VLLMBackend

    model, adapter = tiny_adapter_folders
    settings = Settings.from_raw(
        {"backend": "vllm", "model": model, "adapter": adapter, "dtype": "bfloat16", "vllm_args": "max_logprobs=100"},
        {},
        cwd=tmp_path,
        ini_dir=tmp_path,
    )
    with pytest.raises(BackendError):
        VLLMBackend.from_settings(settings)
    assert stand_in["dtype"] == "bfloat16" and stand_in["max_logprobs"] == 100


def test_an_unknown_engine_argument_names_the_closest(stand_in, tmp_path, tiny_adapter_folders):
    from pytest_sway.backends.vllm.backend import VLLMBackend

    model, adapter = tiny_adapter_folders
    with pytest.raises(BackendError, match=r"tensor_paralel_size \(did you mean tensor_parallel_size[,?]"):
        VLLMBackend.from_settings(_settings(tmp_path, model, adapter, "tensor_paralel_size=2"))
    assert stand_in == {}  # refused before the engine was asked


def test_engine_failures_name_the_change_to_make():
    from pytest_sway.backends.vllm.engine import _startup_message

    head = _startup_message("m", {}, RuntimeError("Unsupported CPU attention configuration: head_size=16"))
    assert "hf backend" in head and "head" in head
    memory = _startup_message("m", {}, ValueError("Available memory on node 0 is less than desired"))
    assert "gpu_memory_utilization=0.3" in memory


def test_the_engine_stops_on_sigterm_and_hands_the_signal_back(stand_in, monkeypatch):
    """A cancelled CI job sends SIGTERM, which pytest does not handle: the engine's processes would
    outlive it. The engine takes SIGTERM while it runs (only where nothing else handles it) and
    gives it back on close."""
    import signal

    from pytest_sway.backends.vllm.engine import Engine

    stopped = []
    config = types.SimpleNamespace(get_vocab_size=lambda: 64, max_model_len=128)
    core = types.SimpleNamespace(shutdown=lambda: stopped.append(True))

    class LLM:
        def __init__(self, **kwargs):
            self.llm_engine = types.SimpleNamespace(model_config=config, engine_core=core)

    monkeypatch.setattr(sys.modules["vllm"], "LLM", LLM)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    engine = Engine("m", {"max_logprobs": -1})
    try:
        assert signal.getsignal(signal.SIGTERM) == engine._terminated
    finally:
        engine.close()
    assert stopped == [True] and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    # A handler someone else installed is left alone.
    monkeypatch.setattr(signal, "getsignal", lambda signum: print)
    kept = Engine("m", {"max_logprobs": -1})
    assert kept._previous_term is None
    kept.close()
