"""What the fine-tune must leave alone: general prompts and general text. General knowledge
(600 questions) is the shipped battery's: `pytest conftest_examples --sway-suite=default`."""

import pytest
from support_data import GENERAL_PROMPTS, GENERAL_TEXTS


@pytest.mark.sway_probe("perplexity_shift", texts=GENERAL_TEXTS, below=0.1)
def test_no_perplexity_regression_on_general_text():
    """Mean NLL per token on general text rises by less than 0.1 nats (perplexity by < 10.5%)."""


@pytest.mark.sway_probe("delta_kl", prompts=GENERAL_PROMPTS, below=0.05)
def test_general_prompts_barely_move():
    """Next-token distributions after general prompts stay close to the base."""


@pytest.mark.sway_probe("greedy_change", prompts=GENERAL_PROMPTS, max_new_tokens=12)
def test_general_continuations_are_reported():
    """No threshold: measured and shown in the summary, not gated. Small shifts
    flip a greedy token somewhere in 12 more often than one might guess."""


@pytest.mark.sway_probe("response_divergence", prompts=GENERAL_PROMPTS, max_new_tokens=16, below=0.05)
def test_general_answers_barely_move():
    """Over the base model's own 16-token answers to the general prompts, teacher-forced
    through both models, the mean per-token Jensen-Shannon divergence stays small."""
