"""Token lists (what the fine-tune raised and lowered): the pure ranking and counting,
the dummy backend against numpy, and the lists through the plugin's JSON report."""

import json
import re

import numpy as np
import pytest

import pytest_sway.reports.rows  # noqa: F401  (imported before pytester's inner runs)
from pytest_sway import BASE, DummyBackend, Variant, run_probe
from pytest_sway.backends.base import divergences_with_tokens
from pytest_sway.backends.token_changes import (
    TokenChange,
    TokenChanges,
    TopTokens,
    evidence_lines,
    most_often,
    token_details,
    top_tokens,
)

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
    packed = details["token_changes"].packed()
    assert TokenChanges.unpack(packed) == details["token_changes"]


def _random_tops(n, k, seed=0, vocab=128_000, full=False):
    """``n`` prompts' lists of 0 to k tokens each (``full``: k each), ids from a vocabulary of ``vocab``."""
    rng = np.random.default_rng(seed)
    tops = []
    for _ in range(n):
        sides = []
        for sign in (1, -1):
            size = k if full else int(rng.integers(0, k + 1))
            ids = rng.choice(vocab, size=size, replace=False)
            sides.append(
                tuple(
                    TokenChange(f" w{i}", int(i), float(b), float(b + sign * d))
                    for i, b, d in zip(ids, rng.random(size), rng.random(size))
                )
            )
        tops.append(TopTokens(*sides))
    return tops


def test_token_changes_read_back_as_the_lists_they_were_given():
    tops = _random_tops(50, 5)
    prompts = [f"prompt {i}" for i in range(50)]
    table = token_details(prompts, iter(tops), k=5)["token_changes"]  # any iterable, read once
    want = [
        {"prompt": p, "raised": [c.as_dict() for c in t.raised], "lowered": [c.as_dict() for c in t.lowered]}
        for p, t in zip(prompts, tops)
    ]
    assert len(table) == 50 and list(table) == want and table == want
    assert table[-1] == want[-1] and table[7:3:-2] == want[7:3:-2]
    assert [table.top(i) for i in range(50)] == tops and table.top(-50) == tops[0]
    for outside in (50, -51):
        with pytest.raises(IndexError):
            table[outside]
        with pytest.raises(IndexError):
            table.top(outside)
    assert table != want[:-1] and table != want[:-1] + [want[0]] and table != "not a list"
    with pytest.raises(ValueError, match="at most 5"):
        table.append("p", _random_tops(1, 6, seed=3)[0]._replace(raised=tops[0].raised * 2 + (tops[1].raised[0],)))


def test_packed_token_changes_are_plain_bytes_and_read_back_on_either_byte_order():
    tops = _random_tops(40, 5, seed=1)
    table = token_details([f"p{i}" for i in range(40)], tops, k=5)["token_changes"]
    packed = table.packed()
    assert {type(packed[key]) for key in ("ids", "p_base", "p_ft")} == {bytes}
    assert len(packed["ids"]) + len(packed["p_base"]) + len(packed["p_ft"]) == 40 * 10 * (4 + 8 + 8)
    assert TokenChanges.unpack(packed) == table
    # Written by a machine of the other byte order (an xdist worker over ssh).
    from array import array

    swapped = dict(packed, byteorder="big" if packed["byteorder"] == "little" else "little")
    for key, code in (("ids", "i"), ("p_base", "d"), ("p_ft", "d")):
        column = array(code, packed[key])
        column.byteswap()
        swapped[key] = column.tobytes()
    assert TokenChanges.unpack(swapped) == table


def test_token_changes_hold_a_few_hundred_bytes_per_prompt():
    """What a session keeps per prompt of every delta_kl test until its reports are written:
    20 bytes per listed token, against about 300 as a dict of Python objects."""
    import tracemalloc

    tops = _random_tops(2000, 5, seed=2, vocab=500, full=True)
    text = {i: f" w{i}" for i in range(500)}  # a backend's texts exist once per token id
    tops = [TopTokens(*(tuple(c._replace(token=text[c.id]) for c in side) for side in t)) for t in tops]
    prompts = [f"p{i}" for i in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = token_details(prompts, tops, k=5)["token_changes"]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(table) == 2000 and table[0]["raised"][0]["token"] == text[tops[0].raised[0].id]
    assert held < 2000 * 500, held  # 10 listed tokens per prompt: 200 bytes, plus the arrays' spare room; dicts: 2,900


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


def _renamed(result, prompt: int, text: str):
    """``result`` with the first raised token of prompt ``prompt`` given the text ``text``
    wherever it is listed (what a real tokenizer can give; the dummy's tokens are named tok<id>)."""
    changes = result.details["token_changes"]
    token_id = changes.top(prompt).raised[0].id
    renamed = TokenChanges(changes.k)
    for i, top in enumerate(changes.tops()):
        sides = (tuple(c._replace(token=text) if c.id == token_id else c for c in side) for side in top)
        renamed.append(changes[i]["prompt"], TopTokens(*sides))
    result.details["token_changes"] = renamed
    return result


def _page(result, **row):
    from pytest_sway.reports.html import render_html
    from pytest_sway.reports.rows import json_document, json_pieces, rows_for_test

    rows = rows_for_test("t.py::test_tokens", results=[result], request=None, index=0, error=None)
    rows[0].update(row)
    return render_html(json.loads("".join(json_pieces(json_document(rows, backend={"name": "dummy"}, settings={})))))


def test_the_page_is_the_same_from_the_sessions_document_and_from_its_json_file():
    from pytest_sway.reports.html import render_html
    from pytest_sway.reports.rows import json_document, json_pieces, rows_for_test

    result = run_probe("delta_kl", DummyBackend(), prompts=PROMPTS)
    rows = rows_for_test("t.py::test_tokens", results=[result], request=None, index=0, error=None)
    doc = json_document(rows, backend={"name": "dummy"}, settings={})  # what the session renders
    assert isinstance(doc["results"][0]["details"]["token_changes"], TokenChanges)
    page = render_html(doc)
    assert "What changed, token by token" in page and page.count('<td class="prompt">') == len(PROMPTS)
    assert page == render_html(json.loads("".join(json_pieces(doc))))


def test_html_shows_the_counts_and_each_prompts_lists_escaped():
    prompts = [f"prompt {i} <&>" for i in range(8)]
    result = run_probe("delta_kl", DummyBackend(), prompts=prompts)
    page = _page(_renamed(result, 3, " <b>&\n"))  # a space, markup characters, a newline
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
    path = tmp_path / "page.html"
    path.write_text(_page(_renamed(result, 0, "</td></tr></table><b>")), encoding="utf-8")
    dom, console = _open_in_chromium(path, tmp_path / "page.png", tmp_path)
    assert console == []
    assert dom.count('class="tokprompts"') == 1 and dom.count("<details>") == 1
    assert "&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;b&gt;" in dom
