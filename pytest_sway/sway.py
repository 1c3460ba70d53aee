"""``Sway``: the probes bound to one backend, registry and seed, one typed method per built-in probe.

The ``sway`` fixture is one of these, seeded per test.
"""

from __future__ import annotations

from typing import Any

from .measure.result import ProbeResult
from .measure.run import run_probe
from .probes import ProbeRegistry, default_registry
from .probes.adapter_ablation import DEFAULT_SCALES
from .stats.bootstrap import Bootstrap
from .stats.drivers import DEFAULT_DRIVERS
from .stats.methods import DEFAULT_CONFIDENCE


class Sway:
    """Probes bound to one backend, registry and bootstrap seed.

    The ``sway`` fixture is one of these, seeded per test. ``run`` takes any
    registered probe; the typed methods below cover the built-in ones.
    ``confidence``, ``resamples`` and ``method`` given to a call override the
    object's defaults for that call.
    """

    def __init__(
        self,
        backend,
        *,
        seed: int = 0,
        confidence: float = DEFAULT_CONFIDENCE,
        resamples: int | None = None,
        method: str | None = None,
        registry: ProbeRegistry | None = None,
        on_result=None,
        base_dir=None,
        drivers: int = DEFAULT_DRIVERS,
    ):
        self.backend = backend
        #: Where relative paths of items files start (the ``sway`` fixture: the test file's folder).
        self.base_dir = base_dir
        self.bootstrap = Bootstrap(confidence=confidence, resamples=resamples, method=method, seed=seed)
        self.registry = registry if registry is not None else default_registry()
        #: How many items a failed gate names per side (``--sway-drivers``).
        self.drivers = drivers
        self._on_result = on_result

    def run(
        self,
        kind: str,
        *,
        confidence: float | None = None,
        resamples: int | None = None,
        method: str | None = None,
        **params: Any,
    ) -> ProbeResult:
        b = self.bootstrap
        result = run_probe(
            kind,
            self.backend,
            seed=b.seed,
            confidence=b.confidence if confidence is None else confidence,
            resamples=b.resamples if resamples is None else resamples,
            method=b.method if method is None else method,
            registry=self.registry,
            base_dir=self.base_dir,
            drivers=self.drivers,
            **params,
        )
        if self._on_result is not None:
            self._on_result(result)
        return result

    # One typed method per built-in probe; ``**ci`` takes confidence, resamples, method and groups
    # (one group label per item: the bootstrap resamples whole groups). Items given as a mapping
    # {"slice name": [...]} are slices: an estimate and interval each, and a gate judges every one.

    def delta_kl(self, prompts, *, divergence: str = "js", chat: bool = False, **ci) -> ProbeResult:
        """Divergence between base and fine-tuned next-token distributions, per prompt."""
        return self.run("delta_kl", prompts=prompts, divergence=divergence, chat=chat, **ci)

    def completion_lift(self, cases, *, per_token: bool = True, chat: bool = False, **ci) -> ProbeResult:
        """log p_ft(completion | prompt) - log p_base(completion | prompt), per (prompt, completion)."""
        return self.run("completion_lift", cases=cases, per_token=per_token, chat=chat, **ci)

    def perplexity_shift(self, texts, *, window: int | None = None, stride: int | None = None, **ci) -> ProbeResult:
        """Mean NLL per token under the fine-tune minus under the base, per text (positive = worse)."""
        return self.run("perplexity_shift", texts=texts, window=window, stride=stride, **ci)

    def preference_shift(self, triples, *, per_token: bool = False, chat: bool = False, **ci) -> ProbeResult:
        """Change in the margin log p(chosen) - log p(rejected), per (prompt, chosen, rejected)."""
        return self.run("preference_shift", triples=triples, per_token=per_token, chat=chat, **ci)

    def adapter_ablation(
        self, prompts, *, scales=DEFAULT_SCALES, divergence: str = "js", chat: bool = False, **ci
    ) -> ProbeResult:
        """Spearman correlation of adapter scale with divergence from the base, per prompt."""
        return self.run("adapter_ablation", prompts=prompts, scales=scales, divergence=divergence, chat=chat, **ci)

    def null_contrast(
        self, prompts, *, seeds: int = 3, divergence: str = "js", chat: bool = False, **ci
    ) -> ProbeResult:
        """Divergence under the adapter minus under random adapters of its size, per prompt."""
        return self.run("null_contrast", prompts=prompts, seeds=seeds, divergence=divergence, chat=chat, **ci)

    def greedy_change(self, prompts, *, max_new_tokens: int = 16, chat: bool = False, **ci) -> ProbeResult:
        """1 if the greedy continuation changes, else 0, per prompt (Clopper-Pearson interval)."""
        return self.run("greedy_change", prompts=prompts, max_new_tokens=max_new_tokens, chat=chat, **ci)

    def response_divergence(
        self, pairs=None, *, prompts=None, max_new_tokens: int = 32, divergence: str = "js", chat: bool = False, **ci
    ) -> ProbeResult:
        """Mean divergence over a teacher-forced response (given, or the base's greedy one), per item."""
        return self.run(
            "response_divergence",
            pairs=pairs,
            prompts=prompts,
            max_new_tokens=max_new_tokens,
            divergence=divergence,
            chat=chat,
            **ci,
        )

    def choice_accuracy(self, questions, *, normalize: str = "none", chat: bool = False, **ci) -> ProbeResult:
        """correct_ft - correct_base per (question, choices, answer_index), with Tango's paired interval."""
        return self.run("choice_accuracy", questions=questions, normalize=normalize, chat=chat, **ci)
