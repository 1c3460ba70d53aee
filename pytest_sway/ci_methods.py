"""Names and defaults of the bootstrap interval methods.

Kept apart from ``stats`` (which needs numpy) so that the plugin can validate
``--sway-ci-method`` without importing numpy in runs that have no sway tests.
"""

METHODS = ("studentized", "bca", "percentile")
#: Chosen from ``benchmarks/coverage.py`` (table in the README): on skewed
#: data the bootstrap-t keeps coverage near nominal from 8 items, where the
#: percentile and BCa intervals fall to 0.78-0.87.
DEFAULT_METHOD = "studentized"
#: With 9999 resamples the 2.5% and 97.5% points fall on exact ranks.
DEFAULT_RESAMPLES = 9999
