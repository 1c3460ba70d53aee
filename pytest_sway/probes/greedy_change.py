"""greedy_change: how often does the fine-tune's greedy continuation differ from the base's?

Per prompt: 1 if the greedy continuations (up to ``max_new_tokens``) differ,
else 0; the estimate is the change rate. Its interval is Clopper-Pearson's
for a proportion (on group means, by betting, with ``groups=``): a bootstrap of 0/1 values
collapses to [0, 0] when no prompt changed, claiming a certainty that 16 prompts cannot give.
Details: the normalized token edit distance per prompt and a few example pairs,
which a failing gate prints.
"""

from __future__ import annotations

import numpy as np

from ..backends.base import BASE, FINETUNED
from .base import CHAT, Measurement, Param, Probe, check_chat_prompts, integer, prompt_list

_EXAMPLES = 3


def edit_distance(a, b) -> int:
    """Levenshtein distance between two token sequences."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def measure(backend, params, bootstrap) -> Measurement:
    prompts, n, chat = params["prompts"], params["max_new_tokens"], params["chat"]
    base = backend.greedy(prompts, variant=BASE, max_new_tokens=n, chat=chat)
    ft = backend.greedy(prompts, variant=FINETUNED, max_new_tokens=n, chat=chat)
    changed = np.array([tuple(a) != tuple(b) for a, b in zip(base, ft)], dtype=float)
    distance = [edit_distance(a, b) / max(len(a), len(b), 1) for a, b in zip(base, ft)]
    examples = [
        {"prompt": prompts[i], "base": backend.decode(base[i]), "finetuned": backend.decode(ft[i])}
        for i in np.flatnonzero(changed)[:_EXAMPLES]
    ]
    unchanged = [
        {"prompt": prompts[i], "both": backend.decode(base[i])} for i in np.flatnonzero(changed == 0)[:_EXAMPLES]
    ]
    evidence = [f"changed: {e['prompt']!r}: base {e['base']!r} -> fine-tuned {e['finetuned']!r}" for e in examples]
    evidence += [f"unchanged: {e['prompt']!r}: {e['both']!r}" for e in unchanged]
    return Measurement(
        values=changed,
        items=prompts,
        details={
            "edit_distance": distance,
            "mean_edit_distance": float(np.mean(distance)),
            "examples": examples,
            "evidence": evidence,
        },
        binary=True,
    )


PROBE = Probe(
    kind="greedy_change",
    doc="whether the greedy continuation changes, per prompt",
    params=(
        Param("prompts", prompt_list, items="prompt", doc="prompts to continue greedily with both models"),
        Param("max_new_tokens", integer(1), 16, doc="length of each continuation"),
        CHAT,
    ),
    measure=measure,
    check=check_chat_prompts("prompts"),
)
