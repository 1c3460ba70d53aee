"""Loading for the Hugging Face backend: models, tokenizers and adapters, checked so that what
loads is what was asked for (an adapter whose tensors did not load, a damaged safetensors file,
an adapter folder given as a model are errors that say so), and the device and dtype to use.

torch, transformers and peft are imported inside the functions, when a backend is built.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import HF_INSTALL_HINT, BackendError


@contextlib.contextmanager
def quiet_progress_bars():
    """transformers' loading bars off while the backend loads (the plugin says what it loads), then as they were."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


@dataclass
class Loaded:
    """What ``load_models`` loaded: the tokenizer, the models that answer, where they came from."""

    tokenizer: Any
    #: The base as loaded (its config holds the context length).
    base: Any
    #: The model that answers for the base: ``base`` itself, or the PeftModel around it.
    base_model: Any
    peft_model: Any
    finetuned_model: Any
    dtype: Any
    #: Role ("model", "adapter", "finetuned") -> the local folder or hub id it was loaded from.
    paths: dict


def load_models(torch, model: str, *, adapter, finetuned, device, dtype, device_map, placement) -> Loaded:
    """The base model, its tokenizer and the adapter or fine-tuned checkpoint, each checked."""
    from ..builtin_models import resolve_model

    model_path = resolve_model(model)
    paths = {"model": model_path}
    _locate(model_path, "model", "model")
    if adapter is not None:
        _locate(adapter, "adapter", "adapter")
    else:
        _locate(resolve_model(finetuned), "model", "fine-tuned model")
    _check_model_folder(model_path)
    tokenizer = _load_tokenizer(model_path, model)
    device = _pick_device(torch, device, device_map)
    dtype = _pick_dtype(torch, dtype, device)
    base = _load_model(model_path, model, dtype=dtype, device=device, device_map=device_map, placement=placement)
    dtype = base.dtype  # what "auto" resolved to
    peft_model = finetuned_model = None
    if adapter is not None:
        paths["adapter"] = adapter
        peft_model = _attach_adapter(base, adapter, model)
    else:
        ft_path = resolve_model(finetuned)
        paths["finetuned"] = ft_path
        finetuned_model = _load_model(
            ft_path, finetuned, dtype=dtype, device=device, device_map=device_map, placement=placement
        )
        _check_same_vocabulary(base, finetuned_model, model, finetuned)
    return Loaded(tokenizer, base, peft_model or base, peft_model, finetuned_model, dtype, paths)


def _locate(value: str, kind: str, role: str) -> None:
    """A ``value`` that names no local folder must be an id the Hugging Face cache or hub holds:
    else an error saying the folder is missing (never a model that does not fit, or a hub error)."""
    if Path(value).is_dir():
        return
    from ..locate import NotFound, locate_on_hub

    try:
        locate_on_hub(value, Path(value).absolute(), kind=kind)
    except NotFound as exc:
        raise BackendError(f"could not load {role} {value!r}: {exc}") from None


def _import_frameworks():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BackendError(
            f"the hf backend needs torch and transformers ({exc}); install them with " + HF_INSTALL_HINT
        ) from None
    return torch, transformers


def _load_tokenizer(path: str, name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # a missing, broken or foreign tokenizer raises many kinds
        raise BackendError(
            f"could not load the tokenizer of model {name!r}: {_first_line(exc)}{_offline_hint(exc)}"
        ) from None


def _load_model(path: str, name: str, *, dtype, device, device_map, placement=None):
    from transformers import AutoModelForCausalLM

    _check_model_folder(path)
    local = Path(path)
    if local.is_dir():
        check_safetensors(local, what=f"model {name!r}")
    kwargs = {"dtype": dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
        kwargs.update(placement or {})
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not load model {name!r}: {_first_line(exc)}{_offline_hint(exc)}") from None
    except Exception as exc:  # e.g. safetensors' own error for a file damaged past its header
        raise BackendError(f"could not load model {name!r}: {type(exc).__name__}: {_first_line(exc)}") from None
    if device_map is None:
        model.to(device)
    model.eval()
    return model


def _check_model_folder(path: str) -> None:
    """A local model folder must hold a model (config.json), not an adapter."""
    local = Path(path)
    if local.is_dir() and (local / "adapter_config.json").is_file() and not (local / "config.json").is_file():
        raise BackendError(
            f"{path} is a PEFT adapter, not a model: pass it as --sway-adapter, and give the model it was trained "
            f"from ({_adapter_base(path) or '?'!r}) as --sway-model"
        )
    if local.is_dir() and not (local / "config.json").is_file():
        raise BackendError(
            f"{path} is not a model folder: it has no config.json. Give the folder that save_pretrained wrote, "
            "a Hugging Face model id, or the built-in smollm2-135m"
        )


def _attach_adapter(base, adapter: str, model_name: str):
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise BackendError(f"--sway-adapter needs peft ({exc}); {HF_INSTALL_HINT}") from None
    local = Path(adapter)
    if local.is_dir():
        if not any((local / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
            raise BackendError(
                f"adapter folder {adapter} has no adapter weights (adapter_model.safetensors or adapter_model.bin): "
                "the save was interrupted or the weights were not copied; save the adapter again"
            )
        check_safetensors(local, what=f"adapter {adapter!r}")
    on_disk = [name for name, where in (getattr(base, "hf_device_map", None) or {}).items() if where == "disk"]
    if on_disk:
        # peft would fail with "Cannot copy out of meta tensor", which reads like a wrong base model.
        raise BackendError(
            f"adapter {adapter!r} on base model {model_name!r} with layers offloaded to disk "
            f"({', '.join(on_disk[:3])}{', ...' if len(on_disk) > 3 else ''}): peft cannot attach an adapter to "
            "disk-offloaded layers; give the GPUs and CPU enough max_memory that no layer goes to disk, or merge "
            "the adapter into the base (PeftModel.merge_and_unload, then save_pretrained) and give the merged "
            "folder as --sway-finetuned"
        )
    try:
        with warnings.catch_warnings():
            # peft reads a transformers attribute deprecated in transformers 5 (a FutureWarning),
            # which would fail suites that run with -W error; and it only warns about adapter
            # keys it could not load, which _check_adapter_loaded turns into an error.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*missing adapter keys.*")
            model = PeftModel.from_pretrained(base, adapter)
    except (ValueError, RuntimeError, KeyError) as exc:
        trained = _adapter_base(adapter)
        raise BackendError(
            f"adapter {adapter!r} does not fit base model {model_name!r}: {_first_line(exc)} "
            + (
                f"(the adapter was trained for {trained!r}; give that model as --sway-model)"
                if trained
                else "(its adapter_config.json names no base model; give the one it was trained from as --sway-model)"
            )
        ) from None
    except OSError as exc:
        raise BackendError(f"could not load adapter {adapter!r}: {_first_line(exc)}{_offline_hint(exc)}") from None
    except Exception as exc:  # e.g. safetensors' own error for a file damaged past its header
        raise BackendError(f"could not load adapter {adapter!r}: {type(exc).__name__}: {_first_line(exc)}") from None
    _check_adapter_loaded(model, adapter, model_name)
    model.eval()
    return model


def _check_adapter_loaded(model, adapter: str, model_name: str) -> None:
    """Every tensor the adapter holds must have been loaded into the model, and every
    adapter weight the model made must have come from the adapter.

    peft only warns when an adapter's tensor names match no module of the base (a
    renamed or foreign checkpoint): the adapter then keeps its fresh initialisation,
    a no-op, and every divergence is exactly 0. A saved adapter whose weights are
    legitimately zero loads all its tensors and passes.
    """
    from peft.utils import get_peft_model_state_dict, load_peft_weights

    try:
        saved = load_peft_weights(adapter, device="cpu")
    except Exception as exc:
        raise BackendError(f"could not read the weights of adapter {adapter!r}: {_first_line(exc)}") from None
    # The adapter weights the model holds (without peft's check of the base's vocabulary, which looks
    # the base up by name); a saved embedding or output layer loads into the model's own weights.
    loaded = set(get_peft_model_state_dict(model, save_embedding_layers=False))
    own = set(model.state_dict())
    unloaded = sorted(key for key in saved if key not in loaded and key not in own)
    missing = sorted(loaded - set(saved))
    if not unloaded and not missing:
        return
    parts = []
    if unloaded:
        parts.append(
            f"{len(unloaded)} of its {len(saved)} tensors match no module of {model_name!r} ({_names(unloaded)})"
        )
    if missing:
        parts.append(f"{len(missing)} adapter weights the model expects are not in it ({_names(missing)})")
    raise BackendError(
        f"adapter {adapter!r} did not load: {'; '.join(parts)}. The adapter would be a no-op and every "
        f"difference exactly 0. Was it trained on {_adapter_base(adapter) or '?'!r} with other module names, or saved "
        "by another tool? Give the model it was trained from, or save it again with PEFT's save_pretrained"
    )


def _names(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", and {len(keys) - limit} more" if len(keys) > limit else "")


def check_safetensors(folder: Path, *, what: str) -> None:
    """Raise BackendError for a ``.safetensors`` file in ``folder`` that is truncated or
    whose header is damaged: a clear message instead of safetensors' own error."""
    import json
    import struct

    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        problem = None
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    problem = f"it is {size} bytes long, too short for a safetensors header"
                else:
                    (length,) = struct.unpack("<Q", head)
                    if 8 + length > size:
                        problem = f"its header claims {length} bytes but the file has {size}"
                    else:
                        header = json.loads(fh.read(length))
                        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
                        expected = 8 + length + max(ends, default=0)
                        if expected != size:
                            problem = f"it is {size} bytes long but its header describes {expected}"
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            problem = f"its header cannot be read ({type(exc).__name__}: {_first_line(exc)})"
        if problem:
            raise BackendError(
                f"{what}: {path} is truncated or corrupt: {problem}. Copy or save it again (an interrupted "
                "download or copy leaves such files)"
            )


def _adapter_base(adapter: str) -> str | None:
    """The base model the adapter's config names (a local folder's, or a hub id's cached copy), or None."""
    import json

    config: str | Path = Path(adapter) / "adapter_config.json"
    if not Path(adapter).is_dir():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(adapter, "adapter_config.json")
        if not isinstance(cached, str):
            return None
        config = cached
    try:
        name = json.loads(Path(config).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def _check_same_vocabulary(base, finetuned, base_name, ft_name) -> None:
    a = base.get_output_embeddings().weight.shape[0]
    b = finetuned.get_output_embeddings().weight.shape[0]
    if a != b:
        raise BackendError(
            f"{ft_name!r} has a vocabulary of {b} tokens and {base_name!r} of {a}: next-token distributions "
            "over different vocabularies cannot be compared; was the checkpoint fine-tuned from this base?"
        )


def _pick_device(torch, device: str, device_map):
    if device_map is not None:
        return None  # accelerate places the layers
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"--sway-device={device}, but torch sees no CUDA device; use --sway-device=cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BackendError("--sway-device=mps, but MPS is not available here; use --sway-device=cpu or auto")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise BackendError(f"--sway-device={device}, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(device)


def _pick_dtype(torch, dtype: str, device):
    """``auto``: float32 on CPU (half precision there is slow and coarse), else the checkpoint's own."""
    if dtype == "auto":
        return torch.float32 if device is not None and device.type == "cpu" else "auto"
    return getattr(torch, dtype)


def _context_length(config, tokenizer) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10**7 else None


def _pad_id(tokenizer) -> int:
    """Any id works for pads (they are masked); prefer the tokenizer's own."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if value is not None:
            return int(value)
    return 0


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _offline_hint(exc) -> str:
    text = str(exc).lower()
    if "offline" in text or "connect" in text or "hub" in text or "resolve" in text:
        return (
            ". Models are loaded offline from a local folder or the Hugging Face cache; "
            "download it once where the hub is reachable, or give a local folder"
        )
    return ""
