"""The statistics: intervals for the mean of per-item values, and the verdicts they give.

Pure (no pytest, no models); numpy and scipy load only with the modules that need them.

* ``bootstrap``: the bootstrap (studentized, BCa, percentile; cluster resampling), and
  ``Bootstrap.estimate``, which applies the rule of ``shapes``.
* ``shapes``: intervals for values a bootstrap cannot treat honestly (all equal, 0/1, piled on a
  level of a bounded range) and the rule that chooses the method.
* ``methods``: the interval methods' names, defaults and limits (no numpy).
* ``paired``: Tango's score interval for a change in paired 0/1 outcomes.
* ``gate``: an interval estimate in, a verdict (passed / failed / inconclusive) out.
* ``outcome``: the outcomes a verdict can have (no numpy).
* ``slices``: slices and groups of a probe's items, their intervals and verdicts.
* ``drivers``: the items behind a failed or inconclusive verdict.
"""
