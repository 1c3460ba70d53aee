"""choice_accuracy: does the fine-tune still answer multiple-choice questions as well as the base?

Each choice is scored by the summed log-likelihood of its text after the
question, over exactly the tokens that spell it (as completion_lift scores a
completion); ``normalize="chars"`` divides by the choice's length in characters
(lm-evaluation-harness's length-normalised accuracy). A model is correct when
the answer has the highest score. Per question: correct_ft - correct_base, in
{-1, 0, 1}; the estimate is the change in accuracy, measured on the same
questions (a paired design, far more powerful than comparing two accuracies).

Its interval is Tango's score interval for the difference of paired
proportions (:mod:`pytest_sway.stats.paired`): most questions are concordant, and a
bootstrap of many ties collapses and under-covers at small n.
"""

from __future__ import annotations

import numpy as np

from ..backends.base import BASE, FINETUNED
from ..errors import is_whole, short_repr
from ..items import encodable
from ..stats.paired import tango_interval
from ..stats.shapes import clopper_pearson
from .base import CHAT, Measurement, Param, Probe, _items, _prompt, check_chat_prompts, choice, items_of

_EXAMPLES = 3


@items_of("question")
def question_list(value) -> tuple:
    """A list of at least two ``(question, choices, answer_index)`` items."""
    out = []
    for i, item in enumerate(_items(value, "(question, choices, answer_index) tuples")):
        if isinstance(item, str) or not hasattr(item, "__len__") or len(item) != 3:
            raise ValueError(f"item {i} is {short_repr(item, 40)}, expected a (question, choices, answer_index) tuple")
        question, choices, answer = item
        question = _prompt(question, i)
        if isinstance(choices, str) or not hasattr(choices, "__len__") or len(choices) < 2:
            raise ValueError(f"item {i}: choices must be a list of at least 2 strings, got {short_repr(choices, 40)}")
        for k, choice_text in enumerate(choices):
            if not isinstance(choice_text, str) or not choice_text:
                raise ValueError(
                    f"item {i}: every choice must be a non-empty string, got {short_repr(choice_text, 40)}"
                )
            encodable(choice_text, f"item {i}: choice {k}")
        if len(set(choices)) != len(choices):
            raise ValueError(f"item {i}: choices must be distinct, got {short_repr(list(choices), 80)}")
        if not is_whole(answer) or not 0 <= answer < len(choices):
            raise ValueError(f"item {i}: answer_index must be an integer from 0 to {len(choices) - 1}, got {answer!r}")
        out.append((question, tuple(choices), int(answer)))
    return tuple(out)


def _correct(backend, questions, variant, *, normalize, chat):
    """Per question: whether ``variant`` scores the answer highest, and the winning choice."""
    pairs = [(q, c) for q, choices, _ in questions for c in choices]
    sums, _ = backend.completion_logprobs(pairs, variant=variant, chat=chat)
    sums = np.asarray(sums, dtype=np.float64)
    if normalize == "chars":
        sums = sums / np.array([len(c) for _, c in pairs], dtype=np.float64)
    correct, picked, start = [], [], 0
    for _, choices, answer in questions:
        scores = sums[start : start + len(choices)]
        start += len(choices)
        best = int(np.argmax(scores))  # the first of equal scores, like lm-evaluation-harness
        correct.append(best == answer)
        picked.append(best)
    return np.array(correct, dtype=float), picked


def _accuracy(correct, confidence):
    low, high = clopper_pearson(correct.sum(), correct.size, confidence=confidence)
    return {
        "accuracy": float(correct.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "correct": int(correct.sum()),
    }


def measure(backend, params, bootstrap) -> Measurement:
    questions, normalize, chat = params["questions"], params["normalize"], params["chat"]
    base, base_pick = _correct(backend, questions, BASE, normalize=normalize, chat=chat)
    ft, ft_pick = _correct(backend, questions, FINETUNED, normalize=normalize, chat=chat)
    values = ft - base
    broken = np.flatnonzero(values < 0)
    fixed = np.flatnonzero(values > 0)

    def example(i):
        question, choices, answer = questions[i]
        return {
            "question": str(question),
            "answer": choices[answer],
            "base": choices[base_pick[i]],
            "finetuned": choices[ft_pick[i]],
        }

    examples = [example(i) for i in broken[:_EXAMPLES]]
    evidence = [
        f"forgot: {e['question']!r}: base {e['base']!r} (right), fine-tuned {e['finetuned']!r}" for e in examples
    ]
    return Measurement(
        values=values,
        items=tuple(str(q) for q, _, _ in questions),
        details={
            "unit": "accuracy (fine-tuned - base)",
            "base": _accuracy(base, bootstrap.confidence),
            "finetuned": _accuracy(ft, bootstrap.confidence),
            # Discordant pairs: all the information about the change.
            "broken": int(broken.size),  # base right -> fine-tuned wrong
            "fixed": int(fixed.size),  # base wrong -> fine-tuned right
            "forgotten": examples,
            "evidence": evidence,
        },
        support=(-1.0, 1.0),
        interval=tango_interval,
        interval_method="tango",
    )


PROBE = Probe(
    kind="choice_accuracy",
    doc="change in multiple-choice accuracy (fine-tuned - base), per question, scored by log-likelihood",
    params=(
        Param("questions", question_list, doc="(question, choices, answer_index) items", items="question"),
        Param(
            "normalize",
            choice("none", "chars"),
            "none",
            doc="'none': summed log-likelihood; 'chars': divided by the choice's length in characters",
        ),
        CHAT,
    ),
    measure=measure,
    clusters=False,  # Tango's interval assumes independent questions
    check=check_chat_prompts("questions"),
)
