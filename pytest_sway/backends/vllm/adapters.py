"""Adapter folders for vLLM: which adapters it can serve faithfully, and the folders of their variants.

vLLM serves a LoRA adapter per request from a folder holding ``adapter_config.json`` and
``adapter_model.safetensors``. Two things follow, both here, both without vLLM itself:

* ``check_adapter`` reads a folder's config and tensor names (not the weights) and refuses, up
  front and all at once, what vLLM would reject or, worse, serve with different numbers than
  peft computes: other PEFT methods, DoRA, LoRA on the output head or the embeddings, full module
  copies, trainable tokens, and ranks above the engine's ``max_lora_rank``.
* ``variant_folder`` writes, once per adapter content and variant, the folder of a scaled adapter
  (``lora_B`` times the scale) or of a null adapter (the hf backend's construction, bit for bit),
  since vLLM cannot change an adapter's weights or scaling between requests.

torch and safetensors load inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from ...errors import BackendError, is_number, is_whole, short_repr
from ...files import file_sha256

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"

#: The values vLLM accepts for ``max_lora_rank``.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)

#: Module names of input embeddings and output heads across architectures (Llama ``embed_tokens`` and
#: ``lm_head``, GPT-2 ``wte``, BLOOM ``word_embeddings``, GPT-NeoX ``embed_in``/``embed_out``, InternLM2 ``output``).
HEAD_AND_EMBEDDING_NAMES = frozenset(
    {"lm_head", "embed_tokens", "wte", "word_embeddings", "embed_in", "embed_out", "output"}
)

#: Where those modules sit in common architectures: a regex ``target_modules`` is tried on each
#: name bare and under each of these prefixes, as peft would try it on the model's module names.
_MODULE_PREFIXES = (
    "",
    "model.",
    "transformer.",
    "gpt_neox.",
    "model.decoder.",
    "language_model.",
    "language_model.model.",
    "model.language_model.",
)

#: A LoRA tensor's name as peft saves it: the module's name, then what the tensor is.
_LORA_KEY = re.compile(
    r"(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(?:\.weight)?"
)

#: Part of every variant folder's name: a change to how variants are built must change this.
_CONSTRUCTION = "pytest-sway vllm adapter variant v1"

#: A crashed builder's temporary folder older than this is removed by the next builder.
_STALE_SECONDS = 3600.0

_SHOWN = 4


def check_adapter(folder: str | os.PathLike, *, max_lora_rank: int) -> dict:
    """The parsed ``adapter_config.json`` of an adapter vLLM can serve as peft would.

    Raises ``BackendError`` listing every problem found, one paragraph each, each naming the
    folder, the modules at fault and the fix. Reads tensor names and shapes, never the weights.
    """
    folder = Path(folder)
    if not is_whole(max_lora_rank) or max_lora_rank < 1:
        raise BackendError(f"max_lora_rank must be a positive integer, got {short_repr(max_lora_rank)}")
    config = _read_config(folder)
    shapes = _tensor_shapes(folder)
    problems = []
    if shapes is None:
        problems.append(_missing_weights(folder))
        shapes = {}
    lora = _lora_tensors(shapes)
    checks = (
        _check_method(folder, config, lora),
        _check_head_and_embeddings(folder, config, lora),
        _check_full_copies(folder, config, shapes),
        _check_trainable_tokens(folder, config),
        _check_rank(folder, config, lora, shapes, max_lora_rank),
    )
    problems.extend(problem for found in checks for problem in found)
    if problems:
        raise BackendError("\n\n".join(problems))
    return config


def variant_folder(
    adapter_folder: str | os.PathLike,
    *,
    scale: float = 1.0,
    null_seed: int | None = None,
    root: str | os.PathLike,
) -> Path:
    """The folder vLLM should load to serve ``adapter_folder`` scaled by ``scale``, or its null adapter.

    At scale 1 without a seed that is the adapter folder itself. Otherwise it is a folder under
    ``root`` named from the sha256 of the adapter's files and the variant (``null-3``,
    ``scale-0.5``, both as ``null-3-scale-0.5``), built once: a complete one is returned as it is.
    It is built in a temporary folder beside it and renamed into place, so a reader never sees a
    partial one; of two concurrent builders, the one that loses the rename uses the winner's.

    It holds ``adapter_config.json`` copied unchanged and ``adapter_model.safetensors`` with:

    * for ``null_seed``, the hf backend's null adapter for that seed (``hf.null_adapter``): for each
      LoRA module in sorted module-name order, ``null_pair`` with one CPU generator seeded once
      and shared across modules, cast to the saved dtype. The module names sort as peft's do,
      since a saved tensor's name is peft's module name followed by ``.lora_A.weight``;
    * for ``scale``, every ``lora_B`` multiplied by ``scale`` in float32 and cast back. peft adds
      ``scaling * B @ (A @ x)`` to a LoRA layer's output, so this equals peft's
      ``rescale_adapter_scale(model, scale)`` (which multiplies ``scaling``) up to the rounding
      of ``scale * B`` to the saved dtype.

    Run ``check_adapter`` on the folder first: this function checks only what it must to build.
    """
    folder = Path(adapter_folder)
    if not is_number(scale) or not math.isfinite(scale):
        raise BackendError(f"an adapter's scale must be a finite number, got {short_repr(scale)}")
    if null_seed is not None and not is_whole(null_seed):
        raise BackendError(f"a null adapter's seed must be an integer, got {short_repr(null_seed)}")
    if scale == 1 and null_seed is None:
        return folder
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise BackendError(
            _missing_weights(folder)
            if (folder / CONFIG_FILE).is_file()
            else f"adapter folder {folder} has no {CONFIG_FILE}: give the folder that peft's save_pretrained wrote"
        )
    target = Path(root) / f"{_adapter_digest(folder)}-{_variant_name(float(scale), null_seed)}"
    if _complete(target):
        return target
    return _build(folder, target, scale=float(scale), null_seed=None if null_seed is None else int(null_seed))


def lora_modules(tensor_names) -> dict[str, tuple[str, str]]:
    """``{module: (lora_A name, lora_B name)}`` for the linear LoRA modules among saved tensor names,
    in sorted module-name order: the order in which the hf backend draws null adapters."""
    pairs: dict[str, dict[str, str]] = {}
    for name in tensor_names:
        match = _LORA_KEY.fullmatch(name)
        if match and match["kind"] in ("lora_A", "lora_B"):
            pairs.setdefault(match["module"], {})[match["kind"]] = name
    return {module: (pairs[module].get("lora_A", ""), pairs[module].get("lora_B", "")) for module in sorted(pairs)}


# --- checks ---------------------------------------------------------------------------------------


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise BackendError(
            f"adapter folder {folder} has no {CONFIG_FILE}: give the folder that peft's save_pretrained wrote"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BackendError(f"could not read {path}: {exc}; save the adapter again") from None
    if not isinstance(config, dict):
        raise BackendError(f"{path} is not a JSON object: save the adapter again")
    return config


def _tensor_shapes(folder: Path) -> dict[str, tuple[int, ...]] | None:
    """Each tensor's shape in the folder's safetensors file, from its header; None when there is none."""
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own errors for a damaged header
        raise BackendError(f"could not read {path}: {type(exc).__name__}: {exc}; save the adapter again") from None


def _missing_weights(folder: Path) -> str:
    if (folder / LEGACY_WEIGHTS_FILE).is_file():
        return (
            f"adapter {folder} has {LEGACY_WEIGHTS_FILE} but no {WEIGHTS_FILE}: vLLM loads {WEIGHTS_FILE}; "
            "save the adapter with safe_serialization=True (model.save_pretrained(folder, safe_serialization=True))"
        )
    return (
        f"adapter {folder} has no {WEIGHTS_FILE}: the save was interrupted or the weights were not copied; "
        "save the adapter with model.save_pretrained(folder, safe_serialization=True)"
    )


def _lora_tensors(shapes: dict[str, tuple[int, ...]]) -> list[tuple[str, str, tuple[int, ...]]]:
    """(module, kind, shape) for every LoRA tensor, kind being ``lora_A``, ``lora_embedding_B``..."""
    found = []
    for name, shape in shapes.items():
        match = _LORA_KEY.fullmatch(name)
        if match:
            found.append((match["module"], match["kind"], shape))
    return found


def _check_method(folder: Path, config: dict, lora) -> list[str]:
    problems = []
    peft_type = config.get("peft_type")
    if str(peft_type).upper() != "LORA":
        problems.append(
            f"adapter {folder} has peft_type {short_repr(peft_type)} in {CONFIG_FILE}, and vLLM serves LoRA "
            "adapters only: gate it with the hf backend, or train a LoRA adapter (peft_type LORA) to gate it "
            "with the vllm backend"
        )
    if config.get("use_dora"):
        modules = sorted({module for module, kind, _ in lora if kind == "lora_magnitude_vector"})
        where = _listed(modules) if modules else f"target_modules {short_repr(config.get('target_modules'))}"
        problems.append(
            f"adapter {folder} is a DoRA adapter (use_dora is true in {CONFIG_FILE}; magnitude vectors on {where}), "
            "and vLLM serves plain LoRA: it would reject the adapter or leave out the magnitude vectors. Gate it "
            "with the hf backend, or retrain with use_dora=False"
        )
    return problems


def _check_head_and_embeddings(folder: Path, config: dict, lora) -> list[str]:
    found = []
    targets = config.get("target_modules")
    if isinstance(targets, str):
        hits = _regex_hits(targets)
        if hits:
            found.append(f'the target_modules regex "{targets}" matches {_listed(hits)}')
    elif isinstance(targets, (list, tuple)):
        hits = sorted({str(t) for t in targets if isinstance(t, str) and _is_head_or_embedding(t)})
        if hits:
            found.append(f"target_modules lists {_listed(hits)}")
    modules = sorted(
        {module for module, kind, _ in lora if kind.startswith("lora_embedding") or _is_head_or_embedding(module)}
    )
    if modules:
        found.append(f"the saved LoRA tensors include {_listed(modules)}")
    if not found:
        return []
    return [
        f"adapter {folder} puts a LoRA on the output head or the embeddings ({'; '.join(found)}). vLLM drops an "
        "lm_head LoRA's effect from prompt log-probabilities (vllm issue #51594), and serves embedding LoRAs "
        "differently across versions, so the numbers gated on would not be the adapter's: gate it with the hf "
        "backend, or retrain with target_modules limited to the transformer blocks' layers"
    ]


def _regex_hits(pattern: str) -> list[str]:
    """The head and embedding module names a regex ``target_modules`` would match, tried as peft does
    (``re.fullmatch`` on the full module name) on the names they have in common architectures."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return []  # peft itself fails on it, before any engine sees it
    return sorted(
        name
        for name in HEAD_AND_EMBEDDING_NAMES
        if any(compiled.fullmatch(prefix + name) for prefix in _MODULE_PREFIXES)
    )


def _is_head_or_embedding(module: str) -> bool:
    """A module named like an input embedding or output head, and not inside a numbered block (an
    ``output`` projection within ``layers.3`` is a block's layer, not the model's output head)."""
    parts = module.split(".")
    return parts[-1] in HEAD_AND_EMBEDDING_NAMES and not any(part.isdigit() for part in parts[:-1])


def _check_full_copies(folder: Path, config: dict, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    problems = []
    saved = config.get("modules_to_save")
    if saved:
        problems.append(
            f"adapter {folder} trains full copies of modules {_listed(_as_names(saved))} (modules_to_save in "
            f"{CONFIG_FILE}), and vLLM ignores them, so it would serve a different model than the one trained: "
            "gate it with the hf backend, or retrain with modules_to_save=None"
        )
    plain = sorted(name for name in shapes if "lora_" not in name)
    if plain:
        problems.append(
            f"adapter {folder} holds weights that are not LoRA matrices ({_listed(plain)} in {WEIGHTS_FILE}), "
            "which vLLM ignores (full copies of modules, or another PEFT method's weights): gate it with the hf "
            "backend, or retrain as LoRA with modules_to_save=None and no embedding or head layers in target_modules"
        )
    return problems


def _check_trainable_tokens(folder: Path, config: dict) -> list[str]:
    tokens = config.get("trainable_token_indices")
    if not tokens:
        return []
    return [
        f"adapter {folder} trains token embeddings (trainable_token_indices {short_repr(tokens)} in {CONFIG_FILE}), "
        "which vLLM does not load: gate it with the hf backend, or retrain without trainable_token_indices"
    ]


def _check_rank(folder: Path, config: dict, lora, shapes, max_lora_rank: int) -> list[str]:
    ranks = []  # (rank, where it is set)
    r = config.get("r")
    if is_whole(r):
        ranks.append((int(r), f"r = {r}"))
    pattern = config.get("rank_pattern")
    if isinstance(pattern, dict):
        ranks.extend((int(v), f"rank_pattern[{k!r}] = {v}") for k, v in pattern.items() if is_whole(v))
    for module, kind, shape in lora:
        if kind in ("lora_A", "lora_embedding_A") and shape:
            ranks.append((int(shape[0]), f"{module} has {shape[0]} {kind} rows"))
    over = sorted((item for item in ranks if item[0] > max_lora_rank), key=lambda item: (-item[0], item[1]))
    if not over:
        return []
    largest = over[0][0]
    accepted = ", ".join(str(n) for n in VLLM_LORA_RANKS[:-1]) + f" or {VLLM_LORA_RANKS[-1]}"
    head = f"adapter {folder} has LoRA rank {largest}, above max_lora_rank={max_lora_rank} ({_listed([w for _, w in over])})"
    fitting = [n for n in VLLM_LORA_RANKS if n >= largest]
    if not fitting:
        return [
            f"{head}, and vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]} (max_lora_rank is one of {accepted}): "
            f"gate it with the hf backend, or retrain with r at most {VLLM_LORA_RANKS[-1]}"
        ]
    return [
        f"{head}: raise max_lora_rank (--sway-vllm-args max_lora_rank={fitting[0]}) to at least {largest}; vLLM "
        f"accepts max_lora_rank {accepted}, and {fitting[0]} is the smallest of these that holds rank {largest}"
    ]


def _as_names(value) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple, set)) else [str(value)]


def _listed(names) -> str:
    names = list(names)
    shown = ", ".join(names[:_SHOWN])
    return shown if len(names) <= _SHOWN else f"{shown} and {len(names) - _SHOWN} more"


# --- variants -------------------------------------------------------------------------------------


def _variant_name(scale: float, null_seed: int | None) -> str:
    parts = []
    if null_seed is not None:
        parts.append(f"null-{int(null_seed)}")
    if scale != 1:
        parts.append(f"scale-{scale!r}")
    return "-".join(parts)


def _adapter_digest(folder: Path) -> str:
    """sha256 of the construction's version and the adapter's two files, by content."""
    digest = hashlib.sha256(_CONSTRUCTION.encode())
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        digest.update(name.encode() + b"\0" + file_sha256(folder / name))
    return digest.hexdigest()[:32]


def _complete(target: Path) -> bool:
    """A variant folder only ever appears whole (renamed into place), so both files mean complete."""
    return (target / CONFIG_FILE).is_file() and (target / WEIGHTS_FILE).is_file()


def _build(folder: Path, target: Path, *, scale: float, null_seed: int | None) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        shutil.copyfile(folder / CONFIG_FILE, tmp / CONFIG_FILE)
        tensors, metadata = _load_weights(folder)
        if null_seed is not None:
            tensors = _null_tensors(folder, tensors, null_seed)
        if scale != 1:
            tensors = _scaled_tensors(tensors, scale)
        from safetensors.torch import save_file

        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0o700 would hide a shared cache from other users
        for attempt in range(2):
            try:
                os.replace(tmp, target)
                return target
            except OSError:
                if _complete(target):  # another builder won the race: its folder is the same
                    shutil.rmtree(tmp, ignore_errors=True)
                    return target
                if attempt:
                    raise
                shutil.rmtree(target, ignore_errors=True)  # a damaged folder under the final name
    except BackendError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BackendError(f"could not write the adapter folder {target} for vLLM: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def _remove_stale_builds(target: Path) -> None:
    """Remove temporary folders of ``target`` that a crashed builder left over an hour ago."""
    cutoff = time.time() - _STALE_SECONDS
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            if leftover.is_dir() and leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def _load_weights(folder: Path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata()
        return load_file(str(path)), metadata
    except Exception as exc:  # safetensors raises its own errors for a damaged file
        raise BackendError(f"could not read {path}: {type(exc).__name__}: {exc}; save the adapter again") from None


def _scaled_tensors(tensors: dict, scale: float) -> dict:
    out = {}
    for name, tensor in tensors.items():
        match = _LORA_KEY.fullmatch(name)
        if match and match["kind"] in ("lora_B", "lora_embedding_B"):
            out[name] = (tensor.float() * scale).to(tensor.dtype).contiguous()
        else:
            out[name] = tensor
    return out


def _null_tensors(folder: Path, tensors: dict, seed: int) -> dict:
    """The hf backend's null adapter for ``seed``, drawn in the same order with the same generator."""
    import torch

    from ..hf.null_adapter import null_pair

    refused = sorted(
        name for name in tensors if (match := _LORA_KEY.fullmatch(name)) and match["kind"] not in ("lora_A", "lora_B")
    )
    if refused:
        raise BackendError(
            f"null_contrast supports plain LoRA on linear layers; adapter {folder} has {_listed(refused)} "
            "(an embedding LoRA or DoRA): gate it with the hf backend, or retrain it as plain LoRA on linear layers"
        )
    modules = lora_modules(tensors)
    broken = [module for module, (a, b) in modules.items() if not a or not b]
    if broken:
        raise BackendError(
            f"adapter {folder} has LoRA modules without both lora_A and lora_B ({_listed(broken)}): save it again"
        )
    if not modules:
        raise BackendError(f"null_contrast needs a LoRA adapter with linear LoRA layers; adapter {folder} has none")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    out = dict(tensors)
    for a_name, b_name in modules.values():
        a, b = tensors[a_name], tensors[b_name]
        new_a, new_b = null_pair(a, b, generator)
        out[a_name] = new_a.to(a.dtype).contiguous()
        out[b_name] = new_b.to(b.dtype).contiguous()
    return out
