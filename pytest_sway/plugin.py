"""pytest-sway's pytest entry point: options, marker, fixtures and hooks.

Everything that computes lives in plain modules (settings, probe_request,
measure, gate, rows, baseline, probes, backends); this module only connects them to pytest.
It imports nothing heavy at load time: numpy and the probes load when the
first sway marker or fixture needs them, torch only when the hf backend is built.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest

from .errors import SwayError
from .progress import DEFAULT_DELAY
from .settings import OPTIONS, Settings, SettingsError
from .state import ItemState, RunState
from .stats.outcome import Outcome

MARKER_LINE = (
    "sway_probe(kind, *, above=None, below=None, confidence=None, resamples=None, method=None, "
    "max_regression=None, groups=None, **params): run probe `kind` (e.g. 'delta_kl') comparing the base and "
    "fine-tuned models before the test body; the test fails unless the probe's confidence interval lies at or "
    "above `above` and at or below `below`. Items given as {'slice name': [...]} are gated per slice too; "
    "groups=[...] (one label per item) resamples whole groups. The result is the `sway_result` fixture."
)

GATES_LINE = (
    "sway_gates(n): with --sway-correction=bonferroni, the number of gates (assert_above/assert_below calls) "
    "this test's body judges through the `sway` fixture; default 1. The correction counts them, and a test "
    "that judges more than it declares fails."
)

RUN = pytest.StashKey[RunState]()  # config: the run's settings, backend, baseline and m
ITEM = pytest.StashKey[ItemState]()  # item: its markers, results and comparisons


# -- options and settings ---------------------------------------------------------


def pytest_addhooks(pluginmanager):
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser):
    group = parser.getgroup("sway", "pytest-sway: model-diff assertions with confidence intervals")
    for opt in OPTIONS:
        text = opt.help + (f" (default: {opt.default})" if opt.default is not None else "")
        group.addoption(opt.flag, dest=_dest(opt), metavar=opt.metavar, default=None, help=f"{text}. ini: {opt.ini}")
        parser.addini(opt.ini, help=text, default=None)


def _dest(opt) -> str:
    return "sway_" + opt.name


@pytest.hookimpl(tryfirst=True)  # before pytest-reportlog opens (truncates) its log, which may be the baseline
def pytest_configure(config):
    from .reports.outputs import pytest_outputs

    config.addinivalue_line("markers", MARKER_LINE)
    config.addinivalue_line("markers", GATES_LINE)
    cli = {opt.name: config.getoption(_dest(opt)) for opt in OPTIONS}
    ini = {opt.name: config.getini(opt.ini) for opt in OPTIONS}
    ini_dir = config.inipath.parent if config.inipath else config.rootpath
    try:
        settings = Settings.from_raw(
            cli,
            ini,
            cwd=config.invocation_params.dir,
            ini_dir=ini_dir,
            pytest_outputs=tuple(pytest_outputs(config.option, config.invocation_params.dir)),
        )
    except SettingsError as exc:
        raise pytest.UsageError(f"pytest-sway: {exc}") from None
    from .workers import as_worker, check_workers

    if hasattr(config, "workerinput"):
        settings = as_worker(config.workerinput, settings)
    elif (refused := check_workers(config.option, settings)) is not None:
        raise pytest.UsageError(f"pytest-sway: {refused}")
    run = RunState(settings)
    if settings.baseline is not None:
        from .reports.baseline import load_baseline

        try:
            run.baseline = load_baseline(settings.baseline)
        except ValueError as exc:
            raise pytest.UsageError(f"pytest-sway: {settings.option_name('baseline')}: {exc}") from None
    config.stash[RUN] = run
    if not hasattr(config, "workerinput"):  # the controller (or a plain run) reports
        from .reporter import SwayReporter

        config.pluginmanager.register(SwayReporter(config, settings, run.forwards), _REPORTER)


def pytest_unconfigure(config):
    reporter = config.pluginmanager.get_plugin(_REPORTER)
    if reporter is not None:
        config.pluginmanager.unregister(reporter, _REPORTER)
    shared = config.stash.get(_SHARED, None)
    if shared is not None:
        shared.cleanup()


_SHARED = pytest.StashKey[Any]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist's controller, per worker: a run-scoped folder where workers share the base model's answers."""
    from .workers import SHARED_CACHE_KEY

    config = node.config
    if config.stash[RUN].settings.cache_dir is not None:
        return  # the user's cache already is shared
    if _SHARED not in config.stash:
        import tempfile

        config.stash[_SHARED] = tempfile.TemporaryDirectory(prefix="sway-run-")
    node.workerinput[SHARED_CACHE_KEY] = config.stash[_SHARED].name


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist's controller, per worker that finished: the forward passes it counted, for the report."""
    from .workers import collect_forwards

    collect_forwards(node.config.stash[RUN].forwards, getattr(node, "workeroutput", None))


@pytest.hookimpl(trylast=True)  # after pytest's own sessionfinish tore down the session's fixtures (the backend)
def pytest_sessionfinish(session):
    """An xdist worker sends the forward passes it counted to the controller."""
    config = session.config
    if hasattr(config, "workeroutput") and RUN in config.stash:
        from .workers import FORWARDS_KEY

        config.workeroutput[FORWARDS_KEY] = config.stash[RUN].forwards


_REPORTER = "sway-reporter"


def pytest_report_header(config):
    return config.stash[RUN].settings.header()


# -- the built-in backend and probes, through the same hooks third parties use ----


@pytest.hookimpl(trylast=True)
def pytest_sway_make_backend(settings):
    from .backends import make_backend

    return make_backend(settings)


def pytest_sway_register_probes(registry):
    from .probes import builtin_probes

    for probe in builtin_probes():
        registry.add(probe)


def _registry(node):
    """The probe registry seen from ``node``: built-ins plus the probes of the
    plugins and conftest.py files that apply to it."""
    hook = node.ihook.pytest_sway_register_probes
    key = tuple(id(impl.plugin) for impl in hook.get_hookimpls())
    cache = node.config.stash[RUN].registries
    if key not in cache:
        from .probes.registry import ProbeRegistry

        registry = ProbeRegistry()
        try:
            hook(registry=registry)
        except (ValueError, TypeError) as exc:  # a name taken twice, something that is not a Probe
            raise SwayError(f"a pytest_sway_register_probes hook failed: {exc}") from None
        cache[key] = registry
    return cache[key]


# -- collection: markers are validated here ----------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector, name, obj):
    made = yield
    for item in made if isinstance(made, list) else [made]:
        if not isinstance(item, pytest.Item):
            continue
        try:
            _parse_markers(item)
        except SwayError as exc:
            raise collector.CollectError(f"{item.nodeid}: {exc}") from None
    return made


def _parse_markers(item) -> None:
    """Validate ``item``'s sway markers into its state, or raise SwayError."""
    from .markers import declared_gates, sway_marker

    state = ItemState(uses_sway="sway" in getattr(item, "fixturenames", ()))
    marker = sway_marker(item.iter_markers())
    if marker is not None:
        from .measure.request import parse_marker

        try:
            state.request = parse_marker(marker.args, marker.kwargs, _registry(item), base_dir=item.path.parent)
        except SwayError as exc:
            raise SwayError(f"invalid @pytest.mark.sway_probe: {exc}") from None
    state.declared = declared_gates(item.iter_markers())
    item.stash[ITEM] = state


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect, so that they apply to the battery too
def pytest_collection_modifyitems(session, config, items):
    """--sway-suite: the built-in battery's tests join the collected items."""
    settings = config.stash[RUN].settings
    if settings.suite is None:
        return
    from .suites.collect import battery_items

    try:
        items.extend(battery_items(session, settings.suite, settings.suite_thresholds, _parse_markers))
    except (SwayError, pytest.Collector.CollectError) as exc:
        raise pytest.UsageError(f"pytest-sway: {settings.option_name('suite')}={settings.suite}: {exc}") from None


def pytest_collection_finish(session):
    from .markers import body_allowance, gates_of

    config = session.config
    run = config.stash[RUN]
    settings = run.settings
    family = 0
    for index, item in enumerate(session.items):
        if ITEM not in item.stash:
            # Items that pytest's Python collector did not make (unittest.TestCase methods,
            # markers added by other plugins after collection): their markers are checked
            # here, and a bad one fails the test in setup instead of being dropped.
            try:
                _parse_markers(item)
            except SwayError as exc:
                item.stash[ITEM] = ItemState(index=index, invalid=str(exc))
                continue
        state = item.stash[ITEM]
        state.index = index
        state.body_allowance = body_allowance(state.declared, uses_sway=state.uses_sway)
        family += gates_of(
            state.request,
            state.body_allowance,
            baseline=settings.baseline is not None,
            max_regression=settings.max_regression,
        )
    # Every xdist worker collects the same items, so every worker gets the same m.
    run.family = family
    if settings.correction == "bonferroni" and settings.resamples is not None:
        from .stats.methods import bonferroni, check_resamples

        try:
            check_resamples(settings.resamples, bonferroni(settings.confidence, family))
        except ValueError as exc:
            raise pytest.UsageError(
                f"pytest-sway: {settings.option_name('resamples')} with --sway-correction=bonferroni over "
                f"m={family} gates: {exc}"
            ) from None


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sway_backend(pytestconfig):
    """The session's backend (dummy, hf, or your factory's), built once, on first use."""
    run = pytestconfig.stash[RUN]
    settings = run.settings
    run.progress = _progress_line(pytestconfig)
    problem = None
    # The dummy backend builds in no time: saying so would only be noise.
    announce = run.progress is not None and settings.backend_name != "dummy"
    try:
        if announce:
            run.progress.say(f"loading {settings.loading()}")
        started = time.perf_counter()
        backend = pytestconfig.hook.pytest_sway_make_backend(settings=settings, config=pytestconfig)
        if backend is None:
            raise SwayError("no pytest_sway_make_backend implementation returned a backend")
        describe = getattr(backend, "describe", None)
        run.backend_info = describe() if describe else {"name": type(backend).__name__}
        if announce:
            from .reports.summary import describe_backend

            run.progress.say(f"ready in {time.perf_counter() - started:.1f} s: {describe_backend(run.backend_info)}")
        if run.progress is not None and hasattr(backend, "progress"):
            backend.progress = run.progress.update
        if settings.save_baseline or settings.baseline or settings.html:
            provenance = getattr(backend, "provenance", None)
            run.provenance = provenance() if provenance else run.backend_info
    except SwayError as exc:
        problem = str(exc)
    if problem is not None:  # failed outside the except block: one message, no chained traceback
        pytest.fail(f"pytest-sway: the {settings.backend_name} backend could not be built: {problem}", pytrace=False)
    yield backend
    from .workers import record_forwards

    record_forwards(run.forwards, backend, getattr(pytestconfig, "workerinput", None))
    close = getattr(backend, "close", None)
    if close is not None:
        close()


def _progress_line(config):
    """The run's progress line on pytest's terminal, or None (``--sway-progress=off``, an
    xdist worker — its output would cut into the controller's — or no terminal reporter)."""
    settings = config.stash[RUN].settings
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if settings.progress == "off" or hasattr(config, "workerinput") or reporter is None:
        return None
    from .progress import ProgressLine

    capture = config.pluginmanager.get_plugin("capturemanager")
    writer = config.get_terminal_writer()

    def write(text: str, redraw: bool) -> None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            if redraw:
                writer.write("\r" + text, flush=True)
            else:
                if writer.width_of_current_line:
                    writer.line()
                writer.write(text, flush=True)
        reporter.currentfspath = None  # pytest starts its next result on a line of its own

    return ProgressLine(
        write, tty=bool(reporter.isatty()), delay=0.0 if settings.progress == "always" else DEFAULT_DELAY
    )


def _confidence(config, confidence: float) -> float:
    from .stats.methods import bonferroni

    run = config.stash[RUN]
    return bonferroni(confidence, run.family) if run.settings.correction == "bonferroni" else confidence


def _state(item) -> ItemState:
    """``item``'s sway state (a test pytest-sway never saw gets an empty one)."""
    if ITEM not in item.stash:
        item.stash[ITEM] = ItemState()
    return item.stash[ITEM]


@pytest.fixture
def sway(request, sway_backend):
    """Run probes inside a test: ``sway.delta_kl(prompts).assert_above(0.05)``.

    Bound to the session backend and to this test's seed; every result shows
    in the sway summary and reports.
    """
    from .measure.run import derive_seed
    from .sway import Sway

    run = request.config.stash[RUN]
    settings = run.settings
    state = _state(request.node)
    if run.progress is not None:
        run.progress.begin(request.node.name)
    return Sway(
        sway_backend,
        seed=derive_seed(settings.seed, request.node.nodeid),
        confidence=_confidence(request.config, settings.confidence),
        resamples=settings.resamples,
        method=settings.ci_method,
        registry=_registry(request.node),
        on_result=state.results.append,
        base_dir=request.node.path.parent,
        drivers=settings.drivers,
    )


@pytest.fixture
def sway_result(request):
    """The ``ProbeResult`` of this test's ``@pytest.mark.sway_probe(...)``."""
    state = _state(request.node)
    probe_request = state.request
    if probe_request is None:
        pytest.fail(
            f"{request.node.nodeid} uses the `sway_result` fixture but has no @pytest.mark.sway_probe(...) "
            "marker: add the marker, or run a probe through the `sway` fixture (e.g. sway.delta_kl([...]))",
            pytrace=False,
        )
    runner = request.getfixturevalue("sway")
    confidence = probe_request.confidence
    try:
        result = runner.run(
            probe_request.kind,
            confidence=None if confidence is None else _confidence(request.config, confidence),
            resamples=probe_request.resamples,
            method=probe_request.method,
            **probe_request.params,
        )
    except SwayError as exc:
        # The model answered, but not usably (NaN logits, a prompt too long):
        # the test fails in its call phase, like a failed assertion.
        state.measure_error = f"{probe_request.kind}: {exc}"
        return None
    state.marker_result = result
    return result


@pytest.fixture(autouse=True)
def _sway_probe_marker(request):
    """Runs a marked test's probe before its body (other tests: nothing)."""
    state = request.node.stash.get(ITEM, None)
    if state is None:
        return
    if state.invalid is not None:
        pytest.fail(f"{request.node.nodeid}: {state.invalid}", pytrace=False)
    if state.request is not None:
        request.getfixturevalue("sway_result")


# -- running and reporting ------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    state = item.stash.get(ITEM, None)
    if state is not None and state.measure_error is not None:
        pytest.fail(state.measure_error, pytrace=False)
    result = state.marker_result if state is not None else None
    if result is not None:
        failures = []
        verdict = result.check(state.request.gate)
        if not verdict.ok:
            failures.append(result.failure_message(state.request.gate, verdict))
        run = item.config.stash[RUN]
        if run.baseline is not None:
            # Judged whether or not the probe's own gate passed: a result that fails its gate
            # can also have regressed, and the row and the message say both.
            regression = state.request.max_regression
            comparison = _compare(
                item,
                state,
                result,
                1,
                gate=state.request.gate,
                max_regression=regression if regression is not None else run.settings.max_regression,
            )
            if not Outcome(comparison["outcome"]).ok:
                from .reports.baseline import comparison_failure

                failures.append(comparison_failure(comparison, result.n))
        if failures:  # the probe's own gate first, then the regression
            pytest.fail("\n\n".join(failures), pytrace=False)
    problem = None
    try:
        outcome = yield
    except SwayError as exc:  # from a probe the body ran through the `sway` fixture
        problem = str(exc)
    if problem is not None:  # failed outside the except block: one message, no chained traceback
        pytest.fail(problem, pytrace=False)
    if state is not None:
        _check_declared_gates(item, state)
    return outcome


def _check_declared_gates(item, state: ItemState) -> None:
    """Under Bonferroni, a body that judged more gates than the correction counted fails."""
    run = item.config.stash[RUN]
    if run.settings.correction != "bonferroni" or not state.results:
        return
    from .markers import body_gates

    judged = body_gates(state.results, marker=state.marker_result is not None)
    if judged > state.body_allowance:
        pytest.fail(
            f"{item.nodeid} judged {judged} gates in its body (assert_above/assert_below), but the Bonferroni "
            f"correction counted {state.body_allowance} for it (m={run.family}), so the family-wise error rate would "
            f"not hold: add @pytest.mark.sway_gates({judged}) to the test",
            pytrace=False,
        )


def _compare(item, state: ItemState, result, order: int, *, gate=None, max_regression=None) -> dict:
    """Compare one result with its saved values; remembered for the test's row."""
    from .reports.baseline import compare_with_baseline

    run = item.config.stash[RUN]
    state.comparisons[order] = compare_with_baseline(
        run.baseline,
        item.nodeid,
        result,
        order,
        provenance_now=run.provenance or {},
        ci_method=run.settings.ci_method,
        gate=gate,
        max_regression=max_regression,
    )
    return state.comparisons[order]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    failed_setup = call.when == "setup" and report.failed
    if call.when != "call" and not failed_setup:
        return report
    state = item.stash.get(ITEM, None)
    if state is None or not (state.results or state.request is not None):
        return report  # not a sway test
    from .reports.rows import junit_properties, rows_for_test

    run = item.config.stash[RUN]
    if run.baseline is not None:  # results the body ran: compared and reported, not gated
        for order, result in enumerate(state.results, 1):
            if order not in state.comparisons:
                _compare(item, state, result, order)
    unmeasured = report.failed and state.request is not None and state.marker_result is None
    rows = rows_for_test(
        item.nodeid,
        results=state.results,
        request=state.request,
        index=state.index,
        error=_error_text(call.excinfo) if unmeasured else None,
        comparisons=state.comparisons,
    )
    state.reported()
    if rows:
        report.sway = {
            "backend": run.backend_info,
            "provenance": run.provenance,
            "correction": {"method": run.settings.correction, "m": run.family},
            "rows": rows,
        }
        item.user_properties.extend(junit_properties(rows))
    return report


def _error_text(excinfo) -> str:
    """One readable line or two for a probe that could not run."""
    exc = excinfo.value
    text = str(exc.msg) if isinstance(exc, pytest.fail.Exception) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."
