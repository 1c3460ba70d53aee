"""The pure modules on their own, without a pytest run: settings, marker requests, baselines, outputs."""

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_sway.errors import ProbeParamError
from pytest_sway.measure.request import parse_marker
from pytest_sway.measure.run import run_probe
from pytest_sway.probes import default_registry
from pytest_sway.reports.baseline import compare, load_baseline, paired_differences
from pytest_sway.reports.outputs import foreign_document, write_output
from pytest_sway.settings import OPTIONS, Settings, SettingsError
from pytest_sway.stats.bootstrap import Bootstrap
from pytest_sway.stats.gate import Gate


def settings(cli=None, ini=None, tmp_path=Path(".")):
    return Settings.from_raw(cli or {}, ini or {}, cwd=tmp_path, ini_dir=tmp_path)


# -- settings --------------------------------------------------------------------------------


def test_defaults_come_from_the_option_declarations():
    s = settings()
    for opt in OPTIONS:
        expected = None if opt.default is None else opt.parse(opt.default, Path("."))
        assert getattr(s, opt.name) == expected, opt.name
    assert (s.batch_size, s.confidence, s.resamples, s.backend_name) == (32, 0.95, None, "dummy")


def test_command_line_wins_over_ini_and_paths_resolve_against_their_source(tmp_path):
    (tmp_path / "cli").mkdir()
    (tmp_path / "ini").mkdir()
    s = Settings.from_raw(
        {"seed": "3", "json": "a.json"}, {"seed": "5", "html": "b.html"}, cwd=tmp_path / "cli", ini_dir=tmp_path / "ini"
    )
    assert s.seed == 3 and s.json == tmp_path / "cli" / "a.json" and s.html == tmp_path / "ini" / "b.html"
    assert s.sources == {
        **{k: "default" for k in s.sources if s.sources[k] == "default"},
        "seed": "command line",
        "json": "command line",
        "html": "ini file",
    }


@pytest.mark.parametrize(
    "cli, ini, message",
    [
        ({"model": ""}, {}, "--sway-model is empty"),
        ({}, {"json": "  "}, "ini option sway_json is empty"),
        ({"confidence": "1.5"}, {}, "--sway-confidence='1.5': must be a number strictly between 0 and 1"),
        ({"resamples": "10"}, {}, "--sway-resamples=10: resamples: 10 resamples cannot resolve a 0.95 interval"),
        ({"backend": "dummy", "cache_dir": "c"}, {}, "--sway-backend=dummy measures toy models, but --sway-cache-dir"),
        ({"max_regression": "0.1"}, {}, "--sway-max-regression is set but there is no baseline"),
    ],
)
def test_bad_settings_name_the_option(tmp_path, cli, ini, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings(cli, ini, tmp_path)


def test_backend_options_are_the_ones_declared_for_the_backend(tmp_path):
    s = settings({"batch_size": "7", "device": "cpu"}, tmp_path=tmp_path)
    assert s.backend_options() == {
        "model": None,
        "adapter": None,
        "finetuned": None,
        "device": "cpu",
        "dtype": "auto",
        "batch_size": 7,
        "device_map": None,
        "cache_dir": None,
    }


# -- marker requests ------------------------------------------------------------------------


def test_a_marker_becomes_a_validated_request():
    request = parse_marker(("delta_kl",), {"prompts": ["a", "b"], "above": 0.1, "resamples": 999}, default_registry())
    assert request.kind == "delta_kl" and request.gate == Gate(above=0.1) and request.resamples == 999
    assert request.params == {"prompts": ("a", "b"), "divergence": "js", "chat": False}


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((), {"prompts": ["a", "b"]}, "expected exactly one positional argument"),
        (("delta_kl",), {"prompts": ["a", "b"], "above": 0.5, "below": 0.1}, "`above` must be smaller"),
        (("delta_kl",), {"prompts": ["a", "b"], "resamples": 5}, "cannot resolve a 0.95 interval"),
        (("delta_kl",), {"prompts": ["a", "b"], "max_regression": 0.1}, "max_regression needs exactly one of"),
        (("delta_kl",), {"prompts": ["a", "a", "b"]}, "1 repeated item"),
    ],
)
def test_bad_markers_raise_probe_param_errors(args, kwargs, message):
    with pytest.raises(ProbeParamError, match=message.replace("`", ".")):
        parse_marker(args, kwargs, default_registry())


# -- baselines --------------------------------------------------------------------------------


def test_paired_differences_match_items_not_positions():
    entry = {"items": ["a", "b", "c"], "values": [1.0, 2.0, 3.0]}
    diffs, change = paired_differences(["c", "a", "b"], [3.5, 1.0, 1.0], entry)
    assert diffs == [0.5, 0.0, -1.0] and change is None
    assert paired_differences(["a", "b", "d"], [1, 2, 3], entry) == (
        None,
        "1 item(s) added, 1 removed since the baseline",
    )


def test_compare_gates_a_regression_in_the_direction_of_the_gate():
    from pytest_sway import DummyBackend

    prompts = [f"p{i}" for i in range(16)]
    now = run_probe("delta_kl", DummyBackend(effect=0.2), prompts=prompts, seed=1)
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
    assert out["status"] == "compared" and out["outcome"] == "failed"
    assert out["delta"] == pytest.approx(float(np.mean(now.values - then.values)))
    assert out["message"].startswith("FAILED: delta_kl(js) - baseline")


def test_load_baseline_checks_every_field_a_comparison_reads(tmp_path):
    path = tmp_path / "b.json"
    good = {
        "schema": 1,
        "kind": "pytest-sway baseline",
        "provenance": {},
        "tests": {
            "t::x": [{"label": "delta_kl(js)", "order": 1, "items": ["a", "b"], "values": [0.1, 0.2], "estimate": 0.15}]
        },
    }
    path.write_text(json.dumps(good))
    assert load_baseline(path) == good
    good["tests"]["t::x"][0]["order"] = True
    path.write_text(json.dumps(good))
    with pytest.raises(ValueError, match="'order' is True, expected a whole number >= 0"):
        load_baseline(path)


# -- outputs ------------------------------------------------------------------------------------


def test_foreign_documents_are_recognised(tmp_path):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"kind": "pytest-sway report", "schema": 1, "backend": {}, "results": []}))
    assert foreign_document(str(report), "JSON report") is None
    assert foreign_document(str(report), "baseline") == "a pytest-sway JSON report"
    assert foreign_document(str(tmp_path / "absent.json"), "baseline") is None
    (tmp_path / "empty").write_text("")
    assert foreign_document(str(tmp_path / "empty"), "HTML report") is None


def test_write_output_replaces_a_regular_file_atomically_keeping_its_mode(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    target.chmod(0o640)
    write_output(target, "new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left
