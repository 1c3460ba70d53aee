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
:func:`most_often` counts over a test's prompts, :func:`token_details`
builds the ``details`` entries of ``delta_kl``, and :class:`TokenChanges` holds
every prompt's lists compactly.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
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


def most_often(tops: Iterable[TopTokens], side: str, limit: int = TOP_OVERALL) -> list[dict]:
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


def token_details(prompts: Sequence[str], tops: Iterable[TopTokens], *, k: int) -> dict:
    """``delta_kl``'s token entries: per prompt (in the order given) its raised and
    lowered lists, as a :class:`TokenChanges`, and over the prompts the tokens most
    often promoted and suppressed. ``tops`` is read once, as it comes."""
    table = TokenChanges(k)
    for prompt, top in zip(prompts, tops):
        table.append(prompt, top)
    return {
        "tokens_per_prompt": k,
        "tokens_ranked_by": RANKED_BY,
        "promoted": most_often(table.tops(), "raised"),
        "suppressed": most_often(table.tops(), "lowered"),
        "token_changes": table,
    }


#: What marks a :class:`TokenChanges` packed into builtins (``TokenChanges.packed``).
PACKED = "pytest-sway token changes, packed, 1"


class TokenChanges(Sequence):
    """Every prompt's raised and lowered lists, in the order given, held compactly.

    It reads as the JSON report's ``token_changes``: a sequence of
    ``{"prompt", "raised", "lowered"}``, each list of ``{"token", "id", "p_base",
    "p_ft"}`` (``list(changes)`` gives them as plain lists and dicts). It stores 16
    bytes of probabilities and 4 of id per listed token and each token's text once:
    as Python dicts the lists took about 3 KB per prompt, which a session kept for
    every delta_kl test until its reports were written (12 MiB per 4,096 prompts).
    """

    def __init__(self, k: int):
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k!r}")
        self.k = k
        self._prompts: list[str] = []
        # 2k slots per prompt (raised, then lowered), id -1 after a list's end.
        self._ids = array("i")
        self._p_base = array("d")
        self._p_ft = array("d")
        self._texts: dict[int, str] = {}

    def append(self, prompt: str, top: TopTokens) -> None:
        """Add the next prompt's lists (at most ``k`` tokens each)."""
        for side in (top.raised, top.lowered):
            if len(side) > self.k:
                raise ValueError(f"{len(side)} tokens in a list of at most {self.k}")
            for c in side:
                self._ids.append(c.id)
                self._p_base.append(c.p_base)
                self._p_ft.append(c.p_ft)
                self._texts.setdefault(c.id, c.token)
            missing = self.k - len(side)
            self._ids.extend([-1] * missing)
            self._p_base.extend([0.0] * missing)
            self._p_ft.extend([0.0] * missing)
        self._prompts.append(str(prompt))

    def __len__(self) -> int:
        return len(self._prompts)

    def _side(self, i: int, side: int) -> tuple[TokenChange, ...]:
        out = []
        start = (2 * i + side) * self.k
        for j in range(start, start + self.k):
            token_id = self._ids[j]
            if token_id < 0:
                break
            out.append(TokenChange(self._texts[token_id], token_id, self._p_base[j], self._p_ft[j]))
        return tuple(out)

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"prompt {i} of {n}")
        return i % n

    def top(self, i: int) -> TopTokens:
        """Prompt ``i``'s lists."""
        i = self._index(i)
        return TopTokens(self._side(i, 0), self._side(i, 1))

    def tops(self) -> Iterator[TopTokens]:
        return (self.top(i) for i in range(len(self)))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        top = self.top(i)  # checks i; a negative one reads the prompt list from the end too
        return {
            "prompt": self._prompts[i],
            "raised": [c.as_dict() for c in top.raised],
            "lowered": [c.as_dict() for c in top.lowered],
        }

    def __eq__(self, other) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable (``append``), compared by content

    def __repr__(self) -> str:
        return f"<TokenChanges: {len(self)} prompts, up to {self.k} tokens raised and lowered each>"

    def packed(self) -> dict:
        """Plain builtins (bytes for the numbers) that ``unpack`` reads back: how a result
        row carries the lists to xdist's controller and keeps them until the reports."""
        return {
            "format": PACKED,
            "k": self.k,
            "byteorder": sys.byteorder,
            "prompts": self._prompts,
            "ids": self._ids.tobytes(),
            "p_base": self._p_base.tobytes(),
            "p_ft": self._p_ft.tobytes(),
            "texts": self._texts,
        }

    @classmethod
    def unpack(cls, packed: dict) -> TokenChanges:
        table = cls(packed["k"])
        table._prompts = packed["prompts"]
        table._texts = packed["texts"]
        for name in ("_ids", "_p_base", "_p_ft"):
            column = getattr(table, name)
            column.frombytes(packed[name[1:]])
            if packed["byteorder"] != sys.byteorder:
                column.byteswap()
        return table


def is_packed(value) -> bool:
    """Whether ``value`` is a ``TokenChanges.packed()``."""
    return isinstance(value, dict) and value.get("format") == PACKED


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
