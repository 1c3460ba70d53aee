"""Prompts to token ids for any engine that uses a Hugging Face tokenizer (pure: no torch).

The rules every backend must share, or their numbers would not be comparable:

* a chat prompt (``chat=True``) is rendered with the tokenizer's chat template and
  the generation prompt; a :class:`~pytest_sway.items.Conversation` carries its own
  messages, a string is one user turn;
* a completion is scored on the tokens of the *whole* text, prompt and completion
  tokenized together (the completion-boundary rule in :meth:`PromptEncoder.completion_tokens`);
* a prompt longer than the model's context is refused, naming it;
* a token's text, for the token lists, is decoded alone with its leading space kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import BackendError

#: Prompts per tokenizer call in ``encode_prompts``.
_ENCODE_PROMPTS = 256


class PromptEncoder:
    """A model's tokenizer, applied the way every probe needs it."""

    def __init__(self, tokenizer, *, model_name: str, context_length: int | None):
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.context_length = context_length
        self._texts: dict[int, str] = {}  # token id -> its text, for the token lists

    def format_prompt(self, prompt: str, *, chat: bool) -> tuple[str, bool]:
        """The text to tokenize and whether the tokenizer should add its special tokens."""
        if not chat:
            return prompt, True
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(
                f"chat=True, but the tokenizer of {self.model_name!r} has no chat template; "
                "drop chat=True, or use a chat model (one whose tokenizer_config.json or chat_template.jinja has one)"
            )
        # A Conversation (a multi-turn prompt) carries its messages; a string is one user turn.
        messages = getattr(prompt, "messages", None) or [{"role": "user", "content": prompt}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text, False  # the template already holds any BOS token

    def encode_prompts(self, prompts: Sequence[str], *, chat: bool) -> list[tuple[int, ...]]:
        formatted = [self.format_prompt(prompt, chat=chat) for prompt in prompts]
        special = formatted[0][1] if formatted else True
        seqs = []
        # A few hundred prompts per tokenizer call: the fast tokenizer batches them in Rust, and
        # what it holds per call stays bounded (all 4,096 prompts at once took 19 MiB on SmolLM2).
        for start in range(0, len(formatted), _ENCODE_PROMPTS):
            part = formatted[start : start + _ENCODE_PROMPTS]
            encoded = self.tokenizer([text for text, _ in part], add_special_tokens=special)["input_ids"]
            for ids, prompt in zip(encoded, prompts[start : start + _ENCODE_PROMPTS]):
                ids = tuple(ids)
                self.check_length(ids, prompt)
                seqs.append(ids)
        return seqs

    def completion_tokens(self, prompt: str, completion: str, *, chat: bool) -> tuple[tuple[int, ...], int]:
        """``(ids, start)``: the tokens of prompt + completion, and where the completion's begin.

        The text is tokenized whole, as the model would see it, and the
        completion's tokens are those that cover any of its characters. Where
        the tokenizer merges across the boundary (a prompt ending in a space,
        then a word), the merged token belongs to the completion: splitting
        "prompt tokens" + "completion tokens" instead would score a
        tokenization the model never produces.
        """
        text, special = self.format_prompt(prompt, chat=chat)
        boundary = len(text)
        full = text + completion
        try:
            enc = self.tokenizer(full, add_special_tokens=special, return_offsets_mapping=True)
            ids, spans = list(enc["input_ids"]), enc["offset_mapping"]
            covering = [i for i, (lo, hi) in enumerate(spans) if hi > boundary and hi > lo]
            start, stop = (covering[0], covering[-1] + 1) if covering else (len(ids), len(ids))
        except NotImplementedError:  # a slow tokenizer has no offsets: longest common prefix
            ids = list(self.tokenizer(full, add_special_tokens=special)["input_ids"])
            head = self.tokenizer(text, add_special_tokens=special)["input_ids"]
            start = next((i for i, (x, y) in enumerate(zip(ids, head)) if x != y), min(len(ids), len(head)))
            stop = len(ids)
        label = f"{prompt!r} + {completion!r}"
        if start >= stop:
            raise BackendError(f"completion of {label} encodes to no tokens")
        if start == 0:
            raise BackendError(f"completion of {label} starts the sequence; it needs a prompt before it")
        self.check_length(ids[:stop], label)
        return tuple(ids[:stop]), start

    def check_length(self, ids, label: str) -> None:
        if not ids:
            raise BackendError(f"prompt {short(label)} encodes to no tokens")
        if self.context_length is not None and len(ids) > self.context_length:
            raise BackendError(
                f"prompt {short(label)} is {len(ids)} tokens long, more than the model's context of "
                f"{self.context_length} tokens; shorten it"
            )

    def token_texts(self, ids: set) -> dict:
        """Each id's text, decoded alone (one batched tokenizer call for the new ones),
        special tokens and spaces kept; remembered for the session."""
        new = sorted(ids - self._texts.keys())
        if new:
            texts = self.tokenizer.batch_decode(
                [[i] for i in new], skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            pieces = self.tokenizer.convert_ids_to_tokens(new)
            for i, text, piece in zip(new, texts, pieces):
                # SentencePiece marks a leading space with U+2581 and drops it when decoding
                # one token alone; keep it, as a byte-level BPE's decoding does.
                if isinstance(piece, str) and piece.startswith("\u2581") and not text.startswith(" "):
                    text = " " + text
                self._texts[i] = text
        return self._texts

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def short(text: str, limit: int = 60) -> str:
    """A prompt as an error message quotes it: repr'd, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
