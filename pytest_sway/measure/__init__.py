"""Measurement: a probe request checked, measured on a backend, and returned as a result.

* ``request``: ``@pytest.mark.sway_probe(...)`` arguments, parsed and validated.
* ``run``: ``run_probe`` and ``measure``: validate, measure, bootstrap, wrap.
* ``result``: ``ProbeResult``, what every probe run returns, and its assertions.
"""
