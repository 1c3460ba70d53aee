"""Hooks that let a conftest.py or a plugin extend pytest-sway.

pytest-sway's own dummy/hf backends and built-in probes are provided through
these same hooks (see ``plugin.py``), so whatever they can do, yours can.
"""

import pytest


@pytest.hookspec(firstresult=True)
def pytest_sway_make_backend(settings, config):
    """Build the session's backend; the first non-None result wins.

    Called once per session (per xdist worker), lazily, when the first sway
    test needs the ``sway_backend`` fixture. ``settings`` is the validated
    :class:`pytest_sway.settings.Settings`; ``config`` is pytest's config.
    Return ``None`` to leave the choice to the next implementation (the
    built-in one comes last). Raise :class:`pytest_sway.SwayError` with a
    helpful message if the backend cannot be built: every sway test then
    fails with that message, and the build is not retried.

    Example ``conftest.py``: a gentler dummy fine-tune for the whole suite::

        from pytest_sway import DummyBackend

        def pytest_sway_make_backend(settings):
            if settings.backend_name == "dummy":
                return DummyBackend(effect=0.2)
    """


@pytest.hookspec
def pytest_sway_register_probes(registry):
    """Add probes to ``registry`` (a :class:`pytest_sway.ProbeRegistry`).

    Called once per registry, before the first ``sway_probe`` marker is
    validated. ``conftest.py`` files add probes for the tests under their
    folder, as conftest hooks do.

    Example ``conftest.py``: the Jensen-Shannon *distance* as a probe, built
    from a question every backend answers::

        from pytest_sway import Measurement, Param, Probe
        from pytest_sway.probes.base import text_list

        def js_distance(backend, params, bootstrap):
            js = backend.divergences(params["prompts"], divergence="js")
            return Measurement(js ** 0.5, items=params["prompts"], support=(0.0, 1.0))

        def pytest_sway_register_probes(registry):
            registry.add(Probe("js_distance", "Jensen-Shannon distance per prompt",
                               (Param("prompts", text_list),), js_distance))

    and a test using it::

        @pytest.mark.sway_probe("js_distance", prompts=[f"prompt {i}" for i in range(16)], above=0.05)
        def test_moves(): ...
    """
