"""One label, one meaning; items files read as JSON reads them; one repeat check for every probe;
one shape for an item, inline or from a file (issue 23, classes 1, 2, 3 and 8)."""

import json
import re

import numpy as np
import pytest

from pytest_sway import DummyBackend, Measurement, Param, Probe, ProbeRegistry, Sway, run_probe
from pytest_sway.errors import ProbeError, ProbeParamError
from pytest_sway.markers import gates_of
from pytest_sway.measure.request import parse_marker
from pytest_sway.probes.base import text_list
from pytest_sway.probes.registry import default_registry
from pytest_sway.reports.rows import summarize_params

TICKETS = [f"Ticket {i}: where is my parcel?" for i in range(12)]


def _write(path, lines, end="\n"):
    path.write_text(end.join(line if isinstance(line, str) else json.dumps(line) for line in lines) + end)
    return path


# -- class 1: one label, one meaning --------------------------------------------------------------


def test_a_label_given_as_a_number_or_as_text_is_one_label_in_every_path(tmp_path):
    """Slice 1 and slice "1" are one slice for the intervals, the Bonferroni count and the params
    shown; group 1 and group "1" are one family; file and code take labels by the same rule."""
    lines = [
        {"prompt": p, "slice": 1 if i % 2 else "1", "group": i // 2 if i % 4 else str(i // 2)}
        for i, p in enumerate(TICKETS)
    ]
    _write(tmp_path / "t.jsonl", lines)
    request = parse_marker(("delta_kl",), {"prompts": "t.jsonl", "above": 0.01}, default_registry(), base_dir=tmp_path)
    items = request.params["prompts"]
    assert items.slices == ("1",) * 12 and items.groups == tuple(str(i // 2) for i in range(12))
    assert gates_of(request, 0, baseline=False, max_regression=None) == 2  # overall + one slice
    assert summarize_params(request.params)["prompts"]["slices"] == 1
    result = run_probe("delta_kl", DummyBackend(), prompts="t.jsonl", base_dir=tmp_path)
    assert list(result.slices) == ["1"] and result.n_groups == 6 and result.gates_per_check == 2
    # In code: integer keys and labels are their text, the same as in a file.
    inline = run_probe("delta_kl", DummyBackend(), prompts={1: TICKETS[:6], 2: TICKETS[6:]}, groups=list(range(12)))
    assert list(inline.slices) == ["1", "2"] and inline.groups == tuple(str(i) for i in range(12))
    mixed = run_probe(
        "delta_kl", DummyBackend(), prompts=TICKETS, groups=[i // 2 if i % 2 else str(i // 2) for i in range(12)]
    )
    assert mixed.n_groups == 6
    with pytest.raises(ProbeParamError, match="slice names 1 and '1' are the same label '1'"):
        run_probe("delta_kl", DummyBackend(), prompts={1: TICKETS[:6], "1": TICKETS[6:]})


@pytest.mark.parametrize(
    "label, message",
    [
        ("", "is ''; a slice label must not be blank"),
        ("  ", "is '  '; a slice label must not be blank"),
        (" billing", "' billing' has leading or trailing whitespace; write 'billing'"),
        (True, "is True; a slice label is a string or an integer"),
        (1.5, "is 1.5; a slice label is a string or an integer"),
    ],
)
def test_labels_from_a_file_are_validated_exactly_like_labels_in_code(tmp_path, label, message):
    lines = [{"prompt": p, **({"slice": label} if i == 2 else {"slice": "a"})} for i, p in enumerate(TICKETS)]
    _write(tmp_path / "t.jsonl", lines)
    with pytest.raises(ProbeParamError, match=r"t\.jsonl:3: \"slice\" " + _re(message)):
        run_probe("delta_kl", DummyBackend(), prompts="t.jsonl", base_dir=tmp_path)
    if not isinstance(label, (bool, float)):  # a dict key of either kind would be refused the same way
        with pytest.raises(ProbeParamError, match="slice name " + _re(message)):
            run_probe("delta_kl", DummyBackend(), prompts={label: TICKETS[:6], "a": TICKETS[6:]})
    group = message.replace("slice label", "group label")
    with pytest.raises(ProbeParamError, match=r"groups: label 2 " + _re(group)):
        run_probe("delta_kl", DummyBackend(), prompts=TICKETS, groups=[0, 1, label, 3, 4, 5] * 2)
    lines = [{"prompt": p, "group": label if i == 2 else i} for i, p in enumerate(TICKETS)]
    _write(tmp_path / "g.jsonl", lines)
    with pytest.raises(ProbeParamError, match=r"g\.jsonl:3: \"group\" " + _re(group)):
        run_probe("delta_kl", DummyBackend(), prompts="g.jsonl", base_dir=tmp_path)


def _re(text: str) -> str:
    import re

    return re.escape(text)


# -- class 3: every probe refuses repeated items, through one code path ------------------------------

QUESTIONS = [(f"Question {i}: the capital of country {i} is", [" Paris", " Rome", " Oslo"], i % 3) for i in range(8)]


def _echo(backend, params, bootstrap):
    items = params["prompts"]
    return Measurement(np.arange(len(items), dtype=float), items=items)


@pytest.mark.parametrize(
    "repeat",
    [
        QUESTIONS[1],  # the same question, counted twice
        (QUESTIONS[1][0], [" Oslo", " Paris", " Rome"], 2),  # its choices in another order: the same scores
    ],
)
def test_choice_accuracy_refuses_a_repeated_question(repeat):
    with pytest.raises(ProbeParamError, match=r"questions': 1 repeated item\(s\): item 8 repeats item 1"):
        run_probe("choice_accuracy", DummyBackend(), questions=[*QUESTIONS, repeat])


@pytest.mark.parametrize(
    "param",
    [
        Param("prompts", lambda value: tuple(value), items="prompt"),  # a check of its own: the common check
        Param("prompts", text_list),  # the library's check, no items=: an items parameter all the same
    ],
    ids=["own-check", "text_list"],
)
def test_a_probe_of_yours_refuses_repeats_the_same_way(param):
    registry = ProbeRegistry([Probe("echo", "", (param,), _echo)])
    with pytest.raises(ProbeParamError, match=r"echo: parameter 'prompts': 2 repeated item\(s\): item 12 repeats"):
        run_probe("echo", DummyBackend(), registry=registry, prompts=TICKETS + TICKETS[:2])
    with pytest.raises(ProbeParamError, match=r"slice 'b' item 0 repeats slice 'a' item 3"):
        run_probe("echo", DummyBackend(), registry=registry, prompts={"a": TICKETS[:6], "b": TICKETS[3:]})
    assert run_probe("echo", DummyBackend(), registry=registry, prompts=TICKETS).n == 12


# -- class 2: items files read as JSON reads them; refusals name file:line -----------------------


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])  # JSON escapes the others (\\f, \\u001e)
@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_only_a_newline_ends_a_line_of_an_items_file(tmp_path, separator, end):
    """Characters JSON allows inside a string split Python's lines, never a JSONL line."""
    prompts = [f"Ticket {i}:{separator}where is my parcel?" for i in range(6)]
    path = tmp_path / "t.jsonl"
    path.write_bytes(end.join(json.dumps({"prompt": p}, ensure_ascii=False) for p in prompts).encode() + end.encode())
    result = run_probe("delta_kl", DummyBackend(), prompts="t.jsonl", base_dir=tmp_path)
    assert result.items == tuple(prompts)
    # ... and a refusal counts lines as a reader does: the 5th line is line 5.
    path.write_bytes(path.read_bytes().replace(b'"prompt": "Ticket 4', b'"prompt": 4, "x": "'))
    with pytest.raises(ProbeParamError, match=r"t\.jsonl:5: unknown field"):
        run_probe("delta_kl", DummyBackend(), prompts="t.jsonl", base_dir=tmp_path)


CHAT = [{"role": "user", "content": "Where is my parcel?"}]


@pytest.mark.parametrize(
    "lines, kwargs, message",
    [
        (
            [{"prompt": p} for p in TICKETS[:4]] + [{"prompt": TICKETS[1]}],
            {},
            r"1 repeated item\(s\): {f}:5 repeats {f}:2 \('Ticket 1",
        ),
        (
            [{"prompt": p} for p in TICKETS[:4]] + [{"prompt": "bad \ud800 text"}],
            {},
            r"{f}:5 holds '\\ud800' at position 4",
        ),
        ([{"prompt": p} for p in TICKETS[:4]] + [{"prompt": CHAT}], {}, r"prompts: {f}:5 is a conversation"),
        (
            [{"prompt": p} for p in TICKETS[:4]] + [{"prompt": [{"role": "user", "content": "\ud800"}]}],
            {"chat": True},
            r"{f}:5: .*message 0: content holds '\\ud800'",
        ),
    ],
    ids=["repeat", "lone-surrogate", "conversation-without-chat", "surrogate-in-a-conversation"],
)
def test_every_refusal_about_a_file_item_names_its_line(tmp_path, lines, kwargs, message):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join([json.dumps(lines[0]), ""] + [json.dumps(line) for line in lines[1:]]) + "\n")
    # Line numbers after the blank line 2 are one more than the item's position plus one.
    f = re.escape(str(path))
    expected = message.replace("{f}:5", f + ":6").replace("{f}:2", f + ":3")
    with pytest.raises(ProbeParamError, match=expected):
        run_probe("delta_kl", DummyBackend(), prompts="t.jsonl", base_dir=tmp_path, **kwargs)
    question = {"question": "Q", "choices": [" a", " b"], "answer": 0}
    _write(path, [question, {**question, "question": "R"}, {**question, "choices": [" b", " a"]}])
    with pytest.raises(ProbeParamError, match=re.escape(f"{path}:3 repeats {path}:1")):
        run_probe("choice_accuracy", DummyBackend(), questions="t.jsonl", base_dir=tmp_path)


def test_a_probe_failing_on_a_file_item_names_its_line(tmp_path):
    def nan_on_third(backend, params, bootstrap):
        values = np.zeros(len(params["prompts"]))
        values[2] = np.nan
        return Measurement(values, items=params["prompts"])

    registry = ProbeRegistry([Probe("nan", "", (Param("prompts", text_list),), nan_on_third)])
    path = _write(tmp_path / "t.jsonl", [{"text": p} for p in TICKETS[:4]])
    with pytest.raises(ProbeError, match=re.escape(f"returned nan for {path}:3 ('Ticket 2")):
        run_probe("nan", DummyBackend(), registry=registry, prompts="t.jsonl", base_dir=tmp_path)


# -- class 8: items have one shape everywhere ------------------------------------------------------


def test_the_objects_a_file_holds_are_items_inline_too(tmp_path):
    """Each shape's JSONL object, given inline, is the same item as its tuple, with the same checks
    and the same optional "group" and "slice"."""
    sway = Sway(DummyBackend(), seed=1)
    as_dicts = [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS]
    assert sway.choice_accuracy(as_dicts).ci == sway.choice_accuracy(QUESTIONS).ci
    pairs = [(p, " It ships today.") for p in TICKETS]
    same = {
        "delta_kl": ([{"prompt": p} for p in TICKETS], TICKETS),
        "completion_lift": ([{"prompt": p, "completion": c} for p, c in pairs], pairs),
        "preference_shift": (
            [{"prompt": p, "chosen": c, "rejected": " No."} for p, c in pairs],
            [(*x, " No.") for x in pairs],
        ),
        "response_divergence": ([{"prompt": p, "response": c} for p, c in pairs], pairs),
        "perplexity_shift": ([{"text": p} for p in TICKETS], TICKETS),
    }
    for kind, (dicts, tuples) in same.items():
        assert (
            run_probe(kind, DummyBackend(), seed=1, **_first(kind, dicts)).ci
            == run_probe(kind, DummyBackend(), seed=1, **_first(kind, tuples)).ci
        ), kind
    # Mixed with tuples, and carrying a slice and a group as a line does.
    mixed = [{"prompt": p, "slice": "even" if i % 2 == 0 else "odd", "group": i} for i, p in enumerate(TICKETS)]
    lines = _write(tmp_path / "t.jsonl", mixed)
    from_file = run_probe("delta_kl", DummyBackend(), seed=1, prompts="t.jsonl", base_dir=lines.parent)
    inline = run_probe("delta_kl", DummyBackend(), seed=1, prompts=mixed)
    assert list(inline.slices) == ["even", "odd"] and inline.n_groups == 12
    assert inline.ci == from_file.ci and inline.slices["odd"].ci == from_file.slices["odd"].ci


def _first(kind, items):
    name = {
        "delta_kl": "prompts",
        "completion_lift": "cases",
        "preference_shift": "triples",
        "response_divergence": "pairs",
        "perplexity_shift": "texts",
    }[kind]
    return {name: items}


@pytest.mark.parametrize(
    "kind, items, message",
    [
        (
            "choice_accuracy",
            [QUESTIONS[0], {"question": "Q", "choices": [" a"], "answer": 0}],
            "item 1: choices must be a list of at least 2",
        ),
        (
            "choice_accuracy",
            [QUESTIONS[0], {"question": "Q", "choice": [" a", " b"], "answer": 0}],
            "item 1: missing 'choices'; unknown field\\(s\\) 'choice'",
        ),
        ("delta_kl", [TICKETS[0], {"prompt": TICKETS[0]}], "item 1 repeats item 0"),
        (
            "delta_kl",
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
            "item 0 is a message .* wrap the conversation in a list",
        ),
        (
            "delta_kl",
            [TICKETS[0], {"prompt": TICKETS[1], "slice": " a"}],
            "item 1: \"slice\" ' a' has leading or trailing whitespace",
        ),
    ],
)
def test_inline_objects_are_checked_as_a_file_line_is(kind, items, message):
    name = "questions" if kind == "choice_accuracy" else "prompts"
    with pytest.raises(ProbeParamError, match=message):
        run_probe(kind, DummyBackend(), **{name: items})
    with pytest.raises(ProbeParamError, match='a dict of slices and its items\' "slice" fields both give slices'):
        run_probe("delta_kl", DummyBackend(), prompts={"a": [{"prompt": p, "slice": "b"} for p in TICKETS]})
