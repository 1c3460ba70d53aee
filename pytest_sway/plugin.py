"""pytest-sway's pytest entry point: options, marker, fixtures and hooks.

Everything that computes lives in plain modules (settings, request, runner,
report, baseline, probes, backends); this module only connects them to pytest.
It imports nothing heavy at load time: numpy and the probes load when the
first sway marker or fixture needs them, torch only when the hf backend is built.
"""

from __future__ import annotations

import pytest

from .errors import SwayError
from .settings import OPTIONS, Settings, SettingsError

MARKER_LINE = (
    "sway_probe(kind, *, above=None, below=None, confidence=None, resamples=None, method=None, "
    "max_regression=None, **params): run probe `kind` (e.g. 'delta_kl') comparing the base and fine-tuned "
    "models before the test body; the test fails unless the probe's confidence interval lies at or above "
    "`above` and at or below `below`. The result is the `sway_result` fixture."
)

SETTINGS = pytest.StashKey["Settings"]()
REGISTRIES = pytest.StashKey[dict]()  # config: hook implementations -> ProbeRegistry
BACKEND_INFO = pytest.StashKey[dict]()  # config: the built backend's describe()
PROVENANCE = pytest.StashKey[dict]()  # config: the built backend's provenance, when a report needs it
BASELINE = pytest.StashKey[dict]()  # config: the --sway-baseline document
FAMILY = pytest.StashKey[int]()  # config: gated sway tests selected (m for the correction)
REQUEST = pytest.StashKey["object"]()  # item: its validated ProbeRequest
MARKER_RESULT = pytest.StashKey["object"]()  # item: the marker's ProbeResult
MEASURE_ERROR = pytest.StashKey[str]()  # item: why the marker's probe could not be measured
RESULTS = pytest.StashKey[list]()  # item: every ProbeResult the test produced
COMPARISONS = pytest.StashKey[dict]()  # item: result position -> its baseline comparison
INDEX = pytest.StashKey[int]()  # item: position in the collection


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


def pytest_configure(config):
    config.addinivalue_line("markers", MARKER_LINE)
    cli = {opt.name: config.getoption(_dest(opt)) for opt in OPTIONS}
    ini = {opt.name: config.getini(opt.ini) for opt in OPTIONS}
    ini_dir = config.inipath.parent if config.inipath else config.rootpath
    try:
        settings = Settings.from_raw(cli, ini, cwd=config.invocation_params.dir, ini_dir=ini_dir)
    except SettingsError as exc:
        raise pytest.UsageError(f"pytest-sway: {exc}") from None
    config.stash[SETTINGS] = settings
    if settings.baseline is not None:
        from .baseline import load_baseline

        try:
            config.stash[BASELINE] = load_baseline(settings.baseline)
        except ValueError as exc:
            raise pytest.UsageError(f"pytest-sway: --sway-baseline: {exc}") from None
    if not hasattr(config, "workerinput"):  # the controller (or a plain run) reports
        from .reporter import SwayReporter

        config.pluginmanager.register(SwayReporter(config, settings), "sway-reporter")


def pytest_report_header(config):
    return config.stash[SETTINGS].header()


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
    cache = node.config.stash.setdefault(REGISTRIES, {})
    if key not in cache:
        from .probes.base import ProbeRegistry

        registry = ProbeRegistry()
        hook(registry=registry)
        cache[key] = registry
    return cache[key]


# -- collection: markers are validated here ----------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector, name, obj):
    made = yield
    for item in made if isinstance(made, list) else [made]:
        if not isinstance(item, pytest.Item):
            continue
        marker = item.get_closest_marker("sway_probe")
        if marker is None:
            continue
        from .request import parse_marker

        try:
            item.stash[REQUEST] = parse_marker(marker.args, marker.kwargs, _registry(item), base_dir=item.path.parent)
        except SwayError as exc:
            raise collector.CollectError(f"{item.nodeid}: invalid @pytest.mark.sway_probe: {exc}") from None
    return made


def pytest_collection_finish(session):
    family = 0
    for index, item in enumerate(session.items):
        item.stash[INDEX] = index
        request = item.stash.get(REQUEST, None)
        gated_marker = request is not None and request.gate.active
        if gated_marker or "sway" in getattr(item, "fixturenames", ()):
            family += 1
    # Every xdist worker collects the same items, so every worker gets the same m.
    session.config.stash[FAMILY] = family


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sway_backend(pytestconfig):
    """The session's backend (dummy, hf, or your factory's), built once, on first use."""
    settings = pytestconfig.stash[SETTINGS]
    try:
        backend = pytestconfig.hook.pytest_sway_make_backend(settings=settings, config=pytestconfig)
        if backend is None:
            raise SwayError("no pytest_sway_make_backend implementation returned a backend")
        describe = getattr(backend, "describe", None)
        pytestconfig.stash[BACKEND_INFO] = describe() if describe else {"name": type(backend).__name__}
        if settings.save_baseline or settings.baseline or settings.html:
            provenance = getattr(backend, "provenance", None)
            pytestconfig.stash[PROVENANCE] = provenance() if provenance else pytestconfig.stash[BACKEND_INFO]
    except SwayError as exc:
        pytest.fail(f"pytest-sway: the {settings.backend_name} backend could not be built: {exc}", pytrace=False)
    yield backend
    close = getattr(backend, "close", None)
    if close is not None:
        close()


def _confidence(config, confidence: float) -> float:
    from .runner import bonferroni

    settings = config.stash[SETTINGS]
    return bonferroni(confidence, config.stash.get(FAMILY, 1)) if settings.correction == "bonferroni" else confidence


@pytest.fixture
def sway(request, sway_backend):
    """Run probes inside a test: ``sway.delta_kl(prompts).assert_above(0.05)``.

    Bound to the session backend and to this test's seed; every result shows
    in the sway summary and reports.
    """
    from .runner import Sway, derive_seed

    settings = request.config.stash[SETTINGS]
    results = request.node.stash.setdefault(RESULTS, [])
    return Sway(
        sway_backend,
        seed=derive_seed(settings.seed, request.node.nodeid),
        confidence=_confidence(request.config, settings.confidence),
        resamples=settings.resamples,
        method=settings.ci_method,
        registry=_registry(request.node),
        on_result=results.append,
        base_dir=request.node.path.parent,
    )


@pytest.fixture
def sway_result(request):
    """The ``ProbeResult`` of this test's ``@pytest.mark.sway_probe(...)``."""
    probe_request = request.node.stash.get(REQUEST, None)
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
        request.node.stash[MEASURE_ERROR] = f"{probe_request.kind}: {exc}"
        return None
    request.node.stash[MARKER_RESULT] = result
    return result


@pytest.fixture(autouse=True)
def _sway_probe_marker(request):
    """Runs a marked test's probe before its body (other tests: nothing)."""
    if REQUEST in request.node.stash:
        request.getfixturevalue("sway_result")


# -- running and reporting ------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if MEASURE_ERROR in item.stash:
        pytest.fail(item.stash[MEASURE_ERROR], pytrace=False)
    result = item.stash.get(MARKER_RESULT, None)
    if result is not None:
        probe_request = item.stash[REQUEST]
        verdict = result.check(probe_request.gate)
        if not verdict.ok:
            pytest.fail(verdict.message + result.failure_evidence(), pytrace=False)
        if BASELINE in item.config.stash:
            comparison = _compare(item, result, 1, probe_request.gate, probe_request.max_regression)
            if comparison["outcome"] not in ("passed", "reported"):
                pytest.fail(comparison["message"], pytrace=False)
    try:
        return (yield)
    except SwayError as exc:  # from a probe the body ran through the `sway` fixture
        pytest.fail(str(exc), pytrace=False)


def _compare(item, result, order: int, gate, max_regression):
    """Compare one result with its saved values; remembered for the test's row."""
    from .baseline import compare, direction_of, find_entry
    from .stats import Bootstrap

    config = item.config
    settings = config.stash[SETTINGS]
    baseline = config.stash[BASELINE]
    comparison = compare(
        result,
        find_entry(baseline, item.nodeid, result.label, order),
        provenance_now=config.stash.get(PROVENANCE, {}),
        provenance_then=baseline.get("provenance", {}),
        bootstrap=Bootstrap(confidence=result.confidence, resamples=result.resamples if result.resamples else None,
                            method=settings.ci_method, seed=result.seed),
        max_regression=max_regression if max_regression is not None else settings.max_regression,
        direction=direction_of(gate.above, gate.below) if gate is not None else None,
    )
    item.stash.setdefault(COMPARISONS, {})[order] = comparison
    return comparison


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    failed_setup = call.when == "setup" and report.failed
    if call.when != "call" and not failed_setup:
        return report
    if RESULTS not in item.stash and REQUEST not in item.stash:
        return report  # not a sway test
    from .report import junit_properties, rows_for_test

    results = item.stash.get(RESULTS, [])
    if BASELINE in item.config.stash:  # results the body ran: compared and reported, not gated
        done = item.stash.get(COMPARISONS, {})
        for order, result in enumerate(results, 1):
            if order not in done:
                _compare(item, result, order, None, None)
    config = item.config
    settings = config.stash[SETTINGS]
    unmeasured = report.failed and REQUEST in item.stash and MARKER_RESULT not in item.stash
    rows = rows_for_test(
        item.nodeid,
        results=results,
        request=item.stash.get(REQUEST, None),
        index=item.stash.get(INDEX, 0),
        error=_error_text(call.excinfo) if unmeasured else None,
        comparisons=item.stash.get(COMPARISONS, {}),
    )
    if rows:
        report.sway = {
            "backend": config.stash.get(BACKEND_INFO, None),
            "provenance": config.stash.get(PROVENANCE, None),
            "correction": {"method": settings.correction, "m": config.stash.get(FAMILY, 0)},
            "rows": rows,
        }
        item.user_properties.extend(junit_properties(rows))
    return report


def _error_text(excinfo) -> str:
    """One readable line or two for a probe that could not run."""
    exc = excinfo.value
    text = exc.msg if isinstance(exc, pytest.fail.Exception) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."
