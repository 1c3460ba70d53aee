"""Merge gating: Bonferroni correction, saved baselines and paired comparisons against them."""

import json
import math

import pytest

from pytest_sway.stats.methods import bonferroni

PROMPTS = [f"Support question {i}: where is my parcel?" for i in range(16)]

FACTORY = """
from pytest_sway import DummyBackend

def weaker(settings):
    return DummyBackend(effect=0.3)

def other_model(settings):
    return DummyBackend(seed=7)

def stronger(settings):
    return DummyBackend(effect=1.0)
"""


def gated_suite(n_tests=5, prompts=PROMPTS, extra=""):
    body = "import pytest\n"
    for i in range(n_tests):
        body += (
            f"\n@pytest.mark.sway_probe('delta_kl', prompts={prompts!r}, above=0.005{extra})\n"
            f"def test_gate_{i}():\n    pass\n"
        )
    return body + "\ndef test_reported(sway):\n    sway.delta_kl(" + repr(prompts[:8]) + ")\n"


def run(pytester, *args):
    result = pytester.runpytest("-p", "no:cacheprovider", "--sway-json=out.json", *args)
    return result, json.loads((pytester.path / "out.json").read_text())


# -- Bonferroni --------------------------------------------------------------------------


def test_bonferroni_widens_every_ci_to_the_family_level(pytester):
    pytester.makepyfile(gated_suite())
    _, plain = run(pytester)
    result, corrected = run(pytester, "--sway-correction=bonferroni")
    m = 6  # five gated markers + one test using the `sway` fixture (one gate unless it declares sway_gates(n))
    assert corrected["correction"] == {"method": "bonferroni", "m": m}
    assert plain["correction"] is None
    for a, b in zip(plain["results"], corrected["results"]):
        assert a["confidence"] == 0.95 and b["confidence"] == pytest.approx(1 - 0.05 / m)
        assert b["ci_low"] < a["ci_low"] and b["ci_high"] > a["ci_high"]
    # The fixture test only reported: 5 gates judged of the 6 counted (conservative, and said).
    result.stdout.fnmatch_lines([f"* · bonferroni over m={m} gates (5 judged): each CI at 0.9917 · seed 0"])
    result.stdout.fnmatch_lines(["test * probe * n * estimate * 99.17% CI * gate * outcome"])


def test_bonferroni_counts_selected_tests_and_agrees_across_xdist_workers(pytester):
    pytest.importorskip("xdist")
    pytester.makeini("[pytest]\nsway_correction = bonferroni\n")
    pytester.makepyfile(gated_suite())
    _, selected = run(pytester, "-k", "gate_0 or gate_1")
    assert selected["correction"]["m"] == 2
    _, serial = run(pytester)
    _, parallel = run(pytester, "-n", "2")
    assert [r["confidence"] for r in parallel["results"]] == [r["confidence"] for r in serial["results"]]
    assert [r["ci_low"] for r in parallel["results"]] == [r["ci_low"] for r in serial["results"]]


def test_bonferroni_arithmetic():
    assert bonferroni(0.95, 10) == pytest.approx(0.995)
    assert bonferroni(0.95, 1) == 0.95 and bonferroni(0.95, 0) == 0.95


def test_bad_correction_is_a_usage_error(pytester):
    result = pytester.runpytest("--sway-correction=holm")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--sway-correction='holm': expected none or bonferroni" in result.stderr.str()


# -- baselines ------------------------------------------------------------------------------


def test_save_then_compare_with_the_same_fine_tune(pytester):
    pytester.makepyfile(gated_suite(2))
    run(pytester, "--sway-save-baseline=base.json")
    saved = json.loads((pytester.path / "base.json").read_text())
    assert saved["kind"] == "pytest-sway baseline" and saved["schema"] == 1
    assert saved["provenance"]["name"] == "dummy" and "pytest-sway" in saved["provenance"]["versions"]
    (entry,) = saved["tests"]["test_save_then_compare_with_the_same_fine_tune.py::test_gate_0"]
    assert entry["items"] == PROMPTS and len(entry["values"]) == 16
    result, doc = run(pytester, "--sway-baseline=base.json")
    result.assert_outcomes(passed=3)
    for row in doc["results"]:
        assert row["baseline"]["status"] == "compared"
        # n changes of exactly 0 on [-ln 2, ln 2]: not certainty, the all-equal bound ln 2 * (1 - 0.025 ** (1 / n)).
        bound = math.log(2) * (1 - 0.025 ** (1 / row["n"]))
        assert row["baseline"]["delta"] == 0.0 and row["baseline"]["ci_method"] == "all-equal"
        assert (row["baseline"]["ci_low"], row["baseline"]["ci_high"]) == pytest.approx((-bound, bound))
    result.stdout.fnmatch_lines(
        ["test * probe * gate * outcome * vs baseline", "*test_gate_0 * passed * Δ +0 [[]-0.1427, 0.1427[]]"]
    )


def test_a_regression_beyond_max_regression_fails_the_gated_test(pytester):
    pytester.makepyfile(mybackends=FACTORY, test_suite=gated_suite(2, extra=", max_regression=0.002"))
    pytester.syspathinsert()
    run(pytester, "--sway-save-baseline=base.json")
    result, doc = run(pytester, "--sway-baseline=base.json", "--sway-backend=mybackends:weaker")
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*FAILED: * - baseline * lies wholly below -0.002. A regression against the baseline "
            "beyond max_regression=0.002.*"
        ]
    )
    gated = doc["results"][0]
    assert gated["outcome"] == "passed"  # the probe's own gate still passes ...
    assert gated["baseline"]["outcome"] == "failed" and gated["baseline"]["delta"] < 0  # ... the comparison does not
    assert doc["results"][-1]["baseline"]["outcome"] == "reported"  # fixture probes are compared, not gated
    result.stdout.fnmatch_lines(["*test_gate_0 * Δ -* REGRESSED"])
    # An improvement passes: compare the stronger fine-tune against the weaker one's baseline.
    run(pytester, "--sway-save-baseline=weak.json", "--sway-backend=mybackends:weaker")
    result, _ = run(pytester, "--sway-baseline=weak.json")
    result.assert_outcomes(passed=3)


STRICT_SUITE = f"""
import pytest

@pytest.mark.sway_probe("delta_kl", prompts={PROMPTS!r}, above=0.015, max_regression=0.002)
def test_gate():
    pass
"""


def test_a_failed_gate_is_still_judged_against_the_baseline(pytester):
    # The weaker fine-tune fails its own gate *and* regressed: both verdicts are kept and said,
    # the gate's first (the regression used to be left unjudged once the gate had failed).
    pytester.makepyfile(mybackends=FACTORY, test_strict=STRICT_SUITE)
    pytester.syspathinsert()
    run(pytester, "--sway-save-baseline=base.json")[0].assert_outcomes(passed=1)
    result, doc = run(
        pytester, "--sway-baseline=base.json", "--sway-backend=mybackends:weaker", "--sway-markdown=out.md"
    )
    result.assert_outcomes(failed=1)
    (row,) = doc["results"]
    assert row["outcome"] == "failed"
    assert row["baseline"]["outcome"] == "failed" and row["baseline"]["delta"] < 0
    assert "A regression against the baseline beyond max_regression=0.002." in row["baseline"]["message"]
    assert row["baseline"]["drivers"]  # the regression's drivers are there too
    result.stdout.fnmatch_lines(
        [
            "FAILED: delta_kl(js) 95% CI * lies wholly below 0.015.",
            "*gate needs CI low >= 0.015.",
            "FAILED: delta_kl(js) - baseline * lies wholly below -0.002. A regression against the baseline "
            "beyond max_regression=0.002.",
            "*gate needs CI low >= -0.002.",
            "Drivers: * items fell since the baseline*",
        ]
    )
    result.stdout.fnmatch_lines(["*test_gate * FAILED * Δ -* REGRESSED"])
    text = (pytester.path / "out.md").read_text()
    assert "❌ 1 failed, ❌ 1 regressed against the baseline" in text
    gate_message, regression_message = text.index("FAILED: delta_kl(js) 95% CI"), text.index("A regression against")
    assert gate_message < regression_message


QUESTIONS = [
    (f"Question {i}: which colour is the parcel?", ["red", "green", "blue", "yellow"], i % 4) for i in range(16)
]

IMPROVED_SUITE = f"""
import pytest

@pytest.mark.sway_probe("choice_accuracy", questions={QUESTIONS!r}, above=-0.25, max_regression=0.01)
def test_accuracy():
    pass
"""


def test_an_improvement_whose_comparison_is_inconclusive_is_not_a_regression(pytester):
    # On these 16 questions the stronger fine-tune answers one more right than the default one:
    # Δ +0.0625, but the interval of so few paired 0/1 changes reaches past -max_regression.
    # That fails the test (an inconclusive gate fails) without being called or counted a regression.
    pytester.makepyfile(mybackends=FACTORY, test_improved=IMPROVED_SUITE)
    pytester.syspathinsert()
    run(pytester, "--sway-save-baseline=base.json")[0].assert_outcomes(passed=1)
    result, doc = run(
        pytester,
        "--sway-baseline=base.json",
        "--sway-backend=mybackends:stronger",
        "--sway-markdown=out.md",
        "--sway-html=out.html",
    )
    result.assert_outcomes(failed=1)
    (row,) = doc["results"]
    comparison = row["baseline"]
    assert row["outcome"] == "passed" and comparison["outcome"] == "inconclusive"
    assert comparison["delta"] == 0.0625 and comparison["ci_low"] < -0.01 < comparison["ci_high"]
    assert "could not rule out a regression against the baseline beyond max_regression=0.01" in comparison["message"]
    assert "A regression against" not in comparison["message"]
    result.stdout.fnmatch_lines(
        [
            "INCONCLUSIVE: choice_accuracy - baseline * straddles -0.01.* Regression check inconclusive: it could "
            "not rule out a regression against the baseline beyond max_regression=0.01 (nor confirm one).",
        ]
    )
    result.stdout.fnmatch_lines(["*test_accuracy * passed * Δ +0.0625 [[]*[]] inconclusive"])
    assert "REGRESSED" not in result.stdout.str()
    text = (pytester.path / "out.md").read_text()
    assert "### pytest-sway: ✅ 1 passed, ⚠️ 1 inconclusive against the baseline\n" in text
    assert "regressed" not in text
    assert "#### ⚠️ test\\_accuracy · choice\\_accuracy" in text  # its section, with the message
    assert "Regression check inconclusive" in text
    page = (pytester.path / "out.html").read_text()
    assert ">1 inconclusive vs baseline</span>" in page and "regressed vs baseline" not in page


def test_option_level_max_regression(pytester):
    pytester.makepyfile(mybackends=FACTORY, test_suite=gated_suite(1))
    pytester.syspathinsert()
    run(pytester, "--sway-save-baseline=base.json")
    result, _ = run(
        pytester, "--sway-baseline=base.json", "--sway-backend=mybackends:weaker", "--sway-max-regression=0.001"
    )
    result.assert_outcomes(failed=1, passed=1)
    result, _ = run(
        pytester, "--sway-baseline=base.json", "--sway-backend=mybackends:weaker", "--sway-max-regression=1"
    )
    result.assert_outcomes(passed=2)


def test_items_are_matched_by_prompt_not_position(pytester):
    pytester.makepyfile(gated_suite(1))
    run(pytester, "--sway-save-baseline=base.json")
    pytester.makepyfile(gated_suite(1, prompts=PROMPTS[::-1]))
    _, doc = run(pytester, "--sway-baseline=base.json")
    comparison = doc["results"][0]["baseline"]
    assert comparison["status"] == "compared" and comparison["delta"] == 0.0


def test_a_changed_item_set_is_reported_not_compared(pytester):
    pytester.makepyfile(gated_suite(1, extra=", max_regression=0.0"))
    run(pytester, "--sway-save-baseline=base.json")
    pytester.makepyfile(gated_suite(1, prompts=PROMPTS[:12] + ["A brand new prompt"], extra=", max_regression=0.0"))
    result, doc = run(pytester, "--sway-baseline=base.json")
    result.assert_outcomes(passed=2)
    comparison = doc["results"][0]["baseline"]
    assert comparison["status"] == "items changed" and comparison["delta"] is None
    assert comparison["message"] == "not compared: 1 item(s) added, 4 removed since the baseline"
    result.stdout.fnmatch_lines(["*test_gate_0 * passed * items changed"])


def test_a_different_base_model_is_reported_not_compared(pytester):
    pytester.makepyfile(mybackends=FACTORY, test_suite=gated_suite(1))
    pytester.syspathinsert()
    run(pytester, "--sway-save-baseline=base.json")
    _, doc = run(pytester, "--sway-baseline=base.json", "--sway-backend=mybackends:other_model")
    comparison = doc["results"][0]["baseline"]
    assert comparison["status"] == "provenance mismatch"
    assert "seed: 0 then, 7 now" in comparison["message"]


def test_tests_missing_from_the_baseline_are_marked(pytester):
    pytester.makepyfile(gated_suite(1))
    run(pytester, "--sway-save-baseline=base.json")
    pytester.makepyfile(gated_suite(2))
    _, doc = run(pytester, "--sway-baseline=base.json")
    assert doc["results"][1]["baseline"]["status"] == "no baseline"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "--sway-baseline='missing.json': no such file"),
        ("not json", "cannot read"),
        ('{"schema": 1}', "is not a pytest-sway baseline; write one with --sway-save-baseline"),
    ],
)
def test_bad_baseline_files_are_usage_errors(pytester, content, message):
    name = "missing.json" if content is None else "bad.json"
    if content is not None:
        (pytester.path / name).write_text(content)
    result = pytester.runpytest(f"--sway-baseline={name}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_max_regression_needs_a_one_sided_gate(pytester):
    pytester.makepyfile(
        f"""
        import pytest
        @pytest.mark.sway_probe("delta_kl", prompts={PROMPTS!r}, max_regression=0.01)
        def test_x():
            pass
        """
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*max_regression needs exactly one of above= or below=*"])
