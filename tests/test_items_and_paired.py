"""Items from JSONL files, conversations, and Tango's paired interval."""

import json
import math
import pickle
from statistics import NormalDist

import numpy as np
import pytest

from pytest_sway import DummyBackend, Sway, run_probe
from pytest_sway.items import Conversation, ItemList
from pytest_sway.stats.bootstrap import Bootstrap
from pytest_sway.stats.paired import tango_interval, tango_interval_counts, tango_score

# -- Tango's score interval ------------------------------------------------------------


def _constrained_mle(fixed, broken, n, d0):
    """p(broken) maximising the multinomial likelihood under p(fixed) - p(broken) = d0, numerically
    (independent of the closed form in pytest_sway.stats.paired)."""
    from scipy.optimize import minimize_scalar

    concordant = n - fixed - broken
    lo, hi = max(0.0, -d0) + 1e-12, (1.0 - d0) / 2 - 1e-12

    def nll(q):
        p12, p21 = q + d0, q
        out = -(fixed * math.log(p12) if fixed else 0.0) - (broken * math.log(p21) if broken else 0.0)
        return out - (concordant * math.log(1 - p12 - p21) if concordant else 0.0)

    return minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}).x


@pytest.mark.parametrize("fixed, broken, n", [(0, 2, 20), (3, 1, 50), (1, 7, 21), (5, 5, 20), (10, 0, 30)])
def test_tango_bounds_solve_the_score_equation_with_the_constrained_mle(fixed, broken, n):
    ci = tango_interval_counts(fixed, broken, n, confidence=0.95)
    z = NormalDist().inv_cdf(0.975)
    for bound, target in ((ci.low, z), (ci.high, -z)):
        q = _constrained_mle(fixed, broken, n, bound)
        score = (fixed - broken - n * bound) / math.sqrt(n * (2 * q + bound * (1 - bound)))
        assert score == pytest.approx(target, abs=1e-5)
        assert tango_score(bound, fixed, broken, n) == pytest.approx(target, abs=1e-9)
    assert ci.low < (fixed - broken) / n < ci.high


def test_tango_is_symmetric_honest_without_discordant_pairs_and_narrows_with_n():
    assert tango_interval_counts(3, 1, 40) == pytest.approx([-x for x in tango_interval_counts(1, 3, 40)][::-1])
    # No question changed among 20: a bootstrap claims certainty, the score interval does not.
    assert Bootstrap().interval(np.zeros(20)) == (-math.inf, math.inf)  # undeclared support: nothing to say
    chosen = Bootstrap().estimate(np.zeros(20), support=(-1, 1))
    assert chosen.method == "all-equal" and chosen.ci.width > 0
    ci = tango_interval(np.zeros(20))
    assert ci.low == pytest.approx(-ci.high) and 0.1 < ci.high < 0.2
    widths = [tango_interval_counts(0, 0, n).width for n in (20, 50, 200)]
    assert widths[0] > widths[1] > widths[2]
    assert tango_interval_counts(0, 20, 20).low == -1.0
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        tango_interval([0.0, 0.5])


def test_choice_accuracy_uses_the_paired_interval_and_reports_clopper_pearson_accuracies():
    questions = [(f"Question {i}:", [" yes", " no", " maybe"], i % 3) for i in range(30)]
    result = run_probe("choice_accuracy", DummyBackend(effect=1.0), questions=questions)
    assert (result.method, result.resamples) == ("tango", 0)
    assert "Tango score interval for paired proportions" in repr(result)
    fixed, broken = result.details["fixed"], result.details["broken"]
    assert (fixed, broken) == (int((result.values == 1).sum()), int((result.values == -1).sum()))
    assert tuple(result.ci) == tango_interval_counts(fixed, broken, 30)
    base, ft = result.details["base"], result.details["finetuned"]
    assert ft["correct"] - base["correct"] == fixed - broken
    assert base["ci_low"] < base["accuracy"] < base["ci_high"]
    from scipy.stats import binomtest

    for model in (base, ft):  # each model's accuracy: the exact binomial interval, as scipy computes it
        exact = binomtest(model["correct"], 30).proportion_ci(0.95, method="exact")
        assert (model["ci_low"], model["ci_high"]) == pytest.approx((exact.low, exact.high), abs=1e-9)
    if broken:
        with pytest.raises(AssertionError, match="forgot: 'Question"):
            result.assert_above(0.5)


@pytest.mark.parametrize(
    "bad, message",
    [
        ([("q", [" a"], 0), ("q2", [" a", " b"], 0)], "item 0: choices must be a list of at least 2 strings"),
        ([("q", [" a", " a"], 0), ("q2", [" a", " b"], 0)], "item 0: choices must be distinct"),
        (
            [("q", [" a", " b"], 2), ("q2", [" a", " b"], 0)],
            "item 0: answer_index must be an integer from 0 to 1, got 2",
        ),
        ([("q", [" a", " b"], True), ("q2", [" a", " b"], 0)], "answer_index must be an integer"),
    ],
)
def test_choice_accuracy_rejects_bad_questions(bad, message):
    with pytest.raises(ValueError, match=message):
        run_probe("choice_accuracy", DummyBackend(), questions=bad)


# -- conversations ----------------------------------------------------------------------------

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund window?"}]


def test_a_conversation_is_a_hashable_string_of_its_messages():
    c = Conversation(CHAT)
    assert json.loads(c) == CHAT and c.messages == CHAT
    assert c == Conversation([dict(m) for m in CHAT]) and hash(c) == hash(Conversation(CHAT))
    assert pickle.loads(pickle.dumps(c)).messages == CHAT


@pytest.mark.parametrize(
    "messages, message",
    [
        ([{"role": "user"}], "message 0 must have exactly the keys 'role' and 'content'"),
        ([{"role": "", "content": "x"}], "message 0: role must be a non-empty string"),
        ([{"role": "user", "content": 3}], "message 0: content must be a string"),
        ([], "a conversation must be a non-empty list"),
    ],
)
def test_bad_conversations_are_rejected(messages, message):
    with pytest.raises(ValueError, match=message):
        run_probe("delta_kl", DummyBackend(), prompts=[messages, "x"], chat=True)


def test_conversations_need_chat_and_change_the_dummy_context():
    with pytest.raises(ValueError, match="item 0 is a conversation .* need chat=True"):
        run_probe("greedy_change", DummyBackend(), prompts=[CHAT, "x"])
    one_turn = run_probe("delta_kl", DummyBackend(), prompts=[[CHAT[1]], "Refund window?"], chat=True)
    assert one_turn.values[0] == one_turn.values[1]  # one user turn is the plain prompt
    two = run_probe("delta_kl", DummyBackend(), prompts=[CHAT, "Refund window?"], chat=True)
    assert two.values[0] != two.values[1] and isinstance(two.items[0], str)


# -- JSONL items -------------------------------------------------------------------------------


def _write(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_every_probe_reads_its_items_from_jsonl(tmp_path):
    files = {
        "prompts.jsonl": [{"prompt": f"Ticket {i}", "group": i // 2} for i in range(8)] + [{"prompt": CHAT}],
        "cases.jsonl": [{"prompt": f"Ticket {i}", "completion": " refund", "slice": "billing"} for i in range(3)],
        "triples.jsonl": [{"prompt": f"Ticket {i}", "chosen": " sorry", "rejected": " no"} for i in range(3)],
        "pairs.jsonl": [{"prompt": f"Ticket {i}", "response": " we will refund"} for i in range(3)],
        "questions.jsonl": [{"question": f"Q{i}:", "choices": [" a", " b"], "answer": i % 2} for i in range(3)],
        "texts.jsonl": [{"text": f"Some general text number {i}."} for i in range(3)],
    }
    for name, lines in files.items():
        _write(tmp_path / name, lines)
    sway = Sway(DummyBackend(), base_dir=tmp_path)
    d = sway.delta_kl("prompts.jsonl", chat=True)
    assert d.n == 9 and d.items[8] == str(Conversation(CHAT))
    assert isinstance(d.params["prompts"], ItemList) and d.params["prompts"].groups == (
        "0",
        "0",
        "1",
        "1",
        "2",
        "2",
        "3",
        "3",
        None,
    )
    assert d.n_groups == 5  # a line without a group is a group of its own
    assert d.params["prompts"].source == "prompts.jsonl"
    inline = sway.delta_kl([f"Ticket {i}" for i in range(8)] + [CHAT], chat=True)
    np.testing.assert_array_equal(d.values, inline.values)
    lift = sway.completion_lift("cases.jsonl")
    assert lift.n == 3 and lift.params["cases"].slices == ("billing",) * 3
    assert sway.preference_shift("triples.jsonl").n == 3
    assert sway.response_divergence("pairs.jsonl").n == 3
    assert sway.response_divergence(prompts="prompts.jsonl", chat=True, max_new_tokens=2).n == 9
    assert sway.choice_accuracy("questions.jsonl").n == 3
    assert sway.perplexity_shift(str(tmp_path / "texts.jsonl")).n == 3  # absolute paths work too


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"prompt": "a"}', '{"prompt": "b"', '{"prompt": "c"}'], r"bad.jsonl:2: not valid JSON"),
        (
            ['{"prompt": "a"}', '{"prompt": "b"}', '{"promt": "c"}'],
            r"bad.jsonl:3: missing 'prompt'; unknown field\(s\) 'promt'",
        ),
        (['{"prompt": "a"}', '["b"]'], r"bad.jsonl:2: expected a JSON object with \"prompt\""),
        (
            ['{"prompt": "a"}', '{"prompt": ""}'],
            r"bad.jsonl:2: \"prompt\" must be a non-empty string or a list of messages",
        ),
        (
            ['{"prompt": "a"}', '{"prompt": "b", "group": [1]}'],
            r"bad.jsonl:2: \"group\" is \[1\]; a group label is a string or an integer",
        ),
        (
            ['{"prompt": "a"}', "", '{"prompt": [{"role": "user"}]}'],
            r"bad.jsonl:3: .*message 0 must have exactly the keys",
        ),
        (['{"prompt": "a"}'], r"parameter 'prompts': .*bad.jsonl: got 1 item\(s\)"),
        ([""], r"holds no items"),
    ],
)
def test_a_bad_line_names_the_file_and_the_line(tmp_path, lines, message):
    _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=message):
        run_probe("delta_kl", DummyBackend(), prompts="bad.jsonl", base_dir=tmp_path, chat=True)


def test_a_check_failing_after_loading_names_the_line(tmp_path):
    _write(
        tmp_path / "q.jsonl",
        [
            {"question": "Q1", "choices": [" a", " b"], "answer": 0},
            "",
            {"question": "Q2", "choices": [" a", " a"], "answer": 0},
        ],
    )
    with pytest.raises(ValueError, match=r"q.jsonl:3: choices must be distinct"):
        run_probe("choice_accuracy", DummyBackend(), questions="q.jsonl", base_dir=tmp_path)


def test_items_files_are_relative_to_the_test_file(pytester, monkeypatch):
    sub = pytester.mkdir("suite")
    (sub / "data").mkdir()
    _write(sub / "data" / "prompts.jsonl", [{"prompt": f"Customer question {i}"} for i in range(8)])
    _write(sub / "data" / "broken.jsonl", [{"prompt": "fine"}, {"prompt": "fine too"}, {"prompt": 7}])
    (sub / "test_files.py").write_text(
        "import pytest\n"
        "@pytest.mark.sway_probe('delta_kl', prompts='data/prompts.jsonl', above=0.001)\n"
        "def test_marker(sway_result):\n"
        "    assert sway_result.n == 8\n"
        "def test_fixture(sway):\n"
        "    assert sway.greedy_change('data/prompts.jsonl', max_new_tokens=2).n == 8\n"
    )
    (sub / "test_broken.py").write_text(
        "import pytest\n"
        "@pytest.mark.sway_probe('delta_kl', prompts='data/broken.jsonl', above=0.001)\n"
        "def test_bad():\n"
        "    pass\n"
    )
    monkeypatch.chdir(pytester.mkdir("elsewhere"))  # not the test file's folder
    result = pytester.runpytest_inprocess(str(sub), "-p", "no:cacheprovider", "--continue-on-collection-errors")
    result.assert_outcomes(passed=2, errors=1)
    text = result.stdout.str()
    assert "test_broken.py::test_bad: invalid @pytest.mark.sway_probe: delta_kl: parameter 'prompts': " in text
    assert str(sub / "data" / "broken.jsonl") + ':3: "prompt" must be a non-empty string' in text


def test_conversations_and_items_files_travel_through_xdist_into_the_json_report(pytester):
    _write(pytester.path / "prompts.jsonl", [{"prompt": [{"role": "user", "content": f"Q{i}"}]} for i in range(4)])
    pytester.makepyfile(
        test_chat="""
        import pytest
        CHAT = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Q{i}"}] for i in range(4)]
        @pytest.mark.sway_probe("response_divergence", prompts=CHAT, chat=True, max_new_tokens=3)
        def test_marker():
            pass
        def test_fixture(sway):
            sway.delta_kl("prompts.jsonl", chat=True)
    """
    )
    result = pytester.runpytest("-n", "2", "--sway-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    rows = {r["nodeid"]: r for r in json.loads((pytester.path / "out.json").read_text())["results"]}
    marker, fixture = rows["test_chat.py::test_marker"], rows["test_chat.py::test_fixture"]
    assert json.loads(marker["details"]["most_moved"][0]["item"])[0] == {"role": "system", "content": "Be brief."}
    assert fixture["params"]["prompts"] == {"count": 4, "file": "prompts.jsonl"}
