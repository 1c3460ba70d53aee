"""Errors that speak to the user: what was wrong, where, and what to do."""


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
