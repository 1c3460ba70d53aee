"""Bounded results: a backend that knows each item's divergence only to lie in an interval (top-k
log-probabilities) gets two intervals, and each gate side judges its conservative end."""

import json
import math

import numpy as np
import pytest
from conftest import check_report

from pytest_sway import DummyBackend, run_probe
from pytest_sway.backends.divergence import SUPPORT
from pytest_sway.backends.topk import DivergenceBounds, split_bounds
from pytest_sway.errors import BackendError, ProbeError
from pytest_sway.reports.html import render_html
from pytest_sway.reports.markdown import render_markdown
from pytest_sway.reports.rows import json_document, json_pieces, junit_properties, rows_for_test
from pytest_sway.reports.summary import methods_text, summary_lines
from pytest_sway.stats.bootstrap import bootstrap_ci
from pytest_sway.stats.gate import Gate

PROMPTS = [f"prompt {i}" for i in range(16)]
LOWS = np.linspace(0.05, 0.11, 16)
HIGHS = LOWS + np.linspace(0.15, 0.25, 16)
SEED = 3


class TopK(DummyBackend):
    """The dummy backend, answering divergences as top-k bounds: known lows and highs, per prompt."""

    def __init__(self, lows, highs, k=20):
        super().__init__()
        self.by_prompt = {p: (lo, hi) for p, lo, hi in zip(PROMPTS, lows, highs)}
        self.k = k

    def divergences(self, prompts, *, divergence, variant=None, chat=False):
        pairs = [self.by_prompt[p] for p in prompts]
        return DivergenceBounds(np.array([a for a, _ in pairs]), np.array([b for _, b in pairs]), self.k)


def _run(lows=LOWS, highs=HIGHS, divergence="js", prompts=PROMPTS, **kw):
    return run_probe("delta_kl", TopK(lows, highs), prompts=prompts, divergence=divergence, seed=SEED, **kw)


def _row(result, nodeid="t.py::test_bounded"):
    (row,) = rows_for_test(nodeid, results=[result], request=None, index=0, error=None)
    return row


# -- helpers and the measurement -----------------------------------------------------------


def test_split_bounds_gives_low_ends_and_the_bounds_or_exact_values_and_none():
    bounds = DivergenceBounds([0.1, 0.2], [0.3, math.inf], 5)
    values, got = split_bounds(bounds)
    assert values.dtype == np.float64 and values.tolist() == [0.1, 0.2] and got is bounds
    values, got = split_bounds([1, 2])
    assert values.dtype == np.float64 and values.tolist() == [1.0, 2.0] and got is None


def test_bounded_result_is_the_hull_of_two_independent_intervals():
    r = _run()
    support = SUPPORT["js"]
    of_low = bootstrap_ci(LOWS, seed=SEED, support=support)
    of_high = bootstrap_ci(HIGHS, seed=SEED, support=support)
    assert r.values.tolist() == LOWS.tolist() and r.estimate == pytest.approx(LOWS.mean())
    assert tuple(r.ci) == (of_low.low, of_high.high)
    assert tuple(r.bounds.ci_of_low) == tuple(of_low) and tuple(r.bounds.ci_of_high) == tuple(of_high)
    assert (r.bounds.k, r.bounds.mean_high) == (20, pytest.approx(HIGHS.mean()))
    assert r.bounds.high.tolist() == HIGHS.tolist()
    assert r.needed_by(r.method, r.values, r.seed) is None  # n-needed is not modelled for two ends
    assert "bounded from the top-20 log-probabilities" in r.describe()


def test_exact_results_have_no_bounds():
    r = run_probe("delta_kl", DummyBackend(), prompts=PROMPTS, seed=SEED)
    assert r.bounds is None
    assert _row(r)["bounds"] is None
    assert "bounded" not in r.describe()


def test_above_gate_judges_the_low_ends():
    r = _run()
    of_low = bootstrap_ci(LOWS, seed=SEED, support=SUPPORT["js"])
    r.assert_above(of_low.low - 1e-6)  # passes on the lows' interval alone
    # A threshold the highs clear easily but the lows do not: the gate judges the lows and fails.
    threshold = float(LOWS.max()) + 0.01
    assert bootstrap_ci(HIGHS, seed=SEED, support=SUPPORT["js"]).low > threshold
    with pytest.raises(AssertionError) as info:
        _run().assert_above(threshold)
    # The exact values may lie anywhere up to the highs: not passed, and not wholly below either.
    assert str(info.value).startswith(f"INCONCLUSIVE: delta_kl(js) 95% CI [{of_low.low:.4g}, ")


def test_below_gate_judges_the_high_ends():
    of_high = bootstrap_ci(HIGHS, seed=SEED, support=SUPPORT["js"])
    _run().assert_below(of_high.high + 1e-6)
    # The lows lie well below it, the highs do not: the gate judges the highs and does not pass.
    threshold = float(HIGHS.mean())
    assert bootstrap_ci(LOWS, seed=SEED, support=SUPPORT["js"]).high < threshold
    with pytest.raises(AssertionError) as info:
        _run().assert_below(threshold)
    message = str(info.value)
    assert message.startswith("INCONCLUSIVE") and f"[{of_high.high:.4g}" not in message
    assert f"{of_high.high:.4g}]" in message  # the CI high shown is the highs'


def test_kl_with_unbounded_highs_gates_above_and_refuses_below():
    r = _run(highs=np.full(16, math.inf), divergence="kl")
    of_low = bootstrap_ci(LOWS, seed=SEED, support=SUPPORT["kl"])
    assert tuple(r.ci) == (of_low.low, math.inf)
    assert tuple(r.bounds.ci_of_high) == (0.0, math.inf) and r.bounds.mean_high == math.inf
    r.assert_above(of_low.low - 1e-6)
    with pytest.raises(AssertionError) as info:
        r.assert_below(1.0)
    message = str(info.value)
    assert "upper end is unbounded" in message and "top-20 log-probabilities" in message
    assert "--sway-vllm-args max_logprobs=-1" in message
    # One unbounded item is enough to leave the high ends' interval open.
    highs = HIGHS.copy()
    highs[4] = math.inf
    assert _run(highs=highs, divergence="kl").ci.high == math.inf


def test_bad_bounds_are_refused_naming_the_item():
    highs = HIGHS.copy()
    highs[5] = LOWS[5] - 0.01
    with pytest.raises(ProbeError, match=r"item 5 \('prompt 5'\).*at or above its lower end"):
        _run(highs=highs)
    highs[5] = 0.9  # above ln 2, JS's support
    with pytest.raises(ProbeError, match=r"item 5 .*within the support"):
        _run(highs=highs)


def test_slices_get_the_hull_of_each_slice_intervals():
    sliced = {"a": PROMPTS[:8], "b": PROMPTS[8:]}
    r = _run(prompts=sliced)
    for name, idx in (("a", slice(0, 8)), ("b", slice(8, 16))):
        part = r.slices[name]
        lows = bootstrap_ci(LOWS[idx], seed=part.seed, support=SUPPORT["js"])
        highs = bootstrap_ci(HIGHS[idx], seed=part.seed, support=SUPPORT["js"])
        assert tuple(part.ci) == (lows.low, highs.high)
        assert part.estimate == pytest.approx(LOWS[idx].mean())
    # Slice b's highs are above its lows' interval: a below= gate between them fails slice b on its highs.
    threshold = float(bootstrap_ci(HIGHS[:8], seed=r.slices["a"].seed, support=SUPPORT["js"]).high) + 1e-6
    with pytest.raises(AssertionError, match="slice 'b'"):
        r.assert_below(threshold)


def test_drivers_are_low_ends_for_above_and_high_ends_for_below():
    r = _run()
    below = float(HIGHS.mean())
    scope = r.driver_scope(Gate(below=below))
    drivers = r.drivers(Gate(below=below), scope)
    expected = sorted(range(16), key=lambda i: -HIGHS[i])[:5]
    assert [d["item"] for d in drivers] == [PROMPTS[i] for i in expected]
    assert [d["value"] for d in drivers] == [HIGHS[i] for i in expected]
    above = float(LOWS.max()) + 0.01
    drivers = r.drivers(Gate(above=above))
    assert [d["value"] for d in drivers] == sorted(LOWS)[:5] and {d["side"] for d in drivers} == {"above"}
    # A two-sided gate: each side from its own ends.
    both = r.drivers(Gate(above=above, below=below))
    assert {d["side"] for d in both} == {"above", "below"}
    assert max(d["value"] for d in both if d["side"] == "below") == HIGHS.max()
    with pytest.raises(AssertionError) as info:
        r.assert_below(below)
    assert f"of 16 items lie above {below:g}" in str(info.value)
    n_above = int(np.count_nonzero(HIGHS - below > 0))
    assert f"{n_above} of 16 items lie above" in str(info.value)


# -- reports ---------------------------------------------------------------------------------


def test_json_row_has_the_bounds_object_and_follows_the_schema():
    r = _run()
    with pytest.raises(AssertionError):
        r.assert_below(float(HIGHS.mean()))
    row = _row(r)
    of_low = bootstrap_ci(LOWS, seed=SEED, support=SUPPORT["js"])
    of_high = bootstrap_ci(HIGHS, seed=SEED, support=SUPPORT["js"])
    assert row["bounds"] == {
        "k": 20,
        "mean_low": pytest.approx(LOWS.mean()),
        "mean_high": pytest.approx(HIGHS.mean()),
        "ci_of_low": [of_low.low, of_low.high],
        "ci_of_high": [of_high.low, of_high.high],
        "judged": "high ends (below)",
    }
    assert (row["ci_low"], row["ci_high"]) == (of_low.low, of_high.high)
    # The reports count a below= gate's drivers among the high ends.
    assert row["drivers_scope"]["values"] == HIGHS.tolist() and row["drivers_scope"]["slices"] == []
    doc = json_document([row], backend={"name": "dummy"}, settings={})
    check_report(doc)
    assert json.loads("".join(json_pieces(doc)))["results"][0]["bounds"]["k"] == 20
    props = dict(junit_properties([row]))
    assert json.loads(props["sway.bounds"])["judged"] == "high ends (below)"


def test_judged_names_each_gate_side_and_null_without_a_gate():
    assert _row(_run())["bounds"]["judged"] is None
    r = _run()
    r.assert_above(0.0)
    assert _row(r)["bounds"]["judged"] == "low ends (above)"
    r.check(Gate(above=0.0, below=0.6))
    assert _row(r)["bounds"]["judged"] == "low ends (above), high ends (below)"


def test_unbounded_ends_are_null_in_json_and_the_report_validates():
    r = _run(highs=np.full(16, math.inf), divergence="kl")
    with pytest.raises(AssertionError):
        r.assert_below(1.0)
    doc = json_document([_row(r)], backend={"name": "dummy"}, settings={})
    check_report(doc)
    bounds = doc["results"][0]["bounds"]
    assert bounds["mean_high"] is None and bounds["ci_of_high"] == [0.0, None]
    assert doc["results"][0]["ci_high"] is None
    assert "+\u221e" in render_html(doc)


def test_exact_rows_validate_with_null_bounds_and_an_empty_junit_property():
    row = _row(run_probe("delta_kl", DummyBackend(), prompts=PROMPTS, seed=SEED))
    doc = json_document([row], backend={"name": "dummy"}, settings={})
    check_report(doc)
    assert doc["results"][0]["bounds"] is None and dict(junit_properties([row]))["sway.bounds"] == ""


def test_terminal_and_markdown_tag_the_interval_and_explain_it_in_the_footer():
    bounded, exact = _row(_run(), "t.py::test_b"), _row(run_probe("delta_kl", DummyBackend(), prompts=PROMPTS))
    exact["nodeid"], exact["index"] = "t.py::test_e", 1
    footer = methods_text([bounded, exact], "studentized bootstrap, 9999 resamples")
    assert footer.startswith("studentized bootstrap, 9999 resamples; bounded k=20: the engine returned only")
    assert "the gate judged the conservative end" in footer
    lines = summary_lines([bounded, exact], footer=footer)
    b_line = next(line for line in lines if line.startswith("test_b"))
    e_line = next(line for line in lines if line.startswith("test_e"))
    assert f"[{bounded['ci_low']:.4g}, {bounded['ci_high']:.4g}] bounded k=20" in b_line
    assert "bounded" not in e_line
    doc = json_document([bounded, exact], backend={"name": "dummy"}, settings={})
    text = render_markdown(doc, footer=footer)
    assert "] bounded k=20 |" in text and text.count("bounded k=20") == 2  # the cell and the footer
    html = render_html(doc)
    assert "bounded from the top-20 log-probabilities" in html and "no gate judged them" in html


def test_a_sliced_bounded_row_tags_each_slice():
    row = _row(_run(prompts={"a": PROMPTS[:8], "b": PROMPTS[8:]}))
    lines = summary_lines([row], footer="f")
    assert sum("bounded k=20" in line for line in lines) == 3


def test_exact_footer_is_unchanged():
    exact = _row(run_probe("delta_kl", DummyBackend(), prompts=PROMPTS))
    assert methods_text([exact], "studentized bootstrap, 9999 resamples") == "studentized bootstrap, 9999 resamples"


# -- probes that compare variants refuse bounds --------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("null_contrast", {"prompts": PROMPTS, "seeds": 1}),
        ("adapter_ablation", {"prompts": PROMPTS, "scales": [0.0, 0.5, 1.0]}),
    ],
)
def test_probes_comparing_variants_refuse_bounded_divergences(kind, params):
    with pytest.raises(BackendError, match=rf"{kind}: .*top-20 .*needs exact ones.*--sway-vllm-args max_logprobs=-1"):
        run_probe(kind, TopK(LOWS, HIGHS), **params)


def test_response_divergence_refuses_bounded_divergences():
    class Positions(TopK):
        def response_divergences(self, prompts, responses=None, **kw):
            out = DummyBackend.response_divergences(self, prompts, responses, **kw)
            return [r._replace(values=DivergenceBounds(r.values, r.values + 0.1, self.k)) for r in out]

    with pytest.raises(BackendError, match=r"response_divergence: .*needs exact ones.*full vocabulary"):
        run_probe("response_divergence", Positions(LOWS, HIGHS), prompts=PROMPTS[:4])
