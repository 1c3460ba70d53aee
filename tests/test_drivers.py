"""Drivers: the items named by a failed or inconclusive gate, checked against independent
computations (numpy sorts of the per-item values), in messages, rows, JSON, JUnit and HTML."""

import dataclasses
import json

import numpy as np
import pytest

from pytest_sway import DummyBackend, Gate, run_probe
from pytest_sway.reports.baseline import compare
from pytest_sway.reports.html import render_html
from pytest_sway.reports.rows import json_document, json_pieces, junit_properties, rows_for_test
from pytest_sway.stats.bootstrap import Bootstrap, Interval
from pytest_sway.stats.drivers import gate_drivers, regression_drivers, show_item


def _expected_gate(values, side, threshold, k):
    """Indices of the drivers of one gate side, by plain sorting: the items on the wrong side,
    furthest first, ties in item order."""
    sign = 1 if side == "above" else -1
    wrong = [i for i, v in enumerate(values) if sign * (v - threshold) < 0]
    return sorted(wrong, key=lambda i: (sign * values[i], i))[:k]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 5, 50])
def test_gate_drivers_are_the_items_furthest_on_the_wrong_side(seed, k):
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(size=40), 1)  # rounded: plenty of ties
    items = [f"item {i}" for i in range(40)]
    for side, gate in (("above", dict(above=0.3, below=None)), ("below", dict(above=None, below=-0.3))):
        # An interval that fails this side only.
        drivers = gate_drivers(values, items, **gate, ci_low=-1.0 if side == "above" else -0.1, ci_high=1.0 if side == "below" else 0.1, k=k)  # fmt: skip
        expected = _expected_gate(values, side, gate[side], k)
        assert [d["item"] for d in drivers] == [items[i] for i in expected]
        assert [d["value"] for d in drivers] == [float(values[i]) for i in expected]
        assert all(d["side"] == side and type(d["value"]) is float for d in drivers)


def test_ties_keep_item_order_and_a_passing_side_has_no_drivers():
    values = [0.2, 0.1, 0.2, 0.1, 0.9]
    items = ["a", "b", "c", "d", "e"]
    drivers = gate_drivers(values, items, above=0.5, below=None, ci_low=0.1, ci_high=0.6, k=10)
    assert [d["item"] for d in drivers] == ["b", "d", "a", "c"]
    assert gate_drivers(values, items, above=0.05, below=None, ci_low=0.1, ci_high=0.6) == []
    assert gate_drivers(values, items, above=0.5, below=None, ci_low=0.1, ci_high=0.6, k=0) == []


def test_a_two_sided_gate_names_the_drivers_of_each_side_that_failed():
    values = [0.0, 1.0, 0.5, 0.2, 0.8]
    items = list("abcde")
    both = gate_drivers(values, items, above=0.3, below=0.7, ci_low=0.1, ci_high=0.9, k=2)
    assert [(d["side"], d["item"]) for d in both] == [("above", "a"), ("above", "d"), ("below", "b"), ("below", "e")]
    only_below = gate_drivers(values, items, above=0.3, below=0.7, ci_low=0.35, ci_high=0.9, k=2)
    assert [d["side"] for d in only_below] == ["below", "below"]


@pytest.mark.parametrize("direction", ["higher", "lower"])
def test_regression_drivers_are_the_largest_changes_in_the_bad_direction(direction):
    rng = np.random.default_rng(7)
    saved = rng.normal(size=30)
    now = saved + np.round(rng.normal(size=30), 1)
    now[4] = saved[4]  # unchanged: never a driver
    items = [f"q{i}" for i in range(30)]
    sign = 1 if direction == "higher" else -1
    worse = [i for i in range(30) if sign * (now[i] - saved[i]) < 0]
    worst = sorted(worse, key=lambda i: (sign * (now[i] - saved[i]), i))[:5]
    drivers, regressed = regression_drivers(items, now, saved, direction=direction, k=5)
    assert regressed == len(worse)
    assert [d["item"] for d in drivers] == [items[i] for i in worst]
    assert [(d["value"], d["baseline_value"]) for d in drivers] == [(now[i], saved[i]) for i in worst]


def test_show_item_makes_newlines_visible_and_shortens_long_items():
    assert show_item("one\ntwo\tthree\r") == "one\\ntwo\\tthree\\r"
    long = "x" * 200
    assert show_item(long, 20) == "x" * 19 + "\u2026" and len(show_item(long)) == 80
    assert show_item("\x00\u2028") == "\\u0000\\u2028"


# -- the failure message --------------------------------------------------------------


def _failure(result, method, threshold):
    with pytest.raises(AssertionError) as failure:
        getattr(result, method)(threshold)
    return str(failure.value)


def test_the_failure_message_lists_the_drivers_after_the_verdict():
    prompts = [f"prompt {i}" for i in range(20)] + ["a long one " * 20, "two\nlines"]
    result = run_probe("delta_kl", DummyBackend(), prompts=prompts, seed=1)
    text = _failure(result, "assert_above", 0.05)
    first, *rest = text.splitlines()
    assert first.startswith(("FAILED:", "INCONCLUSIVE:"))  # pytest's short summary shows this line
    expected = _expected_gate(result.values, "above", 0.05, 5)
    wrong = int((result.values < 0.05).sum())
    head = next(i for i, line in enumerate(rest) if line.startswith("Drivers:"))
    assert rest[head] == f"Drivers: {wrong} of 22 items lie below 0.05; the 5 lowest:"
    lines = rest[head + 1 : head + 1 + len(expected)]
    assert not rest[head + 1 + len(expected)].startswith("  ")  # then delta_kl's token lines, not more drivers
    assert [line.split(None, 1) for line in lines] == [
        [f"{result.values[i]:.4g}", show_item(prompts[i])] for i in expected
    ]
    assert all(len(line) < 100 for line in lines)  # long prompts shortened
    assert "two\nlines" not in text


def test_drivers_k_and_zero():
    prompts = [f"p{i}" for i in range(12)]
    two = run_probe("delta_kl", DummyBackend(), prompts=prompts, drivers=2)
    lines = _failure(two, "assert_below", 0.0001).splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("Drivers:"))
    assert head == 2 and [line.startswith("  ") for line in lines[head + 1 : head + 4]] == [True, True, False]
    off = run_probe("delta_kl", DummyBackend(), prompts=prompts, drivers=0)
    assert "Drivers" not in _failure(off, "assert_below", 0.0001)
    with pytest.raises(ValueError, match="drivers: expected a whole number >= 0"):
        run_probe("delta_kl", DummyBackend(), prompts=prompts, drivers=-1)


def test_no_item_on_the_wrong_side_is_said_not_invented():
    # choice_accuracy-like: all items at 0, a wide interval straddling -0.1.
    result = run_probe("delta_kl", DummyBackend(effect=0.0), prompts=[f"p{i}" for i in range(8)])
    result = dataclasses.replace(result, ci=Interval(-0.2, 0.2), checks=[])
    text = _failure(result, "assert_above", -0.1)
    assert "Drivers: no item lies below -0.1 (of 8): the interval reaches past it through its width alone" in text
    assert result.drivers(Gate(above=-0.1)) == []


def test_greedy_change_keeps_its_example_pairs_after_the_drivers():
    prompts = [f"prompt {i}" for i in range(10)]
    result = run_probe("greedy_change", DummyBackend(), prompts=prompts)
    text = _failure(result, "assert_below", 0.01)
    lines = text.splitlines()
    drivers = lines.index(next(line for line in lines if line.startswith("Drivers:")))
    evidence = lines.index(next(line for line in lines if line.startswith("changed: ")))
    assert drivers < evidence
    assert lines[evidence:] == result.details["evidence"]


# -- rows, JSON, JUnit, HTML ------------------------------------------------------------


def _row(result):
    request = type("Req", (), {"kind": result.kind, "gate": Gate()})()
    return rows_for_test("t.py::test", results=[result], request=request, index=0, error=None)[0]


def test_rows_carry_the_drivers_of_the_worst_check_only():
    prompts = [f"p{i}" for i in range(16)]
    passed = run_probe("delta_kl", DummyBackend(), prompts=prompts)
    passed.check(Gate(above=0.0001))
    assert _row(passed)["drivers"] == []  # a passing gate names no drivers
    failed = run_probe("delta_kl", DummyBackend(), prompts=prompts)
    failed.check(Gate(above=0.0001))
    failed.check(Gate(below=0.01))
    row = _row(failed)
    expected = _expected_gate(failed.values, "below", 0.01, 5)
    assert row["drivers"] == [{"item": prompts[i], "value": float(failed.values[i]), "side": "below"} for i in expected]
    doc = json.loads("".join(json_pieces(json_document([row], backend={"name": "dummy"}, settings={}))))
    assert doc["results"][0]["drivers"] == row["drivers"]
    props = dict(junit_properties([row]))
    assert json.loads(props["sway.drivers"]) == [[d["item"], d["value"]] for d in row["drivers"]]
    assert dict(junit_properties([_row(passed)]))["sway.drivers"] == ""
    off = run_probe("delta_kl", DummyBackend(), prompts=prompts, drivers=0)
    off.check(Gate(below=0.01))
    assert _row(off)["drivers"] == []


def test_the_html_page_shows_the_drivers_per_test():
    prompts = [f"p{i}" for i in range(16)] + ["<b>bold</b>"]
    result = run_probe("delta_kl", DummyBackend(), prompts=prompts)
    result.check(Gate(above=0.05))
    row = _row(result)
    page = render_html(json_document([row], backend={"name": "dummy"}, settings={}))
    table = page.split('<table class="drivers">', 1)[1].split("</table>", 1)[0]
    wrong = int((result.values < 0.05).sum())
    assert f"Drivers: {wrong} of 17 items lie below 0.05" in table
    for d in row["drivers"]:
        item = d["item"].replace("<", "&lt;").replace(">", "&gt;")
        assert f'<td class="n">{d["value"]:.4g}</td><td>{item}</td>' in table


def test_a_regression_names_the_items_that_fell_most():
    prompts = [f"p{i}" for i in range(16)]
    now = run_probe("delta_kl", DummyBackend(effect=0.2), prompts=prompts[::-1], seed=1)  # another order
    then = run_probe("delta_kl", DummyBackend(effect=0.5), prompts=prompts, seed=1)
    entry = {"items": list(then.items), "values": then.values.tolist(), "estimate": then.estimate}
    out = compare(
        now,
        entry,
        provenance_now={},
        provenance_then={},
        bootstrap=Bootstrap(seed=1),
        max_regression=0.001,
        direction="higher",
    )
    assert out["outcome"] == "failed"
    saved = dict(zip(then.items, then.values.tolist()))
    change = [v - saved[i] for i, v in zip(now.items, now.values)]
    fell = [i for i, c in enumerate(change) if c < 0]
    worst = sorted(fell, key=lambda i: (change[i], i))[:5]
    assert out["regressed_items"] == len(fell)
    assert out["drivers"] == [
        {"item": now.items[i], "value": float(now.values[i]), "baseline_value": saved[now.items[i]]} for i in worst
    ]
    reported = compare(
        now,
        entry,
        provenance_now={},
        provenance_then={},
        bootstrap=Bootstrap(seed=1),
        max_regression=None,
        direction=None,
    )
    assert "drivers" not in reported  # compared and reported, not gated: no verdict to drive


def test_the_regression_drivers_show_in_html_and_markdown():
    from pytest_sway.reports.markdown import render_markdown

    prompts = [f"p{i}" for i in range(16)]
    now = run_probe("delta_kl", DummyBackend(effect=0.2), prompts=prompts, seed=1)
    then = run_probe("delta_kl", DummyBackend(effect=0.5), prompts=prompts, seed=1)
    now.check(Gate(above=0.0001))
    entry = {"items": list(then.items), "values": then.values.tolist(), "estimate": then.estimate}
    out = compare(
        now,
        entry,
        provenance_now={},
        provenance_then={},
        bootstrap=Bootstrap(seed=1),
        max_regression=0.001,
        direction="higher",
    )
    request = type("Req", (), {"kind": "delta_kl", "gate": Gate(above=0.0001)})()
    rows = rows_for_test("t.py::test", results=[now], request=request, index=0, error=None, comparisons={1: out})
    doc = json_document(rows, backend={"name": "dummy"}, settings={})
    assert doc["results"][0]["outcome"] == "passed" and doc["results"][0]["baseline"]["drivers"] == out["drivers"]
    expected = [
        (f"{d['value']:.4g}", f"{d['baseline_value']:.4g}", f"{d['value'] - d['baseline_value']:+.4g}", d["item"])
        for d in out["drivers"]
    ]
    page = render_html(doc)
    assert f"Drivers: {out['regressed_items']} of 16 items fell since the baseline; the 5 that fell most:" in page
    for value, saved, change, item in expected:
        assert f'<td class="n">{value}</td><td class="n">{saved}</td><td class="n">{change}</td><td>{item}</td>' in page
    text = render_markdown(doc, footer="f")
    assert "#### ❌ test · delta\\_kl(js)\n" in text  # the row passed; its regression failed
    table = text.split("| value | baseline | change | item |\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert table == [f"| {v} | {b} | {c} | `{i}` |" for v, b, c, i in expected]


REGRESSION_SUITE = """
import pytest
PROMPTS = [f"prompt {i}" for i in range(12)]

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.001, max_regression=0.001)
def test_moves():
    pass
"""

EFFECT_CONFTEST = """
import os
from pytest_sway import DummyBackend

def pytest_sway_make_backend(settings):
    return DummyBackend(effect=float(os.environ.get("SWAY_TEST_EFFECT", "0.5")))
"""


def test_a_failed_regression_gate_names_its_drivers(pytester, monkeypatch):
    pytester.makepyfile(test_r=REGRESSION_SUITE)
    pytester.makeconftest(EFFECT_CONFTEST)
    pytester.runpytest("--sway-save-baseline=base.json").assert_outcomes(passed=1)
    saved = json.loads((pytester.path / "base.json").read_text())["tests"]["test_r.py::test_moves"][0]
    monkeypatch.setenv("SWAY_TEST_EFFECT", "0.3")
    result = pytester.runpytest("--sway-baseline=base.json", "--sway-json=out.json", "--sway-drivers=2")
    result.assert_outcomes(failed=1)
    row = json.loads((pytester.path / "out.json").read_text())["results"][0]
    now = dict(zip([f"prompt {i}" for i in range(12)], row["values"]))
    change = {item: now[item] - value for item, value in zip(saved["items"], saved["values"])}
    worst = sorted((c, k, item) for k, (item, c) in enumerate(change.items()) if c < 0)[:2]
    assert [d["item"] for d in row["baseline"]["drivers"]] == [item for _, _, item in worst]
    fell = sum(c < 0 for c in change.values())
    result.stdout.fnmatch_lines(
        [
            "FAILED: delta_kl(js) - baseline * lies wholly below -0.001. A regression against the baseline*",
            "*gate needs CI low >= -0.001.",
            f"Drivers: {fell} of 12 items fell since the baseline; the 2 that fell most:",
            f"  {now[worst[0][2]]:.4g} (baseline *, {worst[0][0]:+.4g})  *{worst[0][2]}",
            f"  {now[worst[1][2]]:.4g} (baseline *, {worst[1][0]:+.4g})  *{worst[1][2]}",
        ]
    )


def test_a_regression_with_no_item_worse_says_so():
    from pytest_sway.stats.drivers import regression_text

    drivers, regressed = regression_drivers(["a", "b"], [1.0, 2.0], [1.0, 1.5], direction="higher")
    assert (drivers, regressed) == ([], 0)
    assert regression_text(drivers, direction="higher", regressed=0, n=2) == (
        "Drivers: no item fell since the baseline (of 2): the interval reaches past the bound through its width alone"
    )
    drivers, regressed = regression_drivers(["a", "b"], [1.0, 2.0], [1.0, 1.5], direction="lower")
    assert regression_text(drivers, direction="lower", regressed=regressed, n=2).splitlines() == [
        "Drivers: 1 of 2 items rose since the baseline:",
        "  2 (baseline 1.5, +0.5)  b",
    ]


def test_when_only_a_slice_fails_its_items_are_the_drivers():
    a, b = [f"a{i}" for i in range(8)], [f"b{i}" for i in range(9)]
    result = run_probe("delta_kl", DummyBackend(), prompts={"a": a, "b": b}, seed=2)
    # Overall and slice 'a' clear `above=0.3`; slice 'b' does not.
    slices = {
        "a": dataclasses.replace(result.slices["a"], ci=Interval(0.5, 0.6)),
        "b": dataclasses.replace(result.slices["b"], ci=Interval(0.0, 0.1)),
    }
    result = dataclasses.replace(result, ci=Interval(0.5, 0.6), slices=slices, checks=[])
    b_values = result.values[len(a) :]
    expected = [b[i] for i in _expected_gate(b_values, "above", 0.3, 5)]
    assert [d["item"] for d in result.drivers(Gate(above=0.3))] == expected
    text = _failure(result, "assert_above", 0.3)
    assert f"Drivers: in slice 'b': {int((b_values < 0.3).sum())} of 9 items lie below 0.3; the 5 lowest:" in text
    row = _row(result)
    assert [d["item"] for d in row["drivers"]] == expected
    assert row["drivers_scope"] == {"slices": ["b"], "values": [float(v) for v in b_values], "ci_low": 0.0,
                                    "ci_high": 0.1}  # fmt: skip
    page = render_html(json_document([row], backend={"name": "dummy"}, settings={}))
    assert "in slice &#x27;b&#x27;: " in page
