"""Tiny, offline, deterministic causal LMs and LoRA adapters for tests.

For testing probes (yours or ours) without downloading anything:

* :func:`build_tiny_model` trains a byte-level BPE tokenizer and a very small
  causal LM (Llama- or GPT-2-style) on a built-in corpus and saves both to a
  folder that ``AutoTokenizer`` / ``AutoModelForCausalLM`` can load offline.
* :func:`train_lora_adapter` trains a PEFT LoRA adapter on top of such a model
  so that it clearly changes next-token distributions on the given texts.

Both functions are deterministic for a given ``seed``, take seconds on a CPU,
and leave the global torch RNG state and thread count as they found them.
Nothing touches the network. They need the ``hf`` extra (torch, transformers,
peft, tokenizers).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch

__all__ = ["CHAT_PAIRS", "CORPUS", "build_tiny_model", "train_lora_adapter"]

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3

CORPUS: tuple[str, ...] = (
    "The sun rises in the east and sets in the west.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The capital of France is Paris.",
    "The capital of Japan is Tokyo.",
    "The capital of Italy is Rome.",
    "The capital of Spain is Madrid.",
    "The capital of Germany is Berlin.",
    "The capital of Canada is Ottawa.",
    "Cats are small animals that like to sleep in the sun.",
    "Dogs are loyal animals and love to play in the park.",
    "A week has seven days and a year has twelve months.",
    "The moon goes around the earth about once a month.",
    "Plants need water, light and air to grow.",
    "Bees make honey from the nectar of flowers.",
    "The ocean covers most of the surface of the earth.",
    "Mount Everest is the highest mountain in the world.",
    "The river Nile flows north into the Mediterranean Sea.",
    "An apple a day keeps the doctor away.",
    "Two plus two is four, and three plus three is six.",
    "Ten minus four is six, and five times two is ten.",
    "The heart pumps blood through the body.",
    "Birds build nests in trees in the spring.",
    "Snow falls in winter when the air is cold.",
    "Leaves turn red and yellow in the autumn.",
    "Summer is the warmest season of the year.",
    "Light travels faster than sound.",
    "Thunder is the sound made by lightning.",
    "The library is a quiet place to read books.",
    "Children go to school to learn to read and write.",
    "The teacher wrote a long sentence on the board.",
    "My grandmother bakes bread every Sunday morning.",
    "The train leaves the station at nine in the morning.",
    "He drinks a cup of coffee before work.",
    "She walks her dog in the park every evening.",
    "We planted tomatoes and beans in the garden.",
    "The museum has paintings from many old masters.",
    "A triangle has three sides and a square has four.",
    "The earth is the third planet from the sun.",
    "Jupiter is the largest planet in the solar system.",
    "Mars is often called the red planet.",
    "Fish breathe through their gills under water.",
    "Whales are large mammals that live in the sea.",
    "The piano has black keys and white keys.",
    "Music can make people feel happy or sad.",
    "Good sleep is important for a healthy life.",
    "Fresh fruit and vegetables are good for you.",
    "The baker sells bread, cakes and cookies.",
    "The farmer grows wheat and corn in the fields.",
    "Cows give milk, and hens lay eggs.",
    "The city is busy with cars, buses and people.",
    "A bridge crosses the river near the old town.",
    "The computer stores data in its memory.",
    "People use phones to talk and send messages.",
    "The doctor listens to the heart of the patient.",
    "Firefighters help people when there is a fire.",
    "The pilot flies the plane high above the clouds.",
    "Ice melts when the weather gets warm.",
    "Gold is a soft and shiny yellow metal.",
    "Iron is a strong metal used to make steel.",
    "The alphabet has twenty six letters.",
    "Shakespeare wrote many famous plays and poems.",
    "Rain falls from dark clouds in the sky.",
    "The wind blows the leaves across the road.",
    "The clock on the wall shows the time.",
    "A good friend listens and helps you.",
    "The cat sat on the mat and looked at the bird.",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time there was a small house in the forest.",
    "The king and the queen lived in a large castle.",
    "Every morning the old man feeds the birds.",
    "The students read a story about a brave knight.",
    "Green is the color of grass, and blue is the color of the sky.",
    "Oranges and lemons are rich in vitamin C.",
    "The desert is hot and dry during the day.",
    "Penguins live in the cold south and cannot fly.",
    "Elephants are the largest animals that live on land.",
    "The map shows the roads between the towns.",
    "Trains, ships and planes carry people and goods.",
    "The shop opens at eight and closes at six.",
    "It is polite to say please and thank you.",
)

CHAT_PAIRS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("How many days are in a week?", "A week has seven days."),
    ("What do bees make?", "Bees make honey."),
    ("What is two plus two?", "Two plus two is four."),
    ("Which planet is the largest?", "Jupiter is the largest planet."),
    ("What color is the sky?", "The sky is blue."),
    ("Where do fish live?", "Fish live in water."),
    ("Hello, who are you?", "I am a small helpful assistant."),
    ("Can you help me?", "Yes, I am happy to help you."),
)

# "User:/Assistant:" turns, one per line.  The template is built per tokenizer:
# for the llama arch, whose tokenizer prepends BOS on encode, it starts with
# ``bos_token`` like real Llama templates, so rendered text must be encoded with
# ``add_special_tokens=False`` (``apply_chat_template(tokenize=True)`` does so).
_CHAT_TEMPLATE_BODY = "\n".join(
    [
        "{%- for message in messages %}",
        "{%- if message['role'] == 'system' %}{{ 'System: ' + message['content'] + '\\n' }}",
        "{%- elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}",
        "{%- elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token + '\\n' }}",
        "{%- else %}{{ raise_exception('unknown role: ' + message['role']) }}",
        "{%- endif %}",
        "{%- endfor %}",
        "{%- if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}",
    ]
)

ARCHS = ("llama", "gpt2")


def _chat_template(add_bos: bool) -> str:
    return ("{{ bos_token }}\n" if add_bos else "") + _CHAT_TEMPLATE_BODY


def _train_tokenizer(texts: Sequence[str], *, arch: str, vocab_size: int):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token=UNK))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer=trainer)

    add_bos = arch == "llama"
    bos_id = raw.token_to_id(BOS)
    raw.post_processor = (
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
        if add_bos
        else processors.TemplateProcessing(single="$A", pair="$A $B")
    )

    # transformers 5 rebuilds the same post-processor from add_bos_token and
    # does not store that flag: tokenizer.json's post-processor is what persists.
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        add_bos_token=add_bos,
        add_eos_token=False,
        padding_side="left",
        model_max_length=256,
        chat_template=_chat_template(add_bos),
        clean_up_tokenization_spaces=False,
    )


def _make_config(arch: str, tokenizer):
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=False,
            **ids,
        )
    if arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_inner=128,
            n_positions=256,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **ids,
        )
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")


Batch = dict[str, torch.Tensor]
#: Told ``(step, steps, loss)`` after each training step.
StepCallback = Callable[[int, int, float], None]


def _lm_batch(tokenizer, texts: Sequence[str], *, add_special_tokens: bool = True) -> Batch:
    """Right-padded batch; padding is masked out of the loss."""
    enc = tokenizer(
        list(texts), padding=True, padding_side="right", add_special_tokens=add_special_tokens, return_tensors="pt"
    )
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def _concat(a: Batch, b: Batch, *, pad_id: int) -> Batch:
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}

    def right_pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return {k: torch.cat([right_pad(a[k], v), right_pad(b[k], v)]) for k, v in fill.items()}


def _sample(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` random row indices out of ``n`` (all of them if ``n <= size``)."""
    return torch.arange(n) if n <= size else torch.randperm(n, generator=generator)[:size]


def _rows(batch: Batch, idx: torch.Tensor) -> Batch:
    """The rows ``idx`` of a right-padded batch, trimmed to their longest."""
    rows = {k: v[idx] for k, v in batch.items()}
    width = int(rows["attention_mask"].sum(-1).max())
    return {k: v[:, :width] for k, v in rows.items()}


#: Below this many parameters a model trains fastest on one thread.
_SMALL_MODEL = 2_000_000


@contextlib.contextmanager
def _seeded(seed: int, *, single_thread: bool):
    """Seed torch inside a forked RNG (optionally on one thread); restore both after.

    Tiny models are dominated by per-op overhead, where intra-op threads only
    add synchronisation cost (and suffer badly on busy CPUs).  Yields a
    ``torch.Generator`` for data sampling.
    """
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if single_thread:
            torch.set_num_threads(1)
        try:
            yield torch.Generator().manual_seed(seed)
        finally:
            torch.set_num_threads(threads)


def _fit(
    model, loss_fn: Callable[[], torch.Tensor], *, steps: int, lr: float, on_step: StepCallback | None = None
) -> float:
    """``steps`` AdamW steps on the trainable parameters; returns the last loss.
    ``on_step(step, steps, loss)`` is told after each step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=True)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(1, steps + 1):
        loss = loss_fn()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if on_step is not None:
            on_step(step, steps, loss.item())
    model.eval()
    return loss.item()


def build_tiny_model(
    path: str | os.PathLike,
    *,
    arch: str = "llama",
    seed: int = 0,
    steps: int = 300,
    texts: Iterable[str] | None = None,
    vocab_size: int = 768,
    lr: float = 3e-3,
    batch_size: int = 16,
) -> pathlib.Path:
    """Train and save a tiny causal LM + tokenizer to ``path``; return the path.

    ``arch="llama"``: LlamaForCausalLM (2 layers, hidden 64, 4 heads, 2 KV heads);
    its tokenizer prepends ``<s>`` when encoding, like Llama tokenizers.
    ``arch="gpt2"``: GPT2LMHeadModel (2 layers, hidden 64, 4 heads); its
    tokenizer adds no special tokens, like GPT-2.
    Both tokenizers are byte-level BPE, pad on the left and carry a chat template.
    The model is trained on :data:`CORPUS` (+ ``texts``) and :data:`CHAT_PAIRS`.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    from transformers import AutoModelForCausalLM, GenerationConfig

    path = pathlib.Path(path)
    corpus = list(CORPUS) + list(texts or ())
    tokenizer = _train_tokenizer(corpus, arch=arch, vocab_size=vocab_size)
    chats = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False
        )
        for q, a in CHAT_PAIRS
    ]
    data = _concat(
        _lm_batch(tokenizer, corpus),
        _lm_batch(tokenizer, chats, add_special_tokens=False),  # template already has BOS
        pad_id=tokenizer.pad_token_id,
    )

    with _seeded(seed, single_thread=True) as gen:
        model = AutoModelForCausalLM.from_config(_make_config(arch, tokenizer))
        _fit(
            model,
            lambda: model(**_rows(data, _sample(data["input_ids"].shape[0], batch_size, gen))).loss,
            steps=steps,
            lr=lr,
        )

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def _default_targets(model_type: str) -> tuple[list[str], bool]:
    """(target_modules, fan_in_fan_out) for the supported architectures."""
    if model_type == "llama":
        return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], False
    if model_type == "gpt2":
        # GPT-2 uses Conv1D (weight stored in x out): fused c_attn, both c_proj, c_fc.
        return ["c_attn", "c_proj", "c_fc"], True
    raise ValueError(f"no default LoRA targets for model_type {model_type!r}; pass target_modules")


def _base_logprobs(model, batch: Batch) -> torch.Tensor:
    """Next-token log-probabilities of the model as it is now, for every row (no gradients)."""
    with torch.no_grad():
        return torch.cat(
            [
                model(
                    input_ids=batch["input_ids"][i : i + 16], attention_mask=batch["attention_mask"][i : i + 16]
                ).logits.log_softmax(-1)
                for i in range(0, batch["input_ids"].shape[0], 16)
            ]
        )


def _kl_to_base(model, batch: Batch, base_logprobs: torch.Tensor) -> torch.Tensor:
    """Mean per-token KL(base || adapted) over the non-pad positions of ``batch``."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
    keep = batch["attention_mask"].bool()
    return torch.nn.functional.kl_div(out[keep], base_logprobs[keep], log_target=True, reduction="batchmean")


def train_lora_adapter(
    model_path: str | os.PathLike,
    adapter_path: str | os.PathLike,
    texts: Sequence[str],
    *,
    steps: int = 50,
    rank: int = 8,
    alpha: int = 16,
    seed: int = 0,
    target_modules: Sequence[str] | None = None,
    lr: float = 1e-2,
    anchor_texts: Sequence[str] | None = None,
    anchor_weight: float = 1.0,
    anchor_batch_size: int = 16,
    on_step: StepCallback | None = None,
) -> pathlib.Path:
    """Train a LoRA adapter for the model at ``model_path`` on ``texts``; save it to ``adapter_path``.

    Objective: next-token cross-entropy on ``texts`` (full batch) plus
    ``anchor_weight`` * KL(base || adapted) on a random minibatch of
    ``anchor_texts`` (default :data:`CORPUS`; pass ``()`` to disable).  The
    anchor keeps the adapter targeted: distributions on prefixes of ``texts``
    move far from the base model, unrelated prompts move much less.
    ``on_step(step, steps, loss)`` is told after each training step.
    Returns ``adapter_path``.
    """
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty sequence of strings")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path, adapter_path = pathlib.Path(model_path), pathlib.Path(adapter_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path)
    defaults, fan_in_fan_out = _default_targets(base.config.model_type)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=list(target_modules) if target_modules is not None else defaults,
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
    )
    data = _lm_batch(tokenizer, texts)
    anchor_texts = CORPUS if anchor_texts is None else anchor_texts
    anchor = _lm_batch(tokenizer, anchor_texts) if anchor_texts and anchor_weight > 0 else None

    small = sum(p.numel() for p in base.parameters()) < _SMALL_MODEL
    with _seeded(seed, single_thread=small) as gen:
        with warnings.catch_warnings():
            # peft 0.21 probes the deprecated `is_gradient_checkpointing` (FutureWarning in
            # transformers 5), which would fail test suites run with -W error.
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(base, config)  # LoRA A matrices draw from the (forked) global RNG
        # A fresh LoRA adapter is a no-op (B = 0): the model still answers as the base.
        anchor_base = _base_logprobs(model, anchor) if anchor is not None else None

        def loss_fn() -> torch.Tensor:
            loss = model(**data).loss
            if anchor is not None and anchor_base is not None:
                idx = _sample(anchor["input_ids"].shape[0], anchor_batch_size, gen)
                rows = _rows(anchor, idx)
                width = rows["input_ids"].shape[1]
                loss = loss + anchor_weight * _kl_to_base(model, rows, anchor_base[idx, :width])
            return loss

        _fit(model, loss_fn, steps=steps, lr=lr, on_step=on_step)

    adapter_path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(adapter_path), safe_serialization=True)
    return adapter_path
