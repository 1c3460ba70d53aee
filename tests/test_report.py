"""Report building blocks: atomic writes, rows, the summary table."""

import json
import os

import numpy as np
import pytest

from pytest_sway import DummyBackend, Gate, run_probe
from pytest_sway.files import write_atomic
from pytest_sway.reports.rows import json_document, json_pieces, jsonable, junit_properties, rows_for_test
from pytest_sway.reports.summary import describe_backend, summary_lines


def test_write_atomic_replaces_the_file(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    write_atomic(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["report.json"]


def test_a_failed_write_leaves_the_previous_file_and_no_debris(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_text_in_pieces_is_written_as_it_comes_and_a_failure_midway_keeps_the_old_file(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    write_atomic(path, (piece for piece in ["{", '"\u00e9t\u00e9"', "}"]))
    assert path.read_text(encoding="utf-8") == '{"\u00e9t\u00e9"}'

    def broken():
        yield "{partial"
        raise OSError("disk full (simulated)")

    path.write_text("old")
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, broken())
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_jsonable_handles_numpy_tuples_and_non_finite_numbers():
    value = {"a": np.float64(1.5), "b": (1, np.int64(2)), "c": np.array([0.5, np.inf]), 3: float("nan")}
    assert jsonable(value) == {"a": 1.5, "b": [1, 2], "c": [0.5, None], "3": None}
    json.loads("".join(json_pieces(jsonable(value))))


def test_jsonable_shares_what_is_json_safe_already():
    plain = {"most_moved": [{"prompt": "p", "value": 0.5}], "n": 3, "tags": ["a", "b"]}
    assert jsonable(plain) is plain
    mixed = {"keep": plain, "fix": [1, np.float64(2.0)], "also": [3.0, 4.0]}
    out = jsonable(mixed)
    assert out == {"keep": plain, "fix": [1, 2.0], "also": [3.0, 4.0]} and out is not mixed
    assert out["keep"] is plain and out["also"] is mixed["also"]  # only the path to what changed is copied
    assert type(out["fix"][1]) is float and mixed["fix"][1].__class__ is np.float64  # the input is not modified


def test_token_lists_anywhere_in_the_details_travel_packed_and_reach_the_json_written_out():
    from pytest_sway.backends.token_changes import TokenChange, TokenChanges, TopTokens

    table = TokenChanges(2)
    table.append("p0", TopTokens((TokenChange(" a", 7, 0.25, 0.5),), (TokenChange("b", 9, 0.5, 0.25),)))
    table.append("p1", TopTokens((), ()))
    details = {"by_slice": {"x": [table]}, "n": 2}
    row_details = jsonable(details)  # a row's: plain builtins, as xdist carries them
    packed = row_details["by_slice"]["x"][0]
    assert isinstance(packed, dict) and isinstance(packed["ids"], bytes)
    assert jsonable(row_details) is row_details  # a row's details are left as they are
    written = json.loads("".join(json_pieces({"details": jsonable(row_details, packed=False)})))
    assert (
        written["details"]["by_slice"]["x"][0]
        == list(table)
        == [
            {
                "prompt": "p0",
                "raised": [{"token": " a", "id": 7, "p_base": 0.25, "p_ft": 0.5}],
                "lowered": [{"token": "b", "id": 9, "p_base": 0.5, "p_ft": 0.25}],
            },
            {"prompt": "p1", "raised": [], "lowered": []},
        ]
    )


def test_the_json_text_is_the_documents_in_one_piece_or_many():
    doc = {"kind": "x", "results": [{"a": [1.5, None], "b": {"c": "\u00e9"}}], "empty": []}
    assert "".join(json_pieces(doc)) == json.dumps(doc, indent=2) + "\n"


def _rows():
    backend = DummyBackend()
    prompts = [f"p{i}" for i in range(10)]
    marked = run_probe("delta_kl", backend, prompts=prompts)
    marked.check(Gate(above=0.01))
    extra = run_probe("delta_kl", backend, prompts=prompts[:5], divergence="tv")
    extra.assert_above(0.01)
    request = type("Req", (), {"kind": "delta_kl", "gate": Gate(above=0.01)})()
    return rows_for_test(
        "tests/deep/folder/test_x.py::test_a_rather_long_test_name_that_keeps_going_and_going_and_going[case-1]",
        results=[marked, extra],
        request=request,
        index=4,
        error=None,
    )


def test_rows_carry_gates_outcomes_and_values():
    marked, extra = _rows()
    assert (marked["source"], marked["above"], marked["outcome"], marked["order"]) == ("marker", 0.01, "passed", 1)
    assert (extra["source"], extra["label"], extra["order"]) == ("fixture", "delta_kl(tv)", 2)
    assert len(marked["values"]) == 10 and marked["params"]["prompts"] == {"count": 10}
    props = dict(junit_properties([marked, extra]))
    assert props["sway.kind"] == "delta_kl" and props["sway[2].label"] == "delta_kl(tv)"
    doc = json_document([extra, marked], backend={"name": "dummy"}, settings={})
    assert [r["label"] for r in doc["results"]] == ["delta_kl(js)", "delta_kl(tv)"]  # collection order
    assert "items" not in doc["results"][0]  # prompts are summarized, not dumped


def test_error_row_for_a_marked_test_that_could_not_run():
    request = type("Req", (), {"kind": "delta_kl", "gate": Gate(below=0.1)})()
    (row,) = rows_for_test("t.py::test", results=[], request=request, index=0, error="model missing")
    assert (row["outcome"], row["message"], row["below"]) == ("error", "model missing", 0.1)
    assert rows_for_test("t.py::test", results=[], request=None, index=0, error="boom") == []


def test_summary_aligns_numbers_and_shortens_long_ids():
    lines = summary_lines(_rows(), footer="FOOTER")
    header, first, second, footer = lines
    assert header.split() == ["test", "probe", "n", "estimate", "95%", "CI", "gate", "outcome"]
    assert first.startswith("...") and "[case-1]" in first and "tests/deep" not in first
    assert len(first.split("  ")[0]) <= 60
    # Right-aligned n and estimate columns end at the same offsets on every row.
    for col in ("n", "estimate"):
        end = header.index(col) + len(col)
        assert first[end - 1] != " " and second[end - 1] != " "
    assert footer == "FOOTER"
    assert summary_lines([], footer="FOOTER") == []


def test_describe_backend():
    assert describe_backend({"name": "dummy", "effect": 0.5}) == "dummy (effect 0.5)"
    info = {"name": "hf", "model": "./base", "adapter": "./runs/v3", "device": "cpu", "dtype": "float32"}
    assert describe_backend(info) == "hf ./base + ./runs/v3 (cpu, float32)"
