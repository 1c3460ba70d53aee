"""Errors that speak to the user: what was wrong, where, and what to do; and the checks they follow."""

import numbers
from typing import TypeGuard

#: How to install what the hf backend needs, for the messages that find it missing.
HF_INSTALL_HINT = "pip install 'pytest-sway[hf]' (on a CPU-only machine, pip install torch==2.13.0 first)"


def is_number(value: object) -> TypeGuard[float]:
    """A real number (numpy's included) and not a bool, though Python counts ``True`` as 1."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_whole(value: object) -> TypeGuard[int]:
    """An integer (numpy's included) and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters with ``...``: how messages quote a user's value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SwayError(Exception):
    """A problem the user can fix; its message says how. Shown without a traceback."""


class ProbeParamError(SwayError, ValueError):
    """A probe was asked for with an unknown kind or a bad parameter."""


class BackendError(SwayError):
    """A backend could not be built, or could not answer a question."""


class ProbeError(SwayError):
    """A probe failed, or returned values that cannot be measured (wrong count, NaN)."""
