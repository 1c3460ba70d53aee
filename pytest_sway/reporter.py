"""The controller's aggregator: gathers result rows from test reports (its own,
or those xdist workers send) and writes the summary, JSON, HTML and baseline.

Registered by the plugin only where results are aggregated: a plain run or
the xdist controller, never a worker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .stats.outcome import Outcome

_WRITE_ON = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)


class _Incomplete(Exception):
    """A document that would lose what the file holds now."""


class SwayReporter:
    def __init__(self, config, settings, forwards: dict | None = None):
        self.config = config
        self.settings = settings
        #: Forward passes counted per process (the run's, filled in as backends close and workers finish).
        self.forwards = forwards if forwards is not None else {}
        self.rows: list[dict] = []
        self.backend: dict | None = None
        self.provenance: dict | None = None
        self.correction: dict | None = None
        self.notes: list[tuple[str, dict]] = []  # (line, markup) for the summary
        #: What failed to collect, here or on any xdist worker (its reports reach this hook on the controller).
        self.uncollected: list[str] = []
        #: xdist's reports for tests whose worker crashed while running them (unless a plugin reruns them).
        self.crashes: list = []

    def pytest_collectreport(self, report):
        if report.failed and report.nodeid not in self.uncollected:
            self.uncollected.append(report.nodeid or "the session")

    def pytest_runtest_logreport(self, report):
        data = getattr(report, "sway", None)
        if not data:
            return
        self.rows.extend(data["rows"])
        self.backend = self.backend or data.get("backend")
        self.provenance = self.provenance or data.get("provenance")
        self.correction = self.correction or data.get("correction")

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem, report, sched):
        self.crashes.append(report)  # judged at the end: a plugin may mark it "rerun" in this same call

    def backend_info(self) -> dict:
        if self.backend is not None:
            return self.backend
        s = self.settings
        info = {"name": s.backend_name}
        info.update({k: getattr(s, k) for k in ("model", "adapter", "finetuned") if getattr(s, k)})
        return info

    # Last: a run stopped early (-x) tears its session fixtures down, closing the backend (whose
    # forward passes the report counts), in pytest's own sessionfinish.
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        from .reports.outputs import OUTPUTS

        outputs = [
            (name, getattr(self.settings, name), kind)
            for name, kind in OUTPUTS
            if getattr(self.settings, name) is not None
        ]
        if not outputs:
            return
        partial = self._partial(exitstatus)
        if partial:
            # The reports and the baseline would lose the tests that did not run: whatever the exit
            # status says (xdist ends a run with a worker's collection error as an ordinary failure).
            for _, path, kind in outputs:
                self.notes.append((f"sway: {partial}; {kind} {path} left as it was", {"yellow": True}))
            return
        if not self.rows:
            # --co, -k selecting nothing, a subset without sway tests: an empty document
            # would replace the last real one (and a later --sway-baseline would compare with nothing).
            for _, path, kind in outputs:
                self.notes.append(
                    (f"sway: no sway results in this run; {kind} {path} left as it was", {"yellow": True})
                )
            return
        from .reports.outputs import StepSummary, append_output, write_output
        from .reports.rows import json_document
        from .workers import forward_report

        forward_passes, forward_calls = forward_report(self.forwards)
        doc = json_document(
            self.rows,
            backend=self.backend_info(),
            settings=self.settings.as_json(),
            provenance=self.provenance,
            correction=self.correction,
            forward_passes=forward_passes,
            forward_calls=forward_calls,
        )
        for name, path, kind in outputs:
            try:
                text = self._render(name, doc)
            except _Incomplete as exc:
                self.notes.append((f"sway: {kind} {path} left as it was: {exc}", {"red": True}))
                self._fail(session)
                continue
            appending = isinstance(path, StepSummary)
            try:
                (append_output if appending else write_output)(path, text)
            except OSError as exc:
                self.notes.append((f"sway: could not write {path} ({exc}); any previous file is intact", {"red": True}))
                self._fail(session)
                continue
            if appending:
                self.notes.append((f"sway: {kind} appended to $GITHUB_STEP_SUMMARY ({path})", {}))
            else:
                self.notes.append((f"sway: {kind} written to {path}", {}))

    def _partial(self, exitstatus) -> str | None:
        """Why this run is not a whole run (a collection error, here or on a worker; an
        interruption), or None."""
        if self.uncollected:
            n = len(self.uncollected)
            shown = ", ".join(self.uncollected[:3]) + (f" and {n - 3} more" if n > 3 else "")
            return f"collection incomplete ({n} error{'s' if n > 1 else ''} during collection: {shown})"
        crashed = [r.nodeid for r in self.crashes if r.outcome != "rerun"]
        if crashed:
            shown = ", ".join(crashed[:3]) + (f" and {len(crashed) - 3} more" if len(crashed) > 3 else "")
            return f"an xdist worker crashed while running {shown}"
        if exitstatus not in _WRITE_ON:
            return "run interrupted"
        return None

    @staticmethod
    def _fail(session) -> None:
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _render(self, output: str, doc: dict) -> str | Iterator[str]:
        """The text of output ``output`` (a setting name from ``OUTPUTS``), whole or in pieces."""
        from .reports.rows import json_pieces

        if output == "json":
            return json_pieces(doc)
        if output == "html":
            from .reports.html import render_html

            return render_html(doc)
        if output == "markdown":
            from .reports.markdown import render_markdown

            return render_markdown(doc, footer=self.footer())
        from .reports.baseline import baseline_document

        errors = sorted({r["nodeid"] for r in self.rows if "values" not in r})
        if errors:
            shown = ", ".join(errors[:3]) + (f" and {len(errors) - 3} more" if len(errors) > 3 else "")
            raise _Incomplete(
                f"{len(errors)} sway test(s) measured nothing ({shown}); a baseline without them would be partial"
            )
        return json_pieces(
            baseline_document(
                self.rows, provenance=self.provenance or self.backend_info(), settings=self.settings.as_json()
            )
        )

    def pytest_terminal_summary(self, terminalreporter):
        if self.rows:
            from .reports.summary import summary_lines

            terminalreporter.write_sep("=", "sway")
            for line in summary_lines(self.rows, footer=self.footer()):
                terminalreporter.write_line(line)
        for line, markup in self.notes:
            terminalreporter.write_line(line, **markup)

    def footer(self) -> str:
        from .reports.summary import describe_backend, methods_text

        s = self.settings
        used = sorted({r["resamples"] for r in self.rows if r.get("resamples")})
        resamples = "-".join(str(x) for x in (used[0], used[-1])) if len(used) > 1 else str(used[0]) if used else "auto"
        parts = [
            f"backend {describe_backend(self.backend_info())}",
            methods_text(self.rows, f"{s.ci_method} bootstrap, {resamples} resamples"),
            f"confidence {s.confidence:g}",
        ]
        if self.correction and self.correction.get("method") == "bonferroni":
            m = self.correction["m"]
            from .stats.methods import bonferroni

            judged = sum(
                r.get("gates", 0) + (r.get("baseline", {}).get("outcome", Outcome.REPORTED) != Outcome.REPORTED)
                for r in self.rows
            )
            # Fewer judged than counted (a skipped test, a body that only reported): conservative, and said.
            counted = f"m={m} gates" if judged == m else f"m={m} gates ({judged} judged)"
            parts.append(f"bonferroni over {counted}: each CI at {bonferroni(s.confidence, m):.4g}")
        parts.append(f"seed {s.seed}")
        return " · ".join(parts)
