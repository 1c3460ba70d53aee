"""The files a run writes (JSON report, HTML page, baseline): checked before any
test runs, written so that nothing the user had is lost.

Pure: no pytest. ``check_output_paths`` runs while settings are validated, so a
collision or a path that holds some other document is a usage error before a
model loads; ``write_output`` writes one file the way its path asks for.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..files import write_atomic, write_pieces

#: Output options, in the order they are written: (setting, what it is).
OUTPUTS = (
    ("json", "JSON report"),
    ("html", "HTML report"),
    ("markdown", "Markdown summary"),
    ("save_baseline", "baseline"),
)

JSON_KIND = "pytest-sway report"
BASELINE_KIND = "pytest-sway baseline"
_HTML_TITLE = "<title>pytest-sway report</title>"
#: The first line of a Markdown summary (invisible when rendered): what makes a file ours to replace.
MARKDOWN_MARK = "<!-- pytest-sway summary -->"


@dataclass(frozen=True)
class StepSummary:
    """An output appended to, not replaced: GitHub Actions' ``$GITHUB_STEP_SUMMARY`` file,
    which holds what earlier steps wrote (``--sway-markdown=github``)."""

    path: Path

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def resolved(path: str | os.PathLike) -> str:
    """The file a path ends at, symlinks followed: what 'the same file' means."""
    return os.path.realpath(path)


#: Files pytest or a plugin of its writes, by the option that names them: (dest, flag, what it is).
#: A plugin that is not installed has no such option, and is skipped.
PYTEST_OUTPUTS = (
    ("xmlpath", "--junitxml", "pytest's JUnit XML"),
    ("report_log", "--report-log", "pytest-reportlog's log"),
    ("htmlpath", "--html", "pytest-html's report"),
)


def pytest_outputs(option, cwd: str | os.PathLike) -> list[tuple[str, str, str]]:
    """The files pytest and its plugins will write in this run, from its parsed ``option``
    namespace: (flag, path as given, what it is). Relative paths start at ``cwd``, and
    ``$VARS`` and ``~`` expand, the way ``--junitxml`` reads them."""
    found = []
    for dest, flag, kind in PYTEST_OUTPUTS:
        value = getattr(option, dest, None)
        if isinstance(value, (str, os.PathLike)) and os.fspath(value):
            path = os.path.expanduser(os.path.expandvars(os.fspath(value)))
            found.append((flag, os.path.join(cwd, path), kind))
    return found


def check_output_paths(settings, others: Iterable[tuple[str, str, str]] = ()) -> None:
    """Raise ValueError when two outputs (or an output and ``--sway-baseline``, or an output and
    one of ``others``, the files pytest writes: (flag, path, kind)) are the same file, or an
    output path holds a document of another kind."""
    seen: dict[str, tuple[str, str]] = {}  # file -> (the option that names it, what it holds)

    def claim(target: str, here: str, kind: str) -> None:
        if target == os.devnull:
            return  # swallows everything: nothing is lost
        if target in seen:
            there, theirs = seen[target]
            if theirs == _COMPARED_WITH:
                clash = f"{_the(kind)} would overwrite {theirs}"
            else:
                clash = f"{_the(kind)} and {_the(theirs)} would overwrite each other"
            raise ValueError(f"{here} and {there} are the same file ({target}): {clash}; give each its own path")
        seen[target] = (here, kind)

    if settings.baseline is not None:
        seen[resolved(settings.baseline)] = (settings.option_name("baseline"), _COMPARED_WITH)
    for flag, path, kind in others:
        target = resolved(path)
        if target in seen and seen[target][1] != _COMPARED_WITH:
            continue  # two of pytest's own outputs: not ours to judge
        claim(target, flag, kind)
    for name, kind in OUTPUTS:
        path = getattr(settings, name)
        if path is None:
            continue
        here = settings.option_name(name)
        if isinstance(path, StepSummary):
            here += "=github ($GITHUB_STEP_SUMMARY)"
        target = resolved(path)
        claim(target, here, kind)
        if isinstance(path, StepSummary):
            continue  # appended to: what earlier steps wrote stays
        other = foreign_document(target, kind)
        if other:
            raise ValueError(
                f"{here}={path} holds {other}; pytest-sway will not overwrite it: choose another path, or delete "
                "the file if it is yours to lose"
            )


_COMPARED_WITH = "the baseline this run compares with"


def _the(kind: str) -> str:
    """'the JSON report', but "pytest's JUnit XML" as it is."""
    return kind if "'" in kind else f"the {kind}"


def foreign_document(path: str, kind: str) -> str | None:
    """What an existing regular, non-empty file at ``path`` is, if it is not a ``kind``; else None."""
    try:
        info = os.stat(path)
    except OSError:
        return None  # absent (or unreadable: the write will say)
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return None  # /dev/null, a FIFO: written into; an empty file holds nothing to lose
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    if kind == "HTML report":
        return None if _HTML_TITLE in text[:4096] else "a file that is not a pytest-sway HTML report"
    if kind == "Markdown summary":
        return None if text.startswith(MARKDOWN_MARK) else "a file that is not a pytest-sway Markdown summary"
    try:
        doc = json.loads(text)
    except ValueError:
        return "a file that is not JSON"
    if not isinstance(doc, dict):
        return "JSON that is not a pytest-sway document"
    if kind == "baseline":
        if doc.get("kind") == BASELINE_KIND:
            return None
        return "a pytest-sway JSON report" if _is_report(doc) else "JSON that is not a pytest-sway baseline"
    if _is_report(doc):
        return None
    return "a pytest-sway baseline" if doc.get("kind") == BASELINE_KIND else "JSON that is not a pytest-sway report"


def _is_report(doc: dict) -> bool:
    # Reports before the "kind" field: schema 1 with results and backend.
    return doc.get("kind") == JSON_KIND or (doc.get("kind") is None and "results" in doc and "backend" in doc)


def write_output(path: str | os.PathLike, text: str | Iterable[str]) -> None:
    """Write ``text`` (or text in pieces) to ``path`` without losing what is there if anything fails.

    A regular file is replaced atomically and keeps its permissions; a symlink
    is followed and its target replaced (the link stays a link); anything else
    that exists (``/dev/null``, a FIFO, a character device) is written into,
    not replaced.
    """
    _put(path, text, append=False)


def append_output(path: str | os.PathLike, text: str | Iterable[str]) -> None:
    """Append ``text`` (or text in pieces) to ``path`` without ever leaving a half-written file.

    A regular file is read, and its content plus ``text`` (after a blank line)
    written to a temporary file renamed over it, keeping its permissions: a
    failure leaves what earlier writers put there intact. A symlink is followed;
    a file that does not exist is created; anything else (``/dev/null``, a FIFO)
    is appended to.
    """
    _put(path, text, append=True)


def _put(path: str | os.PathLike, text: str | Iterable[str], *, append: bool) -> None:
    """What ``write_output`` and ``append_output`` share: the file a path ends at (symlinks
    followed), created if missing, written into if it is not a regular file, else replaced
    atomically with its permissions kept (after what it held, when appending)."""
    target = Path(resolved(path))
    try:
        info = os.stat(target)
    except FileNotFoundError:
        write_atomic(target, text)
        return
    if not stat.S_ISREG(info.st_mode):
        with open(target, "ab" if append else "wb") as fh:
            write_pieces(fh, text)
        return
    data: str | bytes | Iterable[str] = text
    if append:
        existing = target.read_bytes()  # bytes: whatever encoding earlier steps used stays as it was
        if existing and not existing.endswith(b"\n"):
            existing += b"\n"
        if existing:
            existing += b"\n"  # a blank line: Markdown starts a new block
        data = existing + "".join(text).encode("utf-8")
    write_atomic(target, data, mode=stat.S_IMODE(info.st_mode))
