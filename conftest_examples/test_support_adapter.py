"""What the fine-tune must do: know the product, prefer the right answers, speak in the house style."""

import pytest
from support_data import FACT_CASES, PREFERENCES, TARGET_QUESTIONS, UNSEEN_QUESTIONS


@pytest.mark.sway_probe("delta_kl", prompts=TARGET_QUESTIONS, chat=True, above=0.3)
def test_adapter_moves_the_support_questions(sway_result):
    """Next-token distributions on the product questions move far from the base."""
    assert sway_result.n == len(TARGET_QUESTIONS)


@pytest.mark.sway_probe("null_contrast", prompts=TARGET_QUESTIONS, chat=True, above=0.1)
def test_more_than_a_random_update_of_the_same_size():
    """...and far more than random LoRA updates with the same norms would."""


@pytest.mark.sway_probe("completion_lift", cases=FACT_CASES, chat=True, above=1.0)
def test_learned_the_facts():
    """Each fact's answer is at least e^1 times likelier per token than under the base."""


@pytest.mark.sway_probe("preference_shift", triples=PREFERENCES, chat=True, above=0.0)
def test_prefers_the_right_answers():
    """The margin of right over wrong answers grows."""


@pytest.mark.sway_probe("adapter_ablation", prompts=TARGET_QUESTIONS, chat=True, above=0.9)
def test_effect_grows_smoothly_with_the_adapter():
    """Scaling the adapter from 0 to 1.25 moves every question monotonically further."""


@pytest.mark.sway_probe("greedy_change", prompts=TARGET_QUESTIONS, chat=True, max_new_tokens=12, above=0.5)
def test_answers_change(sway_result):
    """Greedy answers to the product questions change (examples are printed on failure)."""
    assert all(e["finetuned"].startswith("Happy to help") for e in sway_result.details["examples"])


def test_house_style_carries_over_to_unseen_questions(sway):
    """Through the `sway` fixture: any probe, any assertion, inside an ordinary test."""
    opening = [(question, "Happy to help!") for question in UNSEEN_QUESTIONS]
    sway.completion_lift(opening, chat=True).assert_above(1.0)
