"""What a fine-tune changed, token by token (pure; no numpy needed).

Per prompt, a backend compares the two next-token distributions after it and
ranks the vocabulary by the **change in probability**, ``p_ft(t) - p_base(t)``:
the ``k`` tokens it raised most and the ``k`` it lowered most. The change in
probability is bounded (-1 to 1) and sums to zero over the vocabulary, so it
names the tokens that carry the divergence; a ratio or a change in log
probability would rank rare tokens first (0.00001 -> 0.0001 is a tenfold rise
that moves nothing a user would see).

A backend computes these on the device from the logits the divergences
already use and returns only the candidates (a few ids and their two
probabilities per prompt); :func:`top_tokens` picks and orders them,
:func:`most_often` counts over a test's prompts, and :func:`token_details`
builds the JSON-able ``details`` entries of ``delta_kl``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

#: Tokens per prompt, raised and lowered each.
TOP_TOKENS = 5
#: Tokens in the over-all-prompts lists (most often promoted, most often suppressed).
TOP_OVERALL = 10
#: What the lists rank, in the words the reports use.
RANKED_BY = "p_ft - p_base"


class TokenChange(NamedTuple):
    """One token's next-token probability under the base and the fine-tune."""

    token: str  # its text: the tokenizer's decoding of this one id, spaces kept
    id: int
    p_base: float
    p_ft: float

    @property
    def change(self) -> float:
        return self.p_ft - self.p_base

    def as_dict(self) -> dict:
        return {"token": self.token, "id": self.id, "p_base": self.p_base, "p_ft": self.p_ft}


class TopTokens(NamedTuple):
    """Per prompt: the tokens the fine-tune raised most and lowered most."""

    #: Largest rise first; only tokens whose probability rose.
    raised: tuple[TokenChange, ...]
    #: Largest fall first; only tokens whose probability fell.
    lowered: tuple[TokenChange, ...]


def top_tokens(ids: Iterable, p_base: Iterable, p_ft: Iterable, k: int, text: Callable[[int], str]) -> TopTokens:
    """The ``k`` most raised and ``k`` most lowered of the candidate tokens.

    ``ids``, ``p_base`` and ``p_ft`` are parallel (any order; a backend passes
    the whole vocabulary or its device's top-k of both directions; repeats are
    ignored). A token whose probability did not change is in neither list, so
    identical models give two empty lists. Equal changes are ordered by id.
    """
    seen: dict[int, TokenChange] = {}
    for i, b, f in zip(ids, p_base, p_ft):
        i = int(i)
        if i not in seen:
            seen[i] = TokenChange(text(i), i, float(b), float(f))
    changes = list(seen.values())
    raised = sorted((c for c in changes if c.change > 0), key=lambda c: (-c.change, c.id))[:k]
    lowered = sorted((c for c in changes if c.change < 0), key=lambda c: (c.change, c.id))[:k]
    return TopTokens(tuple(raised), tuple(lowered))


def most_often(tops: Sequence[TopTokens], side: str, limit: int = TOP_OVERALL) -> list[dict]:
    """Over prompts: the tokens found most often in their ``side`` ("raised" or
    "lowered") lists, with how many prompts' lists hold each and the mean change
    there. Equal counts: the larger total change first, then the lower id."""
    if side not in ("raised", "lowered"):
        raise ValueError(f"side must be 'raised' or 'lowered', got {side!r}")
    tally: dict[int, list] = {}  # id -> [text, count, total change]
    for top in tops:
        for c in getattr(top, side):
            entry = tally.setdefault(c.id, [c.token, 0, 0.0])
            entry[1] += 1
            entry[2] += c.change
    ranked = sorted(tally.items(), key=lambda item: (-item[1][1], -abs(item[1][2]), item[0]))[:limit]
    return [
        {"token": text, "id": token_id, "count": count, "mean_change": total / count}
        for token_id, (text, count, total) in ranked
    ]


def token_details(prompts: Sequence[str], tops: Sequence[TopTokens], *, k: int) -> dict:
    """``delta_kl``'s token entries: the tokens most often promoted and suppressed
    over the prompts, and per prompt (in the order given) its raised and lowered lists."""
    return {
        "tokens_per_prompt": k,
        "tokens_ranked_by": RANKED_BY,
        "promoted": most_often(tops, "raised"),
        "suppressed": most_often(tops, "lowered"),
        "token_changes": [
            {
                "prompt": str(prompt),
                "raised": [c.as_dict() for c in top.raised],
                "lowered": [c.as_dict() for c in top.lowered],
            }
            for prompt, top in zip(prompts, tops)
        ],
    }


def evidence_lines(details: dict, n: int, shown: int = 3) -> list[str]:
    """Two lines for a failed gate's message: the tokens most often promoted and suppressed."""
    lines = []
    for word in ("promoted", "suppressed"):
        entries = details.get(word) or []
        if entries:
            parts = [f"{e['token']!r} ({e['count']}/{n} prompts, {e['mean_change']:+.3g})" for e in entries[:shown]]
            lines.append(
                f"tokens most often {word} (in a prompt's top {details.get('tokens_per_prompt')}): " + ", ".join(parts)
            )
    return lines
