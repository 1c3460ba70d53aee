"""The Hugging Face backend (transformers + peft), one module per concern; see ``backend``.

Importing this package loads numpy only: torch, transformers and peft load when a backend is built.
"""

from .backend import DEFAULT_MEMO_BYTES, HFBackend

__all__ = ["DEFAULT_MEMO_BYTES", "HFBackend"]
