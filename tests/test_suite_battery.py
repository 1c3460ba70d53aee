"""--sway-suite: the shipped battery is collected as ordinary tests: listed by --co, selected by
part and by -k, gated with overridable thresholds, and bad values are usage errors."""

from __future__ import annotations

import json

import pytest

from pytest_sway.suites.spec import GATES, SUITES, Suite, parse_suite, parse_thresholds, threshold

BATTERY = "sway-default/battery.py::"
ALL = [
    "test_prompts_by_domain",
    "test_prompts_greedy_by_domain",
    "test_prompts_retained",
    "test_text_by_register",
    "test_text_retained",
    "test_knowledge_by_domain",
    "test_knowledge_retained",
    "test_chat_by_kind",
    "test_chat_retained",
]


def collected(pytester, *args) -> list[str]:
    result = pytester.runpytest("--co", "-q", *args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    return [line for line in result.stdout.lines if "::" in line]


def test_parse_suite():
    assert parse_suite("default") == Suite("default", SUITES["default"])
    # run order, each once, whatever order the user wrote
    assert parse_suite("default:text,knowledge,text") == Suite("default", ("text", "knowledge"))
    assert str(parse_suite("default: knowledge ,chat")) == "default:knowledge,chat"
    for bad, says in (
        ("extra", "unknown suite 'extra'; the built-in suites are default"),
        ("default:knowlege", "suite default has no part 'knowlege'; its parts are prompts, text, knowledge, chat"),
        ("default:text,", "has no part ''"),
        ("default:", "no parts after default:"),
    ):
        with pytest.raises(ValueError, match=says.replace("(", r"\(")):
            parse_suite(bad)


def test_parse_thresholds():
    assert parse_thresholds("knowledge=-0.05 prompts=0.02") == {"knowledge": -0.05, "prompts": 0.02}
    assert parse_thresholds("text=0.2,chat=0.1") == {"text": 0.2, "chat": 0.1}
    # perplexity_shift may go either way (a gate that demands text improve is a choice, not a slip)
    assert parse_thresholds("text=-0.01 knowledge=0") == {"text": -0.01, "knowledge": 0.0}
    for bad, says in (("knowledge", "part=number"), ("facts=1", "no part 'facts'"), ("text=x", "text: expected a number"),
                      ("text=nan", "finite"), ("text=0.2 text=0.3", "text is given twice"),
                      ("prompts=0", "so no fine-tune would pass"), ("chat=-0.1", "no fine-tune"),
                      ("prompts=1", "so every fine-tune would pass"), ("knowledge=-5", "5 points is knowledge=-0.05"),
                      ("knowledge=0.05", r"knowledge=-0.05 allows a 5% loss")):  # fmt: skip
        with pytest.raises(ValueError, match=says):
            parse_thresholds(bad)
    assert threshold("knowledge", None) == GATES["knowledge"] == ("above", -0.05)
    assert threshold("text", {"text": 0.3}) == ("below", 0.3)


def test_co_lists_the_whole_battery_beside_the_users_tests(pytester):
    pytester.makepyfile("def test_mine():\n    pass\n")
    found = collected(pytester, "--sway-suite=default")
    assert found == ["test_co_lists_the_whole_battery_beside_the_users_tests.py::test_mine"] + [
        BATTERY + name for name in ALL
    ]


def test_a_plain_run_collects_no_battery(pytester):
    pytester.makepyfile("def test_mine():\n    pass\n")
    assert collected(pytester) == ["test_a_plain_run_collects_no_battery.py::test_mine"]


def test_parts_select_their_tests(pytester):
    found = collected(pytester, "--sway-suite=default:knowledge,text")
    assert found == [BATTERY + n for n in ("test_text_by_register", "test_text_retained",
                                           "test_knowledge_by_domain", "test_knowledge_retained")]  # fmt: skip


def test_ini_names_the_suite(pytester):
    pytester.makeini("[pytest]\nsway_suite = default:chat\n")
    assert collected(pytester) == [BATTERY + "test_chat_by_kind", BATTERY + "test_chat_retained"]


def test_k_and_deselection_apply_to_the_battery(pytester):
    result = pytester.runpytest("--co", "-q", "--sway-suite=default", "-k", "retained and not chat")
    assert [line for line in result.stdout.lines if "::" in line] == [
        BATTERY + n for n in ("test_prompts_retained", "test_text_retained", "test_knowledge_retained")
    ]
    result.stdout.fnmatch_lines(["3/9 tests collected (6 deselected)*"])


@pytest.mark.parametrize(
    "args, says",
    [
        (["--sway-suite=default:knowlege"], "--sway-suite='default:knowlege': suite default has no part 'knowlege'"),
        (["--sway-suite=mmlu"], "--sway-suite='mmlu': unknown suite 'mmlu'; the built-in suites are default"),
        (["--sway-suite-thresholds=text=0.2"], "--sway-suite-thresholds is set, but no --sway-suite runs"),
        (["--sway-suite=default", "--sway-suite-thresholds=txt=0.2"], "no part 'txt'; the battery's gated parts"),
    ],
)
def test_bad_values_are_usage_errors(pytester, args, says):
    result = pytester.runpytest("--co", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert says in result.stderr.str()


def test_thresholds_replace_the_gate(pytester):
    """On the dummy backend the text gate's interval is about [0.136, 0.145]: the default 0.1 fails
    it, an override of 0.5 in the ini file passes it, and the report shows the threshold that judged."""
    args = ("--sway-suite=default:text", "-k", "retained", "--sway-json=r.json", "--sway-resamples=999")
    failed = pytester.runpytest(*args)
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    assert json.loads((pytester.path / "r.json").read_text())["results"][0]["below"] == 0.1
    pytester.makeini("[pytest]\nsway_suite_thresholds = text=0.5\n")  # the ini twin, as a project sets it
    passed = pytester.runpytest(*args)
    assert passed.ret == pytest.ExitCode.OK, passed.stdout.str()
    (row,) = json.loads((pytester.path / "r.json").read_text())["results"]
    assert (row["nodeid"], row["below"], row["outcome"]) == (BATTERY + "test_text_retained", 0.5, "passed")
    assert json.loads((pytester.path / "r.json").read_text())["settings"]["suite"] == "default:text"


def test_ini_thresholds_wait_for_a_suite(pytester):
    """A project's ini may set the battery's thresholds for runs that add --sway-suite on the
    command line; runs without it collect the project's tests as usual (on the command line,
    thresholds without a suite are an error: see test_bad_values_are_usage_errors)."""
    pytester.makeini("[pytest]\nsway_suite_thresholds = chat=0.25\n")
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    assert collected(pytester) == ["test_own.py::test_own"]
    assert BATTERY + "test_chat_retained" in collected(pytester, "--sway-suite=default:chat")


@pytest.mark.parametrize("args, m", [((), 4), (("-k", "not chat"), 3), (("--sway-suite=default:knowledge,text",), 2)])
def test_the_gated_tests_join_the_bonferroni_family(pytester, args, m):
    """One gate per part (the per-domain tests are reported, not gated), counted after -k: the
    resample check names the family it was sized for."""
    suite = () if any(a.startswith("--sway-suite") for a in args) else ("--sway-suite=default",)
    result = pytester.runpytest("--co", *suite, *args, "--sway-correction=bonferroni", "--sway-resamples=60")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--sway-correction=bonferroni over m={m} gates" in result.stderr.str()


def test_the_battery_imports_under_importlib_mode(pytester):
    assert collected(pytester, "--import-mode=importlib", "--sway-suite=default:chat") == [
        BATTERY + "test_chat_by_kind",
        BATTERY + "test_chat_retained",
    ]


def test_battery_rows_join_baselines(pytester):
    """A baseline saved from a battery run keys its rows by the battery's node ids, and a later run
    compares against them (the same fine-tune: a change of exactly 0, its all-equal interval)."""
    args = ("--sway-suite=default:prompts", "-k", "prompts_retained", "--sway-resamples=999")
    assert pytester.runpytest(*args, "--sway-save-baseline=base.json").ret == pytest.ExitCode.OK
    assert list(json.loads((pytester.path / "base.json").read_text())["tests"]) == [BATTERY + "test_prompts_retained"]
    result = pytester.runpytest(*args, "--sway-baseline=base.json", "--sway-max-regression=0.01", "--sway-json=r.json")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    (row,) = json.loads((pytester.path / "r.json").read_text())["results"]
    assert row["baseline"]["status"] == "compared" and row["baseline"]["delta"] == 0.0
    assert row["baseline"]["outcome"] == "passed"
