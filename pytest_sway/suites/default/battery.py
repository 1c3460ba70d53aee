"""The default retention battery as pytest tests: ``pytest --sway-suite=default`` collects this module.

Each part has an ungated test sliced by domain (the per-domain report: which domain moved) and one
gated, unsliced test (the retention gate). A gate on every slice would judge 100 questions a slice
against a margin they cannot show, so the domains are reported, not gated. The gates' thresholds
here are the defaults (``pytest_sway.suites.spec.GATES``); ``sway_suite_thresholds`` replaces them
at collection. Not collected by a plain ``pytest`` run (its name does not start with ``test_``).
"""

from __future__ import annotations

import pytest

from pytest_sway.suites import default
from pytest_sway.suites.spec import GATES


def _sliced(kind: str, pick) -> dict[str, list]:
    return {name: pick(name) for name in default.slices(kind)}


def _gate(part: str) -> dict[str, float]:
    keyword, value = GATES[part]
    return {keyword: value}


#: Each test's part (``--sway-suite=default:part,...`` keeps those), and the one gated test per part.
PARTS = {
    "test_prompts_by_domain": "prompts",
    "test_prompts_greedy_by_domain": "prompts",
    "test_prompts_retained": "prompts",
    "test_text_by_register": "text",
    "test_text_retained": "text",
    "test_knowledge_by_domain": "knowledge",
    "test_knowledge_retained": "knowledge",
    "test_chat_by_kind": "chat",
    "test_chat_retained": "chat",
}
GATED = {"prompts": "test_prompts_retained", "text": "test_text_retained",
         "knowledge": "test_knowledge_retained", "chat": "test_chat_retained"}  # fmt: skip

CHAT_TOKENS = 16
GREEDY_TOKENS = 12


@pytest.mark.sway_probe("delta_kl", prompts=_sliced("prompts", default.prompts))
def test_prompts_by_domain():
    """Next-token KL from the base after the general prompts, per domain (reported, not gated)."""


@pytest.mark.sway_probe("greedy_change", prompts=_sliced("prompts", default.prompts), max_new_tokens=GREEDY_TOKENS)
def test_prompts_greedy_by_domain():
    """How often a greedy continuation of the general prompts changes, per domain (reported)."""


@pytest.mark.sway_probe("delta_kl", prompts=default.prompts(), **_gate("prompts"))
def test_prompts_retained():
    """Gate: next-token distributions after general prompts stay close to the base (mean KL, nats)."""


@pytest.mark.sway_probe("perplexity_shift", texts=_sliced("passages", default.passages))
def test_text_by_register():
    """Shift in mean NLL per token on general text, per register (reported)."""


@pytest.mark.sway_probe("perplexity_shift", texts=default.passages(), **_gate("text"))
def test_text_retained():
    """Gate: mean NLL per token on general text rises by less than the threshold (nats)."""


@pytest.mark.sway_probe("choice_accuracy", questions=_sliced("questions", default.questions))
def test_knowledge_by_domain():
    """Paired change in multiple-choice accuracy, per domain (reported)."""


@pytest.mark.sway_probe("choice_accuracy", questions=default.questions(), **_gate("knowledge"))
def test_knowledge_retained():
    """Gate (non-inferiority): the paired change in accuracy on every question loses at most the margin."""


@pytest.mark.sway_probe(
    "response_divergence", prompts=_sliced("chats", default.chats), chat=True, max_new_tokens=CHAT_TOKENS
)
def test_chat_by_kind():
    """Per-token Jensen-Shannon divergence over the base's own answers to the chats, per kind (reported)."""


@pytest.mark.sway_probe(
    "response_divergence", prompts=default.chats(), chat=True, max_new_tokens=CHAT_TOKENS, **_gate("chat")
)
def test_chat_retained():
    """Gate: the fine-tune's per-token divergence over the base's answers to the chats stays small."""
