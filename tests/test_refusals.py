"""What pytest-sway refuses: every input that would make a gate measure something
other than what was asked for ends in a usage error (exit 4), a collection error
(exit 2) or a failed test naming the problem, never a pass; and no run replaces a
report or baseline with an empty, partial or foreign document.

Each case runs pytest on a small suite (the dummy backend unless a model is
needed) and checks the exit code, the message and the files left behind.
"""

import json
import os
import stat
import threading
from types import SimpleNamespace

import numpy  # noqa: F401
import pytest

import pytest_sway.sway  # noqa: F401  (imported here once: pytester's in-process runs would import new copies)

SUITE = """
import pytest
PROMPTS = [f"prompt {i}" for i in range(16)]

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.01)
def test_moves():
    pass
"""

USAGE, COLLECT, FAILED, NO_TESTS = (
    pytest.ExitCode.USAGE_ERROR,
    pytest.ExitCode.INTERRUPTED,
    pytest.ExitCode.TESTS_FAILED,
    pytest.ExitCode.NO_TESTS_COLLECTED,
)


def _report(pytester, name="out.json"):
    return json.loads((pytester.path / name).read_text())


# -- usage errors (exit 4): options ------------------------------------------------------


@pytest.mark.parametrize(
    "flag",
    [
        "--sway-model",
        "--sway-adapter",
        "--sway-confidence",
        "--sway-json",
        "--sway-resamples",
        "--sway-seed",
        "--sway-backend",
        "--sway-baseline",
    ],
)
def test_an_empty_option_value_is_a_usage_error(pytester, flag):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(f"{flag}=")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines([f"*{flag} is empty (an unset environment variable?)*"])


def test_an_unset_ci_variable_for_model_and_adapter_is_a_usage_error(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--sway-model=", "--sway-adapter=", "--sway-json=out.json")
    assert result.ret == USAGE
    assert not (pytester.path / "out.json").exists()


def test_an_empty_ini_value_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nsway_json =\n")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest()
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*ini option sway_json is empty*"])


@pytest.mark.parametrize("extra", [["--sway-model=smollm2-135m"], ["--sway-cache-dir=cache"]])
def test_dummy_backend_with_model_options_is_a_usage_error(pytester, extra):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--sway-backend=dummy", *extra)
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*--sway-backend=dummy measures toy models, but * would be ignored*"])


def test_max_regression_without_a_baseline_is_a_usage_error(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--sway-max-regression=0.01")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*--sway-max-regression is set but there is no baseline*"])


@pytest.mark.parametrize(
    "args, needed",
    [
        (["--sway-resamples=1"], "39"),
        (["--sway-resamples=2"], "39"),
        (["--sway-confidence=0.9999", "--sway-resamples=9999"], "19999"),
        (["--sway-confidence=0.999", "--sway-resamples=99"], "1999"),
    ],
)
def test_resamples_that_cannot_resolve_the_level_are_a_usage_error(pytester, args, needed):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*args)
    assert result.ret == USAGE
    result.stderr.fnmatch_lines([f"*cannot resolve*need at least {needed} resamples*"])


def test_too_many_resamples_is_a_usage_error_not_a_memory_error(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--sway-resamples=100000000")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*100000000 is more than the 1000000 one interval may use*"])
    assert "MemoryError" not in result.stderr.str() + result.stdout.str()


def test_bonferroni_level_beyond_explicit_resamples_is_a_usage_error(pytester):
    tests = "\n".join(
        f"@pytest.mark.sway_probe('delta_kl', prompts=PROMPTS, above=0.001)\ndef test_{i}(): pass\n" for i in range(30)
    )
    pytester.makepyfile("import pytest\nPROMPTS = [f'p {i}' for i in range(8)]\n" + tests)
    result = pytester.runpytest("--sway-correction=bonferroni", "--sway-resamples=999")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*bonferroni over m=30 gates*999 resamples cannot resolve*"])


@pytest.mark.parametrize(
    "first, second",
    [
        ("--sway-json=a.json", "--sway-html=a.json"),
        ("--sway-json=a.json", "--sway-save-baseline=a.json"),
        ("--sway-html=sub/../a.html", "--sway-save-baseline=a.html"),
    ],
)
def test_colliding_output_paths_are_a_usage_error(pytester, first, second):
    pytester.mkdir("sub")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(first, second)
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*are the same file*give each its own path*"])


def test_an_output_equal_to_the_baseline_is_a_usage_error_and_the_baseline_survives(pytester):
    pytester.makepyfile(SUITE)
    pytester.runpytest("--sway-save-baseline=base.json").assert_outcomes(passed=1)
    saved = (pytester.path / "base.json").read_text()
    os.symlink("base.json", pytester.path / "link.json")
    for flag in ("--sway-save-baseline=base.json", "--sway-json=link.json", "--sway-html=base.json"):
        result = pytester.runpytest("--sway-baseline=base.json", flag)
        assert result.ret == USAGE, flag
        result.stderr.fnmatch_lines(["*--sway-baseline are the same file*"])
    assert (pytester.path / "base.json").read_text() == saved


REPORT_LOG = """
import pytest

def pytest_addoption(parser):  # what pytest-reportlog declares (it is not installed here)
    parser.addoption("--report-log", action="store", metavar="path", default=None)

def pytest_configure(config):
    if config.option.report_log:  # pytest-reportlog opens its log, truncating it, as it configures
        open(config.option.report_log, "w").close()
"""


@pytest.mark.parametrize(
    "args, named",
    [
        (["--junitxml=out.json", "--sway-json=out.json"], "--sway-json and --junitxml"),
        (["--junit-xml=sub/../page.html", "--sway-html=page.html"], "--sway-html and --junitxml"),
        (["--report-log=log.json", "--sway-save-baseline=log.json"], "--sway-save-baseline and --report-log"),
        (["--report-log=base.json", "--sway-baseline=base.json"], "--report-log and --sway-baseline"),
        (["--junitxml=base.json", "--sway-baseline=base.json"], "--junitxml and --sway-baseline"),
        (
            ["--junitxml=step.md", "--sway-markdown=github"],
            "--sway-markdown=github ($GITHUB_STEP_SUMMARY) and --junitxml",
        ),
        (
            ["--sway-html=step.md", "--sway-markdown=github"],
            "--sway-markdown=github ($GITHUB_STEP_SUMMARY) and --sway-html",
        ),
    ],
)
def test_an_output_colliding_with_one_pytest_writes_is_a_usage_error(pytester, monkeypatch, args, named):
    # One report would silently replace the other while the terminal announced both.
    pytester.mkdir("sub")
    pytester.makeconftest(REPORT_LOG)
    pytester.makepyfile(SUITE)
    pytester.runpytest("--sway-save-baseline=base.json").assert_outcomes(passed=1)
    saved = (pytester.path / "base.json").read_text()
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(pytester.path / "step.md"))
    result = pytester.runpytest(*args)
    assert result.ret == USAGE
    result.stderr.fnmatch_lines([f"ERROR: pytest-sway: {named} are the same file (*): *; give each its own path"])
    assert "passed" not in result.stdout.str()
    assert (pytester.path / "base.json").read_text() == saved
    assert not [name for name in ("out.json", "page.html", "log.json", "step.md") if (pytester.path / name).exists()]


@pytest.fixture
def hub(monkeypatch):
    """The hub as pytest-sway asks it (one model_info call), answering that no such repository exists;
    the ids it was asked for."""
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    asked = []

    def model_info(repo_id, **kwargs):
        asked.append(repo_id)
        response = SimpleNamespace(headers={}, request=None, status_code=404)
        raise RepositoryNotFoundError("404 Client Error: Repository Not Found", response=response)

    monkeypatch.setattr(huggingface_hub, "model_info", model_info)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return asked


@pytest.mark.parametrize(
    "option, value, offline, said",
    [
        (
            "adapter",
            "adapters/v3",
            "1",
            "as a Hugging Face id, 'adapters/v3' is not in the local cache, and the hub was "
            "not tried (offline: HF_HUB_OFFLINE is set)*",
        ),
        (
            "adapter",
            "adapters/v3",
            "0",
            "then tried 'adapters/v3' as a Hugging Face id: the hub answered that there is no such repository*",
        ),
        ("model", "models/base", "1", "*the hub was not tried (offline*"),
        ("finetuned", "checkpoints/v2", "0", "then tried 'checkpoints/v2' as a Hugging Face id: the hub answered*"),
        ("adapter", "runs/v3/adapter", "0", "(a path, not a Hugging Face id, so the hub was not tried)"),
    ],
)
@pytest.mark.parametrize("source", ["command line", "ini file"])
def test_a_folder_that_is_not_there_is_named_as_missing_before_any_test_runs(
    pytester, monkeypatch, hub, option, value, offline, said, source
):
    # adapters/v3 (a relative folder, as the CI template writes paths) was tried as a hub id: then
    # every test errored with "does not fit base model ... (the adapter was trained for '?')", exit 1.
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    (pytester.path / "model").mkdir()
    (pytester.path / "model" / "config.json").write_text("{}")
    given = {"model": "model", "adapter" if option != "finetuned" else "finetuned": "model-ft", option: value}
    if given.get("adapter") == "model-ft":
        (pytester.path / "model-ft").mkdir()
        (pytester.path / "model-ft" / "adapter_config.json").write_text("{}")
        (pytester.path / "model-ft" / "adapter_model.safetensors").write_bytes(b"")
    if source == "ini file":
        pytester.makeini("[pytest]\n" + "".join(f"sway_{k} = {v}\n" for k, v in given.items()))
        named, args = f"ini option sway_{option}", []
    else:
        named, args = f"--sway-{option}", [f"--sway-{k}={v}" for k, v in given.items()]
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*args)
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(
        [f"ERROR: pytest-sway: {named}={value!r}: no such folder: {pytester.path / value}*{said}"]
    )
    assert "does not fit" not in result.stderr.str() and "passed" not in result.stdout.str()
    assert hub == ([value] if offline == "0" and said.startswith("then tried") else [])  # offline: never asked


def test_a_backend_of_your_own_gets_its_model_names_unchecked(pytester, monkeypatch, hub):
    # Only the hf backend reads the values as Hugging Face ids: a serving engine's model names pass.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytester.syspathinsert()
    pytester.makepyfile(
        mybackend="from pytest_sway import DummyBackend\n\ndef make(settings):\n    return DummyBackend()\n"
    )
    pytester.makepyfile(SUITE)
    args = ["--sway-backend=mybackend:make", "--sway-model=served-base", "--sway-adapter=team/adapter-v3"]
    pytester.runpytest(*args).assert_outcomes(passed=1)
    assert hub == []


def test_a_hub_that_cannot_be_reached_is_said_after_the_missing_folder(pytester, monkeypatch, hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    (pytester.path / "model").mkdir()
    (pytester.path / "model" / "config.json").write_text("{}")
    pytester.makepyfile(SUITE)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo_id, **kw: (_ for _ in ()).throw(OSError("no route")))
    result = pytester.runpytest("--sway-model=model", "--sway-adapter=adapters/v3")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(
        [
            f"*--sway-adapter='adapters/v3': no such folder: {pytester.path / 'adapters/v3'}; then tried 'adapters/v3' "
            "as a Hugging Face id: the hub could not be asked (OSError: no route)*"
        ]
    )


@pytest.mark.parametrize(
    "flag, content",
    [
        ("--sway-json", '{"name": "my-package"}'),
        ("--sway-json", "not json at all"),
        ("--sway-html", "<html><title>My docs</title></html>"),
        ("--sway-markdown", "# My release notes\n"),
        ("--sway-save-baseline", None),
    ],
)
def test_an_output_path_holding_another_document_is_refused(pytester, flag, content):
    pytester.makepyfile(SUITE)
    if content is None:  # a JSON report where a baseline would go
        pytester.runpytest("--sway-json=target").assert_outcomes(passed=1)
        content = (pytester.path / "target").read_text()
    else:
        (pytester.path / "target").write_text(content)
    result = pytester.runpytest(f"{flag}=target")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines([f"*{flag}=*target holds *; pytest-sway will not overwrite it*"])
    assert (pytester.path / "target").read_text() == content


@pytest.mark.parametrize("value", [None, "", "  "])
def test_a_step_summary_outside_github_actions_is_a_usage_error(pytester, monkeypatch, value):
    pytester.makepyfile(SUITE)
    if value is None:
        monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    else:
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", value)
    result = pytester.runpytest("--sway-markdown=github")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*--sway-markdown='github': *$GITHUB_STEP_SUMMARY, which is not set*file path*"])


def test_model_folder_that_is_an_adapter_is_a_usage_error(pytester):
    adapter = pytester.mkdir("adapter")
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "org/base"}')
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--sway-model=adapter", "--sway-adapter=adapter")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*is a PEFT adapter, not a model: pass it as --sway-adapter*'org/base'*"])


def test_adapter_folder_without_weights_is_a_usage_error(pytester):
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    adapter = pytester.mkdir("adapter")
    (adapter / "adapter_config.json").write_text("{}")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--sway-model=model", "--sway-adapter=adapter")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*has adapter_config.json but no adapter weights*save the adapter again*"])


def test_finetuned_equal_to_model_is_a_usage_error(pytester):
    pytester.mkdir("model")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--sway-model=model", "--sway-finetuned=./model/")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*name the same checkpoint*every difference would be exactly 0*"])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("tests"), "'tests' is missing"),
        (lambda d: d.update(tests=[]), "'tests' is a list, not a mapping"),
        (lambda d: _entry(d).update(values=_entry(d)["values"][:3]), "has 16 items but 3 values"),
        (lambda d: _entry(d)["values"].__setitem__(0, None), "'values' is [None, *expected a list of finite numbers"),
        (lambda d: _entry(d)["values"].__setitem__(0, "x"), "expected a list of finite numbers"),
        (lambda d: _entry(d).pop("label"), "has no 'label'"),
        (lambda d: _entry(d).update(estimate=None), "'estimate' is None, expected a finite number"),
    ],
)
def test_malformed_baseline_content_is_a_usage_error(pytester, mutate, message):
    pytester.makepyfile(SUITE)
    pytester.runpytest("--sway-save-baseline=base.json").assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "base.json").read_text())
    mutate(doc)
    (pytester.path / "base.json").write_text(json.dumps(doc))
    result = pytester.runpytest("--sway-baseline=base.json", "--sway-max-regression=0.01")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines([f"*base.json is a pytest-sway baseline with malformed content: *{message}*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def _entry(doc):
    return next(iter(doc["tests"].values()))[0]


# -- collection errors (exit 2): markers and items ------------------------------------------


@pytest.mark.parametrize(
    "source, message",
    [
        (
            """
        @pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.01)
        @pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, divergence="tv", below=0.001)
        def test_two():
            pass
        """,
            "2 @pytest.mark.sway_probe markers apply to this test",
        ),
        (
            """
        @pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, below=0.001)
        class TestClass:
            @pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.01)
            def test_method(self):
                pass
        """,
            "2 @pytest.mark.sway_probe markers apply to this test",
        ),
        (
            """
        @pytest.mark.sway_prob("delta_kl", prompts=PROMPTS, below=0.001)
        def test_typo():
            pass
        """,
            "unknown marker @pytest.mark.sway_prob",
        ),
        (
            """
        @pytest.mark.sway_probe("delta_kl", prompts=PROMPTS[:6] * 10, above=0.01)
        def test_repeated():
            pass
        """,
            "54 repeated item(s): item 6 repeats item 0 ('prompt 0')*",
        ),
        (
            """
        @pytest.mark.sway_probe("delta_kl", prompts=set(PROMPTS), above=0.01)
        def test_unordered():
            pass
        """,
            "*got an unordered set*pass a list*",
        ),
        (
            """
        @pytest.mark.sway_probe("completion_lift", cases=[("a", "b"), ("c", "d"), ("a", "b")], above=0.01)
        def test_repeated_pairs():
            pass
        """,
            "item 2 repeats item 0*",
        ),
        (
            """
        @pytest.mark.sway_probe("delta_kl", prompts=PROMPTS + ["bad \\ud800 text"], above=0.01)
        def test_surrogate():
            pass
        """,
            "*item 16 holds '?ud800' at position 4, a lone surrogate*",
        ),
        (
            """
        @pytest.mark.sway_gates(-1)
        def test_gates(sway):
            pass
        """,
            "*@pytest.mark.sway_gates takes one whole number >= 0*",
        ),
        (
            """
        @pytest.mark.sway_probe("delta_kl", prompts={"a": PROMPTS, "b": PROMPTS[:0]}, above=0.01)
        def test_empty_slice():
            pass
        """,
            "*slice 'b' has 0 item(s); a slice's interval needs at least 2*",
        ),
        (
            """
        @pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, groups=[i // 4 for i in range(16)], above=0.01)
        def test_few_groups():
            pass
        """,
            "*groups: 4 group(s) among 16 items; a cluster bootstrap needs at least 5 groups*",
        ),
        (
            """
        @pytest.mark.sway_probe(
            "choice_accuracy", questions=[(p, [" a", " b"], 0) for p in PROMPTS], groups=list(range(16)), above=0.01
        )
        def test_groups_on_tango():
            pass
        """,
            "*closed form that assumes independent items, and has no cluster version*",
        ),
    ],
    ids=[
        "stacked",
        "class-and-method",
        "misspelt",
        "repeated",
        "set",
        "repeated-pairs",
        "surrogate",
        "gates",
        "empty-slice",
        "few-groups",
        "groups-on-tango",
    ],
)
def test_marker_and_item_problems_are_collection_errors(pytester, source, message):
    import textwrap

    pytester.makepyfile("import pytest\nPROMPTS = [f'prompt {i}' for i in range(16)]\n" + textwrap.dedent(source))
    result = pytester.runpytest()
    assert result.ret == COLLECT
    result.stdout.fnmatch_lines(["*ERROR collecting*", f"*{message}*"])
    assert "passed" not in result.stdout.lines[-1]


def test_a_marker_on_a_unittest_method_is_checked_not_dropped(pytester):
    pytester.makepyfile(
        """
        import unittest, pytest
        PROMPTS = [f"prompt {i}" for i in range(16)]

        class TestCase(unittest.TestCase):
            @pytest.mark.sway_probe("delta_kl", prompts=PROMPTS * 2, above=0.01)
            def test_repeated(self):
                pass

            @pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, below=0.0001)
            def test_gate(self):
                pass
        """
    )
    result = pytester.runpytest("--sway-json=out.json")
    assert result.ret == FAILED
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(["*test_repeated*16 repeated item(s)*"])
    result.stdout.fnmatch_lines(["*FAILED: delta_kl(js) 95% CI * lies wholly above 0.0001*"])


def test_registering_a_probe_under_a_builtin_name_is_a_clear_error(pytester):
    pytester.makeconftest(
        """
        from pytest_sway import Measurement, Param, Probe
        from pytest_sway.probes.base import text_list

        def pytest_sway_register_probes(registry):
            registry.add(Probe("delta_kl", "mine", (Param("prompts", text_list),),
                               lambda b, p, s: Measurement([0.0] * len(p["prompts"]), items=p["prompts"])))
        """
    )
    pytester.makepyfile(SUITE)
    result = pytester.runpytest()
    assert result.ret == COLLECT
    result.stdout.fnmatch_lines(
        ["*a probe named 'delta_kl' is already registered (a built-in probe); register yours under another name*"]
    )


# -- failed tests (exit 1): user probes and Bonferroni --------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "return Measurement(np.where(np.arange(n) == 3, np.nan, 0.1), items=p['prompts'])",
            "probe 'mine' returned nan for item 3 ('prompt 3'); every value must be a finite number",
        ),
        (
            "return Measurement(np.zeros(n - 1), items=p['prompts'])",
            "probe 'mine' returned 15 value(s) (shape (15,)) for 16 items*",
        ),
        ("raise KeyError('oops')", "probe 'mine' raised KeyError: 'oops' (*conftest.py:* in measure)"),
        ("return [0.0] * n", "probe 'mine' returned list, not a pytest_sway.Measurement"),
    ],
    ids=["nan", "count", "raises", "not-a-measurement"],
)
def test_a_user_probe_that_misbehaves_fails_naming_the_probe_and_item(pytester, body, message):
    pytester.makeconftest(
        f"""
        import numpy as np
        from pytest_sway import Measurement, Param, Probe
        from pytest_sway.probes.base import text_list

        def measure(backend, p, bootstrap):
            n = len(p["prompts"])
            {body}

        def pytest_sway_register_probes(registry):
            registry.add(Probe("mine", "a user probe", (Param("prompts", text_list),), measure))
        """
    )
    pytester.makepyfile(SUITE.replace('"delta_kl"', '"mine"'))
    result = pytester.runpytest()
    assert result.ret == FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{message}*"])
    assert "stats.py" not in result.stdout.str()


def test_a_backend_that_cannot_be_built_is_reported_once(pytester, tmp_path):
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    adapter = pytester.mkdir("adapter")
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    pytester.makeconftest(
        """
        from pytest_sway import SwayError
        def pytest_sway_make_backend(settings):
            raise SwayError("the GPU is on fire")
        """
    )
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-rE")
    assert result.ret == FAILED
    result.assert_outcomes(errors=1)
    text = result.stdout.str()
    # Once in the error (the short summary line may repeat it, cut to the terminal's width or not).
    shown = [line for line in result.stdout.lines if "the GPU is on fire" in line and not line.startswith("ERROR ")]
    assert len(shown) == 1, text
    assert "During handling of the above exception" not in text


BONFERRONI_SUITE = """
import pytest
PROMPTS = [f"prompt {i}" for i in range(16)]

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.001)
def test_marker():
    pass

def test_three_gates(sway):
    r = sway.delta_kl(PROMPTS)
    r.assert_above(0.001)
    sway.delta_kl(PROMPTS, divergence="tv").assert_above(0.001)
    r.assert_below(0.5)

def test_reported_only(sway):
    sway.delta_kl(PROMPTS)
"""


def test_bonferroni_fails_a_body_that_judges_more_gates_than_counted(pytester):
    pytester.makepyfile(BONFERRONI_SUITE)
    result = pytester.runpytest("--sway-correction=bonferroni")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_three_gates judged 3 gates in its body (assert_above/assert_below), but the Bonferroni "
            "correction counted 1 for it (m=3)*add @pytest.mark.sway_gates(3)*"
        ]
    )


def test_bonferroni_counts_declared_gates_and_the_footer_says_so(pytester):
    pytester.makepyfile(
        BONFERRONI_SUITE.replace("def test_three_gates", "@pytest.mark.sway_gates(3)\ndef test_three_gates").replace(
            "def test_reported_only", "@pytest.mark.sway_gates(0)\ndef test_reported_only"
        )
    )
    result = pytester.runpytest("--sway-correction=bonferroni", "--sway-json=out.json")
    result.assert_outcomes(passed=3)
    m = 1 + 3 + 0
    result.stdout.fnmatch_lines([f"* · bonferroni over m={m} gates: each CI at 0.9875 · seed 0"])
    doc = _report(pytester)
    assert doc["correction"] == {"method": "bonferroni", "m": m}
    assert all(r["confidence"] == pytest.approx(1 - 0.05 / m) for r in doc["results"])
    judged = sum(1 for r in doc["results"] if r["outcome"] != "reported")
    assert judged == 3  # rows: the marker's, and two results judged in the body (one of them twice)


def test_bonferroni_counts_the_regression_gate_of_a_marker(pytester):
    pytester.makepyfile(SUITE)
    pytester.runpytest("--sway-save-baseline=base.json").assert_outcomes(passed=1)
    result = pytester.runpytest(
        "--sway-correction=bonferroni", "--sway-baseline=base.json", "--sway-max-regression=0.5", "--sway-json=out.json"
    )
    result.assert_outcomes(passed=1)
    assert _report(pytester)["correction"]["m"] == 2


# -- files: nothing is lost ----------------------------------------------------------------------


def test_a_report_keeps_its_permissions(pytester):
    pytester.makepyfile(SUITE)
    pytester.runpytest("--sway-json=out.json").assert_outcomes(passed=1)
    os.chmod(pytester.path / "out.json", 0o600)
    pytester.runpytest("--sway-json=out.json").assert_outcomes(passed=1)
    assert stat.S_IMODE(os.stat(pytester.path / "out.json").st_mode) == 0o600


def test_a_symlinked_report_is_written_through_to_its_target(pytester):
    pytester.makepyfile(SUITE)
    pytester.mkdir("reports")
    os.symlink("reports/real.json", pytester.path / "out.json")
    pytester.runpytest("--sway-json=out.json").assert_outcomes(passed=1)
    assert os.path.islink(pytester.path / "out.json")
    assert _report(pytester, "reports/real.json")["results"][0]["outcome"] == "passed"


def test_dev_null_stays_a_device(pytester):
    pytester.makepyfile(SUITE)
    # Any number of outputs, pytest's too, may go there: nothing is lost.
    result = pytester.runpytest("--sway-json=/dev/null", "--sway-html=/dev/null", "--junitxml=/dev/null")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["sway: JSON report written to /dev/null", "sway: HTML report written to /dev/null"])
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_is_written_into_not_replaced(pytester):
    pytester.makepyfile(SUITE)
    fifo = pytester.path / "pipe"
    os.mkfifo(fifo)
    received = []

    def read():
        with open(fifo) as fh:
            received.append(fh.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    pytester.runpytest("--sway-json=pipe").assert_outcomes(passed=1)
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert json.loads(received[0])["results"][0]["kind"] == "delta_kl"


@pytest.mark.parametrize("args, code", [(["--co"], pytest.ExitCode.OK), (["-k", "nothing_matches"], NO_TESTS)])
def test_a_run_without_sway_results_leaves_reports_and_baselines_alone(pytester, args, code):
    pytester.makepyfile(SUITE, test_other="def test_plain():\n    pass\n")
    pytester.makeini("[pytest]\nsway_json = out.json\nsway_save_baseline = base.json\nsway_html = page.html\n")
    pytester.runpytest().assert_outcomes(passed=2)
    before = {name: (pytester.path / name).read_text() for name in ("out.json", "base.json", "page.html")}
    for run in (args, ["test_other.py"]):
        result = pytester.runpytest(*run)
        assert result.ret == (code if run is args else pytest.ExitCode.OK)
        result.stdout.fnmatch_lines(["*sway: no sway results in this run; JSON report *out.json left as it was*"])
        assert {name: (pytester.path / name).read_text() for name in before} == before


BROKEN_ON = """
import os
if {condition}:
    raise ImportError("this module does not import here")

def test_broken_module():
    pass
"""


@pytest.mark.parametrize(
    "args, condition",
    [
        (["-n", "2"], "True"),  # every worker: xdist reports it, runs the rest, and exits 1 (serial: 2)
        (["-n", "2"], "os.environ.get('PYTEST_XDIST_WORKER') == 'gw1'"),  # one worker: xdist runs nothing
        (["--continue-on-collection-errors"], "True"),  # serial, made to run the rest
        ([], "True"),  # serial: pytest stops (exit 2)
    ],
)
def test_a_run_with_a_collection_error_leaves_every_report_and_the_baseline_as_they_were(pytester, args, condition):
    # The JSON, Markdown, HTML and baseline would lose the uncollected tests, whatever the exit code.
    pytest.importorskip("xdist")
    pytester.makepyfile(test_sway=SUITE.replace("def test_moves():", "def test_moves():\n    pass\n\ndef test_x():"))
    outputs = {"out.json": "--sway-json", "page.html": "--sway-html", "sum.md": "--sway-markdown"}
    outputs["base.json"] = "--sway-save-baseline"
    flags = [f"{flag}={name}" for name, flag in outputs.items()]
    pytester.runpytest(*flags).assert_outcomes(passed=2)
    before = {name: (pytester.path / name).read_bytes() for name in outputs}
    pytester.makepyfile(test_broken=BROKEN_ON.format(condition=condition))
    result = pytester.runpytest(*flags, *args)
    assert result.ret != pytest.ExitCode.OK
    assert {name: (pytester.path / name).read_bytes() for name in outputs} == before
    result.stdout.fnmatch_lines(
        [
            f"sway: collection incomplete (* during collection: *); {kind} *{name} left as it was"
            for name, kind in (("out.json", "JSON report"), ("base.json", "baseline"))
        ],
        consecutive=False,
    )


def test_a_run_in_which_an_xdist_worker_crashed_leaves_every_report_as_it_was(pytester, monkeypatch):
    # xdist restarts the worker and runs the rest: the crashed test has no result, and the baseline
    # would lose its entry (a serial run that crashes writes nothing).
    pytest.importorskip("xdist")
    # Only the subprocess run below crashes: this test may itself run on an xdist worker, whose
    # in-process pytester runs see PYTEST_XDIST_WORKER too.
    pytester.makepyfile(
        test_sway=SUITE + "\n@pytest.mark.sway_probe('delta_kl', prompts=PROMPTS)\ndef test_crashes():\n"
        "    import os\n    if os.environ.get('SWAY_TEST_CRASH') == '1' and 'PYTEST_XDIST_WORKER' in os.environ:\n"
        "        os._exit(1)\n"
    )
    flags = ["--sway-json=out.json", "--sway-save-baseline=base.json"]
    pytester.runpytest(*flags).assert_outcomes(passed=2)
    before = {name: (pytester.path / name).read_bytes() for name in ("out.json", "base.json")}
    assert b"test_crashes" in before["base.json"]
    monkeypatch.setenv("SWAY_TEST_CRASH", "1")
    result = pytester.runpytest_subprocess(*flags, "-n", "2", "-p", "no:cacheprovider")
    assert result.ret == FAILED
    assert {name: (pytester.path / name).read_bytes() for name in before} == before
    result.stdout.fnmatch_lines(
        ["sway: an xdist worker crashed while running test_sway.py::test_crashes; JSON report *out.json left as it was"]
    )


def test_a_run_whose_probe_could_not_run_keeps_the_previous_baseline(pytester):
    pytester.makepyfile(SUITE)
    pytester.runpytest("--sway-save-baseline=base.json").assert_outcomes(passed=1)
    saved = (pytester.path / "base.json").read_text()
    pytester.makeconftest(
        """
        from pytest_sway import SwayError
        def pytest_sway_make_backend(settings):
            raise SwayError("no model today")
        """
    )
    result = pytester.runpytest("--sway-save-baseline=base.json")
    assert result.ret == FAILED
    result.stdout.fnmatch_lines(["*sway: baseline *base.json left as it was: 1 sway test(s) measured nothing*"])
    assert (pytester.path / "base.json").read_text() == saved


def test_bonferroni_counts_a_gate_judged_on_the_marker_result_in_the_body(pytester):
    source = """
import pytest
PROMPTS = [f"prompt {i}" for i in range(16)]

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.001)
def test_marker_then_body(sway_result):
    sway_result.assert_below(0.5)

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, divergence="tv")
def test_reported_marker_read_in_the_body(sway_result):
    assert sway_result.n == 16
"""
    pytester.makepyfile(source)
    result = pytester.runpytest("--sway-correction=bonferroni")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_marker_then_body judged 1 gates in its body*counted 0 for it (m=1)*"])
    pytester.makepyfile(
        source.replace("def test_marker_then_body", "@pytest.mark.sway_gates(1)\ndef test_marker_then_body")
    )
    result = pytester.runpytest("--sway-correction=bonferroni", "--sway-json=out.json")
    result.assert_outcomes(passed=2)
    assert _report(pytester)["correction"]["m"] == 2
    result.stdout.fnmatch_lines(["* · bonferroni over m=2 gates: each CI at 0.975 · seed 0"])
