"""Progress of long work on one terminal line: what is computed, how far it is, how long it has run (pure).

A :class:`ProgressLine` is fed by the backend (``update(what, done, total)`` after
each forward pass) and by the plugin (``say`` for one-off lines such as what
is being loaded). It writes through ``write(text, redraw)``: ``redraw`` asks to
replace the line written last, otherwise the text starts a line of its own. The
plugin's writer deals with pytest's capture and terminal, so this stays pure.
Work that ends within ``delay`` seconds shows nothing: fast suites keep pytest's
usual output.

On a terminal the line is redrawn in place at most every ``every`` seconds and
left behind, complete, when the work ends; in a log (not a tty) a new line is
written at most every ``every`` seconds, plus the final one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds a piece of work may run before its progress shows.
DEFAULT_DELAY = 3.0
#: Seconds between redraws on a terminal, and between lines in a log.
TTY_EVERY = 0.2
LOG_EVERY = 10.0


class ProgressLine:
    def __init__(
        self,
        write: Callable[[str, bool], None],
        *,
        tty: bool,
        delay: float = DEFAULT_DELAY,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._write = write
        self.tty = tty
        self.delay = delay
        self.every = every if every is not None else (TTY_EVERY if tty else LOG_EVERY)
        self._clock = clock
        self.context = ""
        self._since: float | None = None  # when the context began
        self._task: tuple[str, int] | None = None  # (what, total) of the work in progress
        self._started = 0.0
        self._shown_at: float | None = None  # when the line was last written, None if not yet
        self._width = 0  # characters of the tty line this task is redrawing; 0 when none
        self._last_done = 0

    def begin(self, context: str) -> None:
        """Work for ``context`` (e.g. a test's name) starts: its tasks show once it has run ``delay`` seconds."""
        self.context, self._since = context, self._clock()
        self._task, self._width = None, 0

    def update(self, what: str, done: int, total: int) -> None:
        """``done`` of ``total`` items of ``what`` are computed."""
        now = self._clock()
        if self._task != (what, total) or done < self._last_done:
            self._task, self._started, self._shown_at, self._width = (what, total), now, None, 0
        self._last_done = done
        finished = done >= total
        if self._shown_at is None:
            since = self._started if self._since is None else min(self._since, self._started)
            if now - since < self.delay:
                return  # quick so far: say nothing (a quick task never shows)
        elif not finished and now - self._shown_at < self.every:
            return
        self._show(f"{what} {done}/{total} ({now - self._started:.0f} s)", final=finished)
        self._shown_at = now
        if finished:
            self._task, self._width = None, 0

    def say(self, text: str) -> None:
        """One line that always shows (e.g. which model is being loaded)."""
        self._task, self._width = None, 0
        self._show(text, final=True)

    def _show(self, text: str, *, final: bool) -> None:
        line = f"sway: {self.context}: {text}" if self.context else f"sway: {text}"
        if self.tty and self._width:
            self._write(line + " " * max(0, self._width - len(line)), True)
        else:
            self._write(line, False)
        self._width = len(line) if self.tty and not final else 0
