"""The pytest surface, end to end through pytester."""

import json
import math
import xml.etree.ElementTree as ET

import pytest

from pytest_sway.measure.run import derive_seed

PROMPTS = [f"Customer question {i}: how do I reset my password?" for i in range(16)]

SUITE = f"""
import pytest
PROMPTS = {PROMPTS!r}

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, above=0.01)
def test_moves(sway_result):
    assert sway_result.n == 16

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, below=0.01)
def test_leaves_alone():
    pass

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS[:6], divergence="tv")
def test_reported():
    pass

def test_fixture(sway):
    sway.delta_kl(PROMPTS[:8]).assert_above(0.001)

def test_plain():
    pass
"""


def run_json(pytester, *args):
    result = pytester.runpytest("--sway-json=out.json", "-p", "no:cacheprovider", *args)
    return result, json.loads((pytester.path / "out.json").read_text())


# -- options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, message",
    [
        ("--sway-confidence=1.5", "--sway-confidence='1.5': must be a number strictly between 0 and 1"),
        ("--sway-confidence=high", "--sway-confidence='high': expected a number strictly between 0 and 1"),
        ("--sway-resamples=-3", "--sway-resamples='-3': must be at least 1"),
        ("--sway-resamples=lots", "--sway-resamples='lots': expected an integer"),
        ("--sway-seed=-1", "--sway-seed='-1': must be at least 0"),
        (
            "--sway-ci-method=wild",
            "--sway-ci-method='wild': unknown CI method; choose one of studentized, bca, percentile",
        ),
        ("--sway-backend=nomodule_xyz:make", "--sway-backend='nomodule_xyz:make': cannot import module 'nomodule_xyz'"),
        ("--sway-backend=json:nothing_here", "module 'json' has no callable 'nothing_here'"),
        ("--sway-backend=mystery", "expected auto, dummy, hf, vllm, or module:factory"),
        ("--sway-json=no/such/folder/out.json", "folder"),
        ("--sway-model=./no/such/model", "--sway-model='./no/such/model': no such folder"),
        ("--sway-adapter=./adapter", "no such folder"),
        ("--sway-backend=hf", "--sway-backend=hf needs a model"),
    ],
)
def test_bad_option_values_are_usage_errors_before_any_test_runs(pytester, option, message):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-sway: *{message}*"])
    assert "passed" not in result.stdout.str()


def test_adapter_without_model_is_a_usage_error(pytester):
    (pytester.path / "adapter").mkdir()
    (pytester.path / "adapter" / "adapter_config.json").write_text("{}")
    (pytester.path / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    result = pytester.runpytest("--sway-adapter=adapter")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sway-adapter is set but no base model: add --sway-model*"])


def test_a_folder_without_adapter_config_is_not_an_adapter(pytester):
    (pytester.path / "notadapter").mkdir()
    (pytester.path / "model").mkdir()
    result = pytester.runpytest("--sway-model=model", "--sway-adapter=notadapter")
    result.stderr.fnmatch_lines(["*--sway-adapter='notadapter': *holds no adapter_config.json*"])


def test_ini_values_apply_and_the_command_line_wins(pytester):
    pytester.makeini("[pytest]\nsway_seed = 7\nsway_confidence = 0.9\nsway_resamples = 500\n")
    pytester.makepyfile(SUITE)
    _, doc = run_json(pytester)
    assert (doc["settings"]["seed"], doc["settings"]["confidence"], doc["settings"]["resamples"]) == (7, 0.9, 500)
    assert {r["confidence"] for r in doc["results"]} == {0.9}
    _, doc = run_json(pytester, "--sway-seed=8", "--sway-resamples=600")
    assert (doc["settings"]["seed"], doc["settings"]["confidence"], doc["settings"]["resamples"]) == (8, 0.9, 600)


def test_bad_ini_value_names_the_ini_option(pytester):
    pytester.makeini("[pytest]\nsway_resamples = 0\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini option sway_resamples='0': must be at least 1*"])


def test_ini_paths_are_relative_to_the_ini_file(pytester):
    (pytester.path / "reports").mkdir()
    pytester.makeini("[pytest]\nsway_json = reports/sway.json\n")
    pytester.makepyfile(SUITE)
    sub = pytester.mkdir("elsewhere")
    result = pytester.runpytest(
        "--rootdir",
        str(pytester.path),
        "-c",
        str(pytester.path / "tox.ini"),
        str(pytester.path),
        "-p",
        "no:cacheprovider",
    )
    del sub
    result.assert_outcomes(passed=4, failed=1)
    assert (pytester.path / "reports" / "sway.json").is_file()


def test_report_header_and_help(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--sway-seed=3")
    result.stdout.fnmatch_lines(["sway: backend dummy, seed 3"])
    help_text = pytester.runpytest("--help").stdout.str()
    for flag, default in [
        ("--sway-model", None),
        ("--sway-adapter", None),
        ("--sway-backend", "auto"),
        ("--sway-seed", "0"),
        ("--sway-confidence", "0.95"),
        ("--sway-resamples", "9999, raised where the confidence level needs more; at most 1000000"),
        ("--sway-ci-method", "studentized"),
        ("--sway-json", None),
    ]:
        assert flag in help_text
        if default is not None:
            section = help_text.split(flag, 1)[1].split("--sway-", 1)[0]
            assert f"(default: {default})" in " ".join(section.split())
    for ini in (
        "sway_model",
        "sway_adapter",
        "sway_backend",
        "sway_seed",
        "sway_confidence",
        "sway_resamples",
        "sway_ci_method",
        "sway_json",
    ):
        assert ini in help_text


def test_marker_is_registered_with_its_signature(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.sway_probe(kind, *, above=None, below=None, confidence=None, resamples=None, method=None, max_regression=None, **params):*"
        ]
    )
    pytester.makepyfile(SUITE)
    pytester.runpytest("--strict-markers").assert_outcomes(passed=4, failed=1)


# -- marker validation --------------------------------------------------------------


@pytest.mark.parametrize(
    "marker, message",
    [
        (
            '"delta_kI", prompts=["a", "b"]',
            "unknown probe kind 'delta_kI'; known kinds: adapter_ablation, choice_accuracy, completion_lift, delta_kl, greedy_change, null_contrast, perplexity_shift, preference_shift, response_divergence",
        ),
        ('"delta_kl", prompts=["a", "b"], promtps=["b"]', "delta_kl: unknown parameter(s) 'promtps'"),
        ('"delta_kl"', "delta_kl: missing required parameter 'prompts'"),
        ('"delta_kl", prompts="a"', "parameter 'prompts': no such items file"),
        ('"delta_kl", prompts=["a", "b"], divergence="jsd"', "parameter 'divergence': expected one of"),
        ('"delta_kl", prompts=["a", "b"], above="0.1"', "above: expected a number"),
        ('"delta_kl", prompts=["a", "b"], above=0.5, below=0.1', "`above` must be smaller than `below`"),
        ('"delta_kl", prompts=["a", "b"], above=0.1, below=0.1', "`above` must be smaller than `below`"),
        ('"delta_kl", prompts=["a", "b"], confidence=1.5', "confidence: must lie strictly between 0 and 1"),
        ('"delta_kl", prompts=["a", "b"], confidence=0', "confidence: must lie strictly between 0 and 1"),
        ('"delta_kl", prompts=["a", "b"], resamples=0', "resamples: must be at least 1"),
        ('"delta_kl", prompts=["a", "b"], method="wild"', "method: unknown CI method 'wild'"),
        ('prompts=["a", "b"]', "expected exactly one positional argument, the probe kind, got 0"),
    ],
)
def test_bad_markers_are_collection_errors_naming_the_test(pytester, marker, message):
    pytester.makepyfile(
        f"""
        import pytest
        @pytest.mark.sway_probe({marker})
        def test_bad():
            pass
        def test_good():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    text = result.stdout.str()
    assert "ERROR collecting" in text
    assert (
        "test_bad_markers_are_collection_errors_naming_the_test.py::test_bad: invalid @pytest.mark.sway_probe: " in text
    )
    assert message in text
    assert "Traceback" not in text and "pytest_sway/" not in text


# -- running, gates, fixtures -----------------------------------------------------------


def test_gates_pass_fail_and_explain(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_leaves_alone _*",
            "FAILED: delta_kl(js) 95% CI [[]*[]] lies wholly above 0.01.",
            "delta_kl(js): estimate *, 95% CI [[]*[]] (n=16, studentized bootstrap, 9999 resamples, seed *); gate needs CI high <= 0.01.",
        ]
    )


def test_inconclusive_gate_fails_and_says_how_many_items_would_resolve_it(pytester):
    pytester.makepyfile(
        f"""
        import pytest
        @pytest.mark.sway_probe("delta_kl", prompts={PROMPTS[:6]!r}, above=0.02)
        def test_underpowered():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "INCONCLUSIVE: delta_kl(js) 95% CI [[]*[]] straddles 0.02. If the values held as they are, "
            "about * items (now 6) would bring the CI low up to 0.02 and pass."
        ]
    )
    verbose = pytester.runpytest("-p", "no:cacheprovider", "-vv")  # -vv: the summary line is not cut to the width
    verbose.stdout.fnmatch_lines(
        ["FAILED test_inconclusive*::test_underpowered - Failed: INCONCLUSIVE: delta_kl(js) 95% CI *"]
    )
    result.stdout.fnmatch_lines(["*test_underpowered*delta_kl(js)*>= 0.02*FAILED (inconclusive: ~* items)"])


def test_body_runs_after_a_passing_gate_and_can_fail_the_test(pytester):
    pytester.makepyfile(
        f"""
        import pytest
        @pytest.mark.sway_probe("delta_kl", prompts={PROMPTS!r}, above=0.0)
        def test_extra(sway_result):
            assert sway_result.estimate > 10, "extra check"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: extra check*"])


def test_a_failing_gate_skips_the_body(pytester):
    pytester.makepyfile(
        f"""
        import pytest
        @pytest.mark.sway_probe("delta_kl", prompts={PROMPTS!r}, above=0.6)
        def test_gate(sway_result):
            raise RuntimeError("body ran")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "body ran" not in result.stdout.str()


def test_sway_result_without_the_marker_is_a_clear_error(pytester):
    pytester.makepyfile("def test_no_marker(sway_result):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*test_no_marker uses the `sway_result` fixture but has no @pytest.mark.sway_probe(...) marker*"]
    )


def test_keyword_marker_parametrize_and_class_selection(pytester):
    pytester.makeini("[pytest]\nmarkers = slow: slow tests\n")
    pytester.makepyfile(
        f"""
        import pytest
        @pytest.mark.slow
        @pytest.mark.sway_probe("delta_kl", prompts={PROMPTS!r}, above=0.001)
        def test_slow_one():
            pass

        @pytest.mark.sway_probe("delta_kl", prompts={PROMPTS!r}, above=0.001)
        def test_fast_one():
            pass

        @pytest.mark.parametrize("divergence", ["js", "tv"])
        def test_div(sway, divergence):
            sway.delta_kl({PROMPTS!r}, divergence=divergence).assert_above(0.001)

        @pytest.mark.sway_probe("delta_kl", prompts={PROMPTS!r}, above=0.001)
        class TestGrouped:
            def test_a(self, sway_result):
                assert sway_result.n == 16
            def test_b(self):
                pass
        """
    )
    pytester.runpytest("-m", "slow").assert_outcomes(passed=1, deselected=5)
    pytester.runpytest("-k", "fast_one or test_div").assert_outcomes(passed=3, deselected=3)
    result = pytester.runpytest("-k", "TestGrouped", "--sway-json=out.json")
    result.assert_outcomes(passed=2, deselected=4)
    doc = json.loads((pytester.path / "out.json").read_text())
    assert [r["nodeid"].split("::", 1)[1] for r in doc["results"]] == ["TestGrouped::test_a", "TestGrouped::test_b"]


def test_backend_is_built_once_lazily_and_a_failure_fails_every_sway_test(pytester):
    pytester.makeconftest(
        """
        import pathlib
        from pytest_sway import SwayError

        def pytest_sway_make_backend(settings):
            calls = pathlib.Path("calls.txt")
            calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
            raise SwayError("weights are corrupt (test)")
        """
    )
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "not fixture", "--sway-json=out.json")
    result.assert_outcomes(passed=1, errors=3)
    assert (pytester.path / "calls.txt").read_text() == "x"
    assert result.stdout.str().count("the dummy backend could not be built: weights are corrupt (test)") >= 3
    doc = json.loads((pytester.path / "out.json").read_text())
    assert [r["outcome"] for r in doc["results"]] == ["error"] * 3
    assert all("weights are corrupt" in r["message"] for r in doc["results"])
    # Only non-sway tests selected: the backend is never built.
    (pytester.path / "calls.txt").unlink()
    pytester.runpytest("-k", "plain").assert_outcomes(passed=1, deselected=4)
    assert not (pytester.path / "calls.txt").exists()


def test_module_factory_backend(pytester):
    pytester.makepyfile(
        mybackends="""
        from pytest_sway import DummyBackend
        def make(settings):
            return DummyBackend(effect=0.0)
        """,
        test_it=f"""
        import pytest
        @pytest.mark.sway_probe("delta_kl", prompts={PROMPTS!r})
        def test_nothing_moves(sway_result):
            assert sway_result.estimate == 0.0 and sway_result.ci.low == 0.0
        """,
    )
    pytester.syspathinsert()
    result = pytester.runpytest("--sway-backend=mybackends:make", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["sway: backend mybackends:make, seed 0"])


def _docstring_examples(hook):
    """The indented code blocks of a hookspec's docstring, dedented."""
    import textwrap

    blocks, current = [], None
    for line in hook.__doc__.splitlines():
        if line.rstrip().endswith("::"):
            current = []
            blocks.append(current)
        elif current is not None and (line.startswith(" " * 8) or not line.strip()):
            current.append(line)
        elif current is not None and line.strip():
            current = None
    return [textwrap.dedent("\n".join(b)).strip() + "\n" for b in blocks]


def test_hookspec_docstring_examples_work_from_a_conftest(pytester):
    from pytest_sway import hookspecs

    (backend_conftest,) = _docstring_examples(hookspecs.pytest_sway_make_backend)
    probe_conftest, probe_test = _docstring_examples(hookspecs.pytest_sway_register_probes)
    pytester.makeconftest(backend_conftest + "\n" + probe_conftest)
    pytester.makepyfile(
        "import pytest\n\n" + probe_test + "\n\ndef test_gentle(sway):\n    assert sway.backend.effect == 0.2\n"
    )
    result = pytester.runpytest("--sway-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["results"][0]["kind"] == "js_distance"
    assert doc["backend"]["effect"] == 0.2


def test_conftest_probes_apply_to_their_folder(pytester):
    pytester.makepyfile(
        **{
            "a/test_a": f"""
        import pytest
        @pytest.mark.sway_probe("local_probe", prompts={PROMPTS[:4]!r})
        def test_uses_local():
            pass
        """
        }
    )
    (pytester.path / "b").mkdir()
    (pytester.path / "b" / "conftest.py").write_text(
        "from pytest_sway import Measurement, Param, Probe\n"
        "from pytest_sway.probes.base import text_list\n"
        "def pytest_sway_register_probes(registry):\n"
        "    registry.add(Probe('local_probe', '', (Param('prompts', text_list),),\n"
        "        lambda b, p, s: Measurement([1.0] * len(p['prompts']), items=p['prompts'], support=(0, 1))))\n"
    )
    (pytester.path / "b" / "test_b.py").write_text(
        "import pytest\n"
        f"@pytest.mark.sway_probe('local_probe', prompts={PROMPTS[:4]!r}, above=0.3)\n"
        "def test_local():\n    pass\n"
    )
    pytester.runpytest("b").assert_outcomes(passed=1)
    result = pytester.runpytest("a", "b")
    result.stdout.fnmatch_lines(
        ["*a/test_a.py::test_uses_local: invalid @pytest.mark.sway_probe: unknown probe kind 'local_probe'*"]
    )


# -- reports ----------------------------------------------------------------------------


def test_terminal_summary(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        [
            "*= sway =*",
            "test * probe * n * estimate * 95% CI * gate * outcome",
            "test_moves * delta_kl(js) * 16 * [[]*, *[]] * >= 0.01 * passed",
            "test_leaves_alone * delta_kl(js) * 16 * <= 0.01 * FAILED",
            "test_reported * delta_kl(tv) * 6 * - * reported",
            "test_fixture * delta_kl(js) * 8 * >= 0.001 * passed",
            "backend dummy (effect 0.5) · studentized bootstrap, 9999 resamples · confidence 0.95 · seed 0",
        ]
    )


def test_no_summary_without_sway_tests(pytester):
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest()
    assert "sway" not in result.stdout.str().split("passed")[-1]
    assert "= sway =" not in result.stdout.str()


def test_json_report(pytester):
    pytester.makepyfile(SUITE)
    _, doc = run_json(pytester)
    assert doc["schema"] == 2
    assert doc["backend"] == {"name": "dummy", "effect": 0.5, "vocab_size": 64, "seed": 0}
    assert doc["settings"]["ci_method"] == "studentized"
    results = doc["results"]
    assert [r["nodeid"].split("::")[1] for r in results] == [
        "test_moves",
        "test_leaves_alone",
        "test_reported",
        "test_fixture",
    ]
    first = results[0]
    for key in (
        "nodeid",
        "kind",
        "params",
        "n",
        "estimate",
        "ci_low",
        "ci_high",
        "confidence",
        "ci_method",
        "resamples",
        "support",
        "seed",
        "above",
        "below",
        "outcome",
        "values",
        "duration_s",
    ):
        assert key in first
    assert first["params"] == {"prompts": {"count": 16}, "divergence": "js", "chat": False}
    assert first["seed"] == derive_seed(0, first["nodeid"])
    assert first["ci_method"] == "studentized" and first["support"] == [0.0, pytest.approx(math.log(2))]
    assert (first["above"], first["below"], first["outcome"]) == (0.01, None, "passed")
    assert results[1]["outcome"] == "failed" and results[2]["outcome"] == "reported"
    assert results[3]["source"] == "fixture" and results[3]["above"] == 0.001
    assert first["duration_s"] > 0
    # The values are the probe's, in prompt order.
    from pytest_sway import DummyBackend, run_probe

    direct = run_probe("delta_kl", DummyBackend(), prompts=PROMPTS, seed=first["seed"])
    assert first["values"] == direct.values.tolist()
    assert (first["ci_low"], first["ci_high"]) == tuple(direct.ci)


def test_a_tests_results_are_let_go_once_its_report_is_built(pytester):
    """A session keeps each test's rows for the reports, not its ProbeResults: those hold
    every prompt's value and token lists, and with them kept memory grew with every test."""
    pytester.makepyfile(
        """
        import gc, weakref
        import pytest

        KEPT = []

        @pytest.mark.sway_probe("delta_kl", prompts=["a", "b", "c", "d"], above=0.0)
        def test_marker(sway_result):
            KEPT.append(weakref.ref(sway_result))

        def test_body(sway):
            KEPT.append(weakref.ref(sway.delta_kl(["a", "b", "c"])))

        def test_afterwards():
            gc.collect()
            assert len(KEPT) == 2 and [ref() for ref in KEPT] == [None, None]
        """
    )
    result, doc = run_json(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert [len(r["details"]["token_changes"]) for r in doc["results"]] == [4, 3]
    assert doc["results"][0]["details"]["token_changes"][3]["prompt"] == "d"


def test_json_left_intact_when_the_run_is_interrupted(pytester):
    out = pytester.path / "out.json"
    previous = '{"kind": "pytest-sway report", "schema": 1, "backend": {}, "results": []}\n'
    out.write_text(previous)
    pytester.makepyfile(SUITE, test_broken="import nonexistent_module_xyz\n")
    result = pytester.runpytest("--sway-json=out.json")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert out.read_text() == previous
    result.stdout.fnmatch_lines(
        ["*sway: collection incomplete (1 error during collection: test_broken.py); *out.json left as it was*"]
    )


def test_junit_properties(pytester):
    pytester.makepyfile(SUITE)
    pytester.runpytest("--junitxml=junit.xml", "-p", "no:cacheprovider")
    root = ET.parse(pytester.path / "junit.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_moves"].iter("property")}
    assert props["sway.kind"] == "delta_kl" and props["sway.label"] == "delta_kl(js)"
    assert props["sway.n"] == "16" and props["sway.outcome"] == "passed" and props["sway.above"] == "0.01"
    assert props["sway.below"] == "" and props["sway.message"] == ""  # always present, empty when not set
    assert float(props["sway.ci_low"]) <= float(props["sway.estimate"]) <= float(props["sway.ci_high"])
    assert len(json.loads(props["sway.values"])) == 16
    failed = {p.get("name"): p.get("value") for p in cases["test_leaves_alone"].iter("property")}
    assert failed["sway.outcome"] == "failed" and "lies wholly above 0.01" in failed["sway.message"]
    assert not list(cases["test_plain"].iter("property"))


# -- seeds and xdist -------------------------------------------------------------------------


def test_each_test_gets_the_same_ci_alone_in_a_full_run_and_in_reverse(pytester):
    pytester.makepyfile(SUITE)
    _, full = run_json(pytester)
    _, alone = run_json(pytester, "-k", "test_leaves_alone")
    full_rows = {r["nodeid"]: r for r in full["results"]}
    row = alone["results"][0]
    assert (row["ci_low"], row["ci_high"], row["seed"]) == tuple(
        full_rows[row["nodeid"]][k] for k in ("ci_low", "ci_high", "seed")
    )
    # Different tests on the same prompts get different seeds; --sway-seed changes them all.
    seeds = [r["seed"] for r in full["results"]]
    assert len(set(seeds)) == len(seeds)
    _, other = run_json(pytester, "--sway-seed=1")
    assert all(a["seed"] != b["seed"] for a, b in zip(full["results"], other["results"]))


def test_plugin_never_touches_global_random_state(pytester):
    pytester.makepyfile(
        f"""
        import random
        import numpy as np
        import pytest

        random.seed(123)
        np.random.seed(123)
        EXPECTED = (random.Random(123).random(), np.random.RandomState(123).random_sample())

        @pytest.mark.sway_probe("delta_kl", prompts={PROMPTS!r}, above=0.001)
        def test_a_sway_test(sway):
            sway.delta_kl({PROMPTS!r})

        def test_global_state_is_untouched():
            assert (random.random(), np.random.random_sample()) == EXPECTED
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


def _comparable(doc):
    for r in doc["results"]:
        r.pop("duration_s")
    doc["settings"].pop("json")
    return doc


def test_xdist_gives_the_serial_results(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(SUITE, test_more=SUITE.replace("def test_", "def test_more_"))
    _, serial = run_json(pytester)
    result, parallel = run_json(pytester, "-n", "2")
    result.assert_outcomes(passed=8, failed=2)
    result.stdout.fnmatch_lines(["*= sway =*", "*test_more.py::test_more_moves*passed"])
    assert len(serial["results"]) == 8
    assert _comparable(parallel) == _comparable(serial)
