"""The default battery's shipped items: format, counts, uniqueness, balance, lengths, and a second
review of every answer key (pytest_sway/suites/default)."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from pytest_sway.items import Conversation
from pytest_sway.suites import default

HERE = Path(default.__file__).parent


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().casefold()


@pytest.mark.parametrize("name", sorted(p.name for p in (HERE / "data").glob("*.jsonl")))
def test_files_are_plain_json_lines(name):
    raw = (HERE / "data" / name).read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf") and b"\r" not in raw and raw.endswith(b"\n")
    lines = raw.decode("utf-8").split("\n")[:-1]
    assert all(line.strip() for line in lines), "no blank lines"
    assert all(isinstance(json.loads(line).get("slice"), str) for line in lines), "every item has a slice"


def test_counts_and_domains():
    assert len(default.prompts()) >= 300 and len(default.slices("prompts")) >= 8
    assert len(default.passages()) >= 150
    assert len(default.questions()) >= 600 and len(default.slices("questions")) >= 6
    assert len(default.chats()) >= 100
    for kind in ("prompts", "questions"):
        for name in default.slices(kind):
            assert len(getattr(default, kind)(name)) >= 40, (kind, name)


@pytest.mark.parametrize("kind", ["prompts", "passages", "questions", "chats"])
def test_no_item_repeats(kind):
    items = getattr(default, kind)()
    keys = [_normal(item[0] if kind == "questions" else item) for item in items]
    repeated = [key for key, n in Counter(keys).items() if n > 1]
    assert not repeated


def test_every_question_has_four_distinct_choices_and_balanced_answers():
    for name in default.slices("questions"):
        positions = Counter()
        for question, choices, answer in default.questions(name):
            assert question.startswith("Question: ") and question.endswith("\nAnswer:")
            assert (
                len(choices) == 4 and len({c.strip() for c in choices}) == 4
            )  # exact: a case question differs by case
            assert all(c.startswith(" ") and not c.startswith("  ") for c in choices)
            positions[answer] += 1
        # Each position keyed equally often: a model that always picks one letter scores exactly 25%.
        assert len(set(positions.values())) == 1 and set(positions) == {0, 1, 2, 3}, (name, positions)


def test_chats_start_and_end_with_the_user_and_alternate():
    for chat in default.chats():
        assert isinstance(chat, Conversation)
        roles = [m["role"] for m in chat.messages]
        assert roles[0] == roles[-1] == "user"
        assert all(a != b for a, b in zip(roles, roles[1:]))
    assert sum(len(chat.messages) > 1 for chat in default.chats()) >= 0.4 * len(default.chats())


def test_every_answer_key_was_reviewed_a_second_time():
    for name in ("questions-a", "questions-b", "questions-c"):
        questions = (HERE / "data" / f"{name}.jsonl").read_text().splitlines()
        log = [json.loads(line) for line in (HERE / "review" / f"{name}.review.jsonl").read_text().splitlines()]
        assert [entry["line"] for entry in log] == list(range(1, len(questions) + 1)), name
        assert all(
            entry["verdict"] in ("ok", "key corrected", "reworded", "distractor fixed", "replaced") for entry in log
        )


def test_passages_are_long_enough_for_the_model(smollm2_tokenizer):
    lengths = [len(smollm2_tokenizer(text)["input_ids"]) for text in default.passages()]
    assert min(lengths) >= 60


def test_slices_pick_and_unknown_names_are_refused():
    arithmetic = default.questions("arithmetic-units")
    assert len(arithmetic) == 100 and arithmetic[0] in default.questions()
    with pytest.raises(ValueError, match="no slice 'arithmetic'.*arithmetic-units"):
        default.questions("arithmetic")
    with pytest.raises(ValueError, match="unknown item set"):
        default.slices("nope")


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    from pytest_sway.backends.builtin_models import ensure_smollm2

    return AutoTokenizer.from_pretrained(ensure_smollm2())
