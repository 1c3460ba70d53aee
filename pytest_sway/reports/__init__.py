"""Reports: what a run's results become once measured (pure: no pytest, no models).

* ``rows``: one JSON-able row per probe run; the JSON report document and JUnit properties.
* ``summary``: the terminal table under pytest's ``sway`` section.
* ``html``: the self-contained HTML page.
* ``markdown``: the GitHub-flavoured Markdown summary.
* ``baseline``: saved per-item values and paired comparisons against them.
* ``outputs``: the files a run writes, checked before any test and written atomically.
"""
