"""The controller's reporter: gathers result rows from test reports (its own,
or those xdist workers send) and writes the summary, JSON and JUnit data.

Registered by the plugin only where results are aggregated: a plain run or
the xdist controller, never a worker.
"""

from __future__ import annotations

import pytest

_WRITE_ON = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)


class SwayReporter:
    def __init__(self, config, settings):
        self.config = config
        self.settings = settings
        self.rows: list[dict] = []
        self.backend: dict | None = None
        self.notes: list[tuple[str, dict]] = []  # (line, markup) for the summary

    def pytest_runtest_logreport(self, report):
        data = getattr(report, "sway", None)
        if data:
            self.rows.extend(data["rows"])
            if self.backend is None and data.get("backend"):
                self.backend = data["backend"]

    def backend_info(self) -> dict:
        if self.backend is not None:
            return self.backend
        s = self.settings
        return {"name": s.backend_name, **({"model": s.model} if s.model else {}), **({"adapter": s.adapter} if s.adapter else {})}

    def pytest_sessionfinish(self, session, exitstatus):
        path = self.settings.json
        if path is None:
            return
        if exitstatus not in _WRITE_ON:
            self.notes.append((f"sway: run interrupted; {path} left as it was", {"yellow": True}))
            return
        from .report import dump_json, json_document, write_atomic

        doc = json_document(self.rows, backend=self.backend_info(), settings=self.settings.as_json())
        try:
            write_atomic(path, dump_json(doc))
        except OSError as exc:
            self.notes.append((f"sway: could not write {path} ({exc}); any previous file is intact", {"red": True}))
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return
        self.notes.append((f"sway: JSON report written to {path}", {}))

    def pytest_terminal_summary(self, terminalreporter):
        if self.rows:
            from .report import summary_lines

            terminalreporter.write_sep("=", "sway")
            for line in summary_lines(self.rows, footer=self.footer()):
                terminalreporter.write_line(line)
        for line, markup in self.notes:
            terminalreporter.write_line(line, **markup)

    def footer(self) -> str:
        from .report import describe_backend

        s = self.settings
        return (
            f"backend {describe_backend(self.backend_info())} · {s.ci_method} bootstrap, {s.resamples} resamples "
            f"· confidence {s.confidence:g} · seed {s.seed}"
        )
