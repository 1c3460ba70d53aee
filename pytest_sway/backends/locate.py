"""Where a model, adapter or checkpoint named by the user is: a local folder, or a Hugging Face
id found in the local cache or on the hub.

A value such as ``adapters/v3`` reads as a folder and as a hub id alike. When no such folder
exists, the user almost always meant the folder (a path written the way a CI template writes it),
so the answer says that first, names the folder it looked in, then whether the hub was tried
(never under ``HF_HUB_OFFLINE=1``) and what it answered. Only an id the cache or the hub knows
passes; anything else is a usage error before any test runs, never a model that "does not fit".

huggingface_hub is imported inside the functions: the dummy backend never needs it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: The file that makes a repository one of each kind: what the cache and the hub are asked for.
MARKER_FILES = {"model": "config.json", "adapter": "adapter_config.json"}

#: What a Hugging Face id looks like: ``org/name``, or a bare ``name`` for a model.
_IDS = {"model": re.compile(r"[\w.-]+(/[\w.-]+)?"), "adapter": re.compile(r"[\w.-]+/[\w.-]+")}
_TRUE = ("1", "on", "yes", "true")


class NotFound(ValueError):
    """The value names no local folder and no Hugging Face id that could be found."""


def hub_offline() -> str | None:
    """The variable that says the hub must not be asked (``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE`` set), read now; None when it may be."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


def is_hub_id(raw: str, kind: str) -> bool:
    """Whether ``raw`` has the form of a Hugging Face id of a ``kind`` ("model" or "adapter")."""
    return bool(_IDS[kind].fullmatch(raw))


def check_id_form(raw: str, folder: Path | str, *, kind: str) -> None:
    """Raise NotFound unless ``raw`` (which names no local folder) has the form of a Hugging Face id."""
    if not is_hub_id(raw, kind):
        raise NotFound(
            f"no such folder: {folder}, and {raw!r} is not a Hugging Face id (org/name) either, so the hub was "
            "not tried"
        )


def locate_on_hub(raw: str, folder: Path | str, *, kind: str) -> str:
    """``raw`` (which names no local folder; ``folder`` is where it was looked for) as a Hugging
    Face id of a ``kind`` ("model" or "adapter") that the local cache or the hub holds; else
    raise NotFound saying where it looked, whether it asked the hub, and what the hub answered."""
    check_id_form(raw, folder, kind=kind)
    missing = f"no such folder: {folder}"
    marker = MARKER_FILES[kind]
    try:
        import huggingface_hub
    except ImportError:
        return raw  # nothing to ask with: the backend's own check says what to install
    cached = huggingface_hub.try_to_load_from_cache(raw, marker)
    if isinstance(cached, str):
        return raw
    offline = hub_offline()
    if offline:
        raise NotFound(
            f"{missing}; as a Hugging Face id, {raw!r} is not in the local cache, and the hub was not tried "
            f"(offline: {offline} is set). Give the folder that holds it (a relative path starts from where pytest "
            "runs, or from the ini file's folder for an ini value), or download it once where the hub is reachable"
        )
    answer = _ask_hub(huggingface_hub, raw, marker, kind)
    if answer is None:
        return raw
    raise NotFound(f"{missing}; then tried {raw!r} as a Hugging Face id: {answer}. Give the folder that holds it")


def _ask_hub(huggingface_hub, raw: str, marker: str, kind: str) -> str | None:
    """None when the hub has ``raw`` holding its ``marker`` file; else what it answered.

    One request, no retries (a download would retry an unreachable hub for half a minute)."""
    from huggingface_hub import errors

    try:
        info = huggingface_hub.model_info(raw, timeout=10)
    except errors.RepositoryNotFoundError:
        return "the hub answered that there is no such repository (or it is private and you are not logged in)"
    except Exception as exc:  # unreachable, a proxy, a server error: what it said
        return f"the hub could not be asked ({type(exc).__name__}: {_first_line(exc)})"
    files = [s.rfilename for s in info.siblings or ()]
    if files and marker not in files:
        return f"the hub has that repository, but it holds no {marker}: it is not a {kind}"
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
