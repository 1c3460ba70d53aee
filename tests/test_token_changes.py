"""Token lists (what the fine-tune raised and lowered): the pure ranking and counting,
the dummy backend against numpy, and the lists through the plugin's JSON report."""

import json
import re

import numpy as np
import pytest

import pytest_sway.rows  # noqa: F401  (imported before pytester's inner runs)
from pytest_sway import BASE, DummyBackend, Variant, run_probe
from pytest_sway.backends.base import divergences_with_tokens
from pytest_sway.token_changes import TokenChange, TopTokens, evidence_lines, most_often, token_details, top_tokens

PROMPTS = [f"Question {i}: what changed in release {i * 7}?" for i in range(12)]


def _name(i):
    return f"t{i}"


# -- ranking and counting (pure) --------------------------------------------------------


def test_top_tokens_ranks_by_change_of_probability_and_splits_by_sign():
    ids = [0, 1, 2, 3, 4, 5]
    p_base = [0.50, 0.10, 0.001, 0.20, 0.19, 0.009]
    p_ft = [0.20, 0.35, 0.010, 0.20, 0.20, 0.040]
    # changes: -0.30, +0.25, +0.009, 0, +0.01, +0.031
    top = top_tokens(ids, p_base, p_ft, 2, _name)
    assert [c.id for c in top.raised] == [1, 5]  # +0.25, +0.031 (not the tenfold rise of token 2: +0.009)
    assert [c.id for c in top.lowered] == [0]  # only token 0 fell; token 3 did not change
    assert top.raised[0] == TokenChange("t1", 1, 0.10, 0.35)
    assert top.raised[0].change == pytest.approx(0.25)
    assert [c.id for c in top_tokens(ids, p_base, p_ft, 10, _name).raised] == [1, 5, 4, 2]


def test_equal_changes_order_by_id_and_repeated_candidates_count_once():
    top = top_tokens([7, 3, 5, 3], [0.1, 0.1, 0.2, 0.1], [0.3, 0.3, 0.0, 0.3], 5, _name)
    assert [c.id for c in top.raised] == [3, 7]
    assert [c.id for c in top.lowered] == [5]


def test_identical_models_change_nothing():
    assert top_tokens([0, 1, 2], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5], 5, _name) == TopTokens((), ())


def _top(raised, lowered):
    """TopTokens from (id, change) pairs, p_base 0.5."""
    return TopTokens(
        tuple(TokenChange(_name(i), i, 0.5, 0.5 + d) for i, d in raised),
        tuple(TokenChange(_name(i), i, 0.5, 0.5 + d) for i, d in lowered),
    )


def test_most_often_counts_prompts_and_breaks_ties_by_total_change_then_id():
    tops = [
        _top([(1, 0.1), (2, 0.3), (4, 0.05)], [(9, -0.2)]),
        _top([(2, 0.2), (1, 0.4), (3, 0.05)], [(9, -0.1), (8, -0.4)]),
        _top([(4, 0.25), (5, 0.05)], []),
    ]
    promoted = most_often(tops, "raised")
    # 1: 2 prompts, total 0.5; 2: 2 prompts, total 0.5; 4: 2 prompts, total 0.30; then the singletons
    # 3 and 5 (0.05 each: by id).
    assert [(e["id"], e["count"]) for e in promoted] == [(1, 2), (2, 2), (4, 2), (3, 1), (5, 1)]
    assert promoted[0] == {"token": "t1", "id": 1, "count": 2, "mean_change": pytest.approx(0.25)}
    assert promoted[2]["mean_change"] == pytest.approx(0.15)
    suppressed = most_often(tops, "lowered")
    assert [(e["id"], e["count"]) for e in suppressed] == [(9, 2), (8, 1)]
    assert suppressed[0]["mean_change"] == pytest.approx(-0.15)
    assert [e["id"] for e in most_often(tops, "raised", limit=2)] == [1, 2]
    with pytest.raises(ValueError, match="raised"):
        most_often(tops, "up")


def test_token_details_and_the_evidence_lines():
    tops = [_top([(1, 0.1)], [(2, -0.1)]), _top([(1, 0.3)], [])]
    details = token_details(["p0", "p1"], tops, k=5)
    assert details["tokens_per_prompt"] == 5 and details["tokens_ranked_by"] == "p_ft - p_base"
    assert details["token_changes"] == [
        {
            "prompt": "p0",
            "raised": [{"token": "t1", "id": 1, "p_base": 0.5, "p_ft": 0.6}],
            "lowered": [{"token": "t2", "id": 2, "p_base": 0.5, "p_ft": 0.4}],
        },
        {"prompt": "p1", "raised": [{"token": "t1", "id": 1, "p_base": 0.5, "p_ft": 0.8}], "lowered": []},
    ]
    assert details["promoted"] == [{"token": "t1", "id": 1, "count": 2, "mean_change": pytest.approx(0.2)}]
    assert evidence_lines(details, 2) == [
        "tokens most often promoted (in a prompt's top 5): 't1' (2/2 prompts, +0.2)",
        "tokens most often suppressed (in a prompt's top 5): 't2' (1/2 prompts, -0.1)",
    ]
    assert json.loads(json.dumps(details)) == details


# -- the dummy backend ------------------------------------------------------------------


def _numpy_reference(backend, prompt, k):
    """The k largest rises and falls of probability, by a full sort of the dummy's distributions."""
    p_base = np.exp(backend._logprobs(prompt, BASE))
    p_ft = np.exp(backend._logprobs(prompt, Variant()))
    change = p_ft - p_base
    up = [i for i in np.lexsort((np.arange(change.size), -change)) if change[i] > 0][:k]
    down = [i for i in np.lexsort((np.arange(change.size), change)) if change[i] < 0][:k]
    entry = lambda i: {"token": f"tok{i}", "id": int(i), "p_base": p_base[i], "p_ft": p_ft[i]}  # noqa: E731
    return [entry(i) for i in up], [entry(i) for i in down]


def test_dummy_delta_kl_lists_match_numpy():
    backend = DummyBackend(effect=0.6, vocab_size=96, seed=2)
    result = run_probe("delta_kl", backend, prompts=PROMPTS)
    changes = result.details["token_changes"]
    assert [c["prompt"] for c in changes] == PROMPTS
    for prompt, entry in zip(PROMPTS, changes):
        raised, lowered = _numpy_reference(backend, prompt, 5)
        assert entry["raised"] == raised and entry["lowered"] == lowered
        assert len(raised) == len(lowered) == 5
    # The over-all lists count the per-prompt lists.
    counts = {}
    for entry in changes:
        for t in entry["raised"]:
            counts[t["id"]] = counts.get(t["id"], 0) + 1
    promoted = result.details["promoted"]
    assert len(promoted) == 10
    assert [e["count"] for e in promoted] == sorted([e["count"] for e in promoted], reverse=True)
    assert all(counts[e["id"]] == e["count"] for e in promoted)
    assert promoted[0]["count"] == max(counts.values())


def test_dummy_without_effect_has_empty_lists():
    result = run_probe("delta_kl", DummyBackend(effect=0), prompts=PROMPTS[:4])
    assert result.details["promoted"] == [] and result.details["suppressed"] == []
    assert all(not e["raised"] and not e["lowered"] for e in result.details["token_changes"])
    assert result.details["evidence"] == []


def test_values_are_those_of_divergences():
    backend = DummyBackend()
    values, tops = divergences_with_tokens(backend, PROMPTS, divergence="tv", top_tokens=3)
    np.testing.assert_array_equal(values, backend.divergences(PROMPTS, divergence="tv"))
    assert all(len(t.raised) == len(t.lowered) == 3 for t in tops)


def test_a_backend_without_token_lists_still_runs_delta_kl():
    class Plain:  # a third-party backend written before token lists existed
        def __init__(self):
            self.inner = DummyBackend()

        def divergences(self, prompts, *, divergence, variant, chat=False):
            return self.inner.divergences(prompts, divergence=divergence, variant=variant, chat=chat)

    result = run_probe("delta_kl", Plain(), prompts=PROMPTS)
    np.testing.assert_array_equal(result.values, run_probe("delta_kl", DummyBackend(), prompts=PROMPTS).values)
    assert "token_changes" not in result.details and "most_moved" in result.details


def test_a_failed_gate_names_the_tokens():
    result = run_probe("delta_kl", DummyBackend(effect=1.0), prompts=PROMPTS)
    with pytest.raises(AssertionError) as failed:
        result.assert_below(0.001)
    message = str(failed.value)
    first = result.details["promoted"][0]
    assert (
        f"tokens most often promoted (in a prompt's top 5): {first['token']!r} ({first['count']}/12 prompts" in message
    )
    assert "tokens most often suppressed" in message


# -- through the plugin ---------------------------------------------------------------------


def test_details_on_the_fixture_result_and_in_the_json_report(pytester):
    pytester.makepyfile(
        f"""
        import pytest

        PROMPTS = {PROMPTS!r}

        @pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.0)
        def test_marker(sway_result):
            assert len(sway_result.details["token_changes"]) == len(PROMPTS)

        def test_fixture(sway):
            details = sway.delta_kl(PROMPTS[:6]).details
            assert [e["prompt"] for e in details["token_changes"]] == PROMPTS[:6]
            assert details["promoted"][0]["token"].startswith("tok")
        """
    )
    result = pytester.runpytest("--sway-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "out.json").read_text())
    marker, fixture = doc["results"]
    want = run_probe("delta_kl", DummyBackend(), prompts=PROMPTS).details
    for key in ("promoted", "suppressed", "token_changes", "tokens_per_prompt", "tokens_ranked_by"):
        assert marker["details"][key] == want[key]
    assert len(fixture["details"]["token_changes"]) == 6


# -- the HTML report --------------------------------------------------------------------------


def _page(result, **row):
    from pytest_sway.html_report import render_html
    from pytest_sway.rows import dump_json, json_document, rows_for_test

    rows = rows_for_test("t.py::test_tokens", results=[result], request=None, index=0, error=None)
    rows[0].update(row)
    return render_html(json.loads(dump_json(json_document(rows, backend={"name": "dummy"}, settings={}))))


def test_html_shows_the_counts_and_each_prompts_lists_escaped():
    prompts = [f"prompt {i} <&>" for i in range(8)]
    result = run_probe("delta_kl", DummyBackend(), prompts=prompts)
    first = result.details["token_changes"][3]["raised"][0]
    first["token"] = " <b>&\n"  # what a real tokenizer can give: a space, markup characters, a newline
    page = _page(result)
    assert "What changed, token by token" in page
    assert '<code class="tok" title="&quot; &lt;b&gt;&amp;\\n&quot; (id' in page  # exact text in the tooltip
    assert ">\u2423&lt;b&gt;&amp;\u21b5</code>" in page  # drawn with its space and newline visible
    assert "<b>&" not in page and "prompt 3 &lt;&amp;&gt;" in page
    promoted = result.details["promoted"][0]
    assert f"</code></td><td>{promoted['count']} of 8</td>" in page
    # Per prompt, most moved first: the rows follow the values in decreasing order.
    table = page[page.index('<table class="tokprompts">') :]
    order = [int(m) for m in re.findall(r'<td class="prompt">prompt (\d+) ', table)]
    assert order == sorted(range(8), key=lambda i: -result.values[i])
    assert "(8 prompts, most moved first)" in page


def test_html_lists_at_most_a_hundred_prompts_and_says_where_the_rest_are():
    prompts = [f"prompt {i}" for i in range(130)]
    page = _page(run_probe("delta_kl", DummyBackend(), prompts=prompts))
    table = page[page.index('<table class="tokprompts">') :]
    assert table.count('<td class="prompt">') == 100
    assert "130 prompts; the 100 most moved here, all 130 in the JSON report" in page


def test_html_without_token_lists_or_with_no_change():
    plain = _page(run_probe("completion_lift", DummyBackend(), cases=[("a", " b"), ("c", " d")]))
    assert "What changed, token by token" not in plain
    still = _page(run_probe("delta_kl", DummyBackend(effect=0), prompts=PROMPTS[:3]))
    assert still.count("none: no probability changed") == 2
    odd = _page(
        run_probe("delta_kl", DummyBackend(), prompts=PROMPTS[:3]),
        details={"token_changes": [None, {"raised": [{"token": 3}], "lowered": "x"}], "promoted": [None]},
    )
    assert odd.endswith("</html>\n")


def test_html_with_token_lists_renders_in_chromium(tmp_path):
    from test_html_report import _open_in_chromium

    result = run_probe("delta_kl", DummyBackend(), prompts=[f"prompt {i} <&>" for i in range(8)])
    result.details["token_changes"][0]["raised"][0]["token"] = "</td></tr></table><b>"
    path = tmp_path / "page.html"
    path.write_text(_page(result), encoding="utf-8")
    dom, console = _open_in_chromium(path, tmp_path / "page.png", tmp_path)
    assert console == []
    assert dom.count('class="tokprompts"') == 1 and dom.count("<details>") == 1
    assert "&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;b&gt;" in dom
