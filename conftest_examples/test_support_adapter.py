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


@pytest.mark.sway_probe("adapter_ablation", prompts=TARGET_QUESTIONS, chat=True, above=0.0)
def test_effect_grows_smoothly_with_the_adapter():
    """Scaling the adapter from 0 to 1.25 moves the questions further, not back: a positive rank
    correlation on average. That is the margin 12 questions can show: with all 12 monotone (rank
    correlation 1 each), the interval's lower bound is -1 + 2 * (alpha / 2) ** (1 / 12) = 0.20 at this
    suite's Bonferroni level (alpha = 0.05 / 11); a gate at 0.9 would need about 119 questions."""


@pytest.mark.sway_probe("greedy_change", prompts=TARGET_QUESTIONS, chat=True, max_new_tokens=12, above=0.5)
def test_answers_change(sway_result):
    """Greedy answers to the product questions change (examples are printed on failure)."""
    assert all(e["finetuned"].startswith("Happy to help") for e in sway_result.details["examples"])


def test_house_style_carries_over_to_unseen_questions(sway):
    """Through the `sway` fixture: any probe, any assertion, inside an ordinary test."""
    opening = [(question, "Happy to help!") for question in UNSEEN_QUESTIONS]
    sway.completion_lift(opening, chat=True).assert_above(1.0)


@pytest.mark.sway_probe("delta_kl", prompts={"trained": TARGET_QUESTIONS, "unseen": UNSEEN_QUESTIONS}, chat=True)
def test_where_the_adapter_acts():
    """Slices: one estimate and interval per named slice of the prompts, as well as overall. No
    threshold: reported, a map of how far the questions it was trained on move, and how far
    product questions it never saw. (With above= or below=, the gate would judge every slice.)"""


# Two paraphrases of each trained question: 24 prompts, but only 12 facts. Paraphrases of one
# question move together, so they are grouped: the bootstrap resamples whole facts.
PARAPHRASES = [
    ("How frequently does Nimbus Notes sync my notes?", "How often do my notes get synced in Nimbus Notes?"),
    ("How long do I have to ask for a Nimbus Notes refund?", "Until when can I get my money back for Nimbus Notes?"),
    ("I forgot my Nimbus Notes password, how do I reset it?", "How can I change a lost password in Nimbus Notes?"),
    ("How many notes are available offline in Nimbus Notes?", "What is the offline note limit of Nimbus Notes?"),
    ("What are the opening hours of Nimbus Notes support?", "At what times can I reach Nimbus Notes support?"),
    ("What formats can I export my Nimbus Notes notes to?", "Can I export notes from Nimbus Notes, and as what?"),
    ("What is the price of Nimbus Notes Pro?", "How much do I pay each month for Nimbus Notes Pro?"),
    ("In which country are my Nimbus Notes notes stored?", "Where are the Nimbus Notes servers located?"),
    ("How do I share a notebook with others in Nimbus Notes?", "Can other people edit my Nimbus Notes notebook?"),
    ("Can I turn on a dark theme in Nimbus Notes?", "Is there a night mode in Nimbus Notes?"),
    ("How can I remove my Nimbus Notes account?", "I want to close my Nimbus Notes account, what do I do?"),
    ("Are my Nimbus Notes notebooks encrypted?", "Does Nimbus Notes encrypt my notes end to end?"),
]


@pytest.mark.sway_probe(
    "delta_kl",
    prompts=[p for pair in PARAPHRASES for p in pair],
    groups=[fact for fact, pair in enumerate(PARAPHRASES) for _ in pair],
    chat=True,
)
def test_paraphrases_move_too(sway_result):
    """Groups: n is 24 prompts in 12 groups, and the interval is as wide as 12 facts allow."""
    assert (sway_result.n, sway_result.n_groups) == (24, 12)
