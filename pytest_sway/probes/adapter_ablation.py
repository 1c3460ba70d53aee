"""adapter_ablation: does the effect grow smoothly with the adapter's strength?

Per prompt and scale s: the divergence between the base and the model whose
adapter update is multiplied by s (LoRA scaling; restored afterwards). Per
prompt: Spearman's rank correlation between scale and divergence; estimate:
its mean (1 = every prompt's divergence grows monotonically with the adapter).
Scale 0 is the base itself (divergence exactly 0) and scale 1 the fine-tune
(delta_kl's values). Details hold the mean divergence and its CI per scale.
"""

from __future__ import annotations

import numpy as np

from ..backends.base import Variant, divergences_by_variant
from ..backends.divergence import SUPPORT
from ..backends.topk import refuse_bounds
from .base import (
    CHAT,
    Measurement,
    Param,
    Probe,
    check_chat_prompts,
    divergence_param,
    number_list,
    prompt_list,
)

DEFAULT_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)


def spearman(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Spearman correlation of ``x`` with each row of ``rows`` (average ranks for ties);
    0 where a row is constant (no monotone relation to speak of)."""
    from scipy.stats import rankdata

    rx = rankdata(x)
    ry = rankdata(rows, axis=1)
    rx, ry = rx - rx.mean(), ry - ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx**2).sum() * (ry**2).sum(axis=1))
    return np.divide((ry * rx).sum(axis=1), denom, out=np.zeros(len(rows)), where=denom > 0)


def measure(backend, params, bootstrap) -> Measurement:
    prompts, scales = params["prompts"], np.array(params["scales"])
    per_scale = divergences_by_variant(
        backend,
        prompts,
        divergence=params["divergence"],
        variants=[Variant(scale=s) for s in scales],
        chat=params["chat"],
    )
    curves = np.stack([refuse_bounds("adapter_ablation", v) for v in per_scale], axis=1)  # prompts x scales
    curve = []
    for j, s in enumerate(scales):
        ci = bootstrap.interval(curves[:, j], support=SUPPORT[params["divergence"]])
        curve.append({"scale": float(s), "mean": float(curves[:, j].mean()), "ci_low": ci.low, "ci_high": ci.high})
    return Measurement(
        values=spearman(scales, curves),
        items=prompts,
        details={"curve": curve, "divergences": curves.tolist()},
        support=(-1.0, 1.0),
    )


PROBE = Probe(
    kind="adapter_ablation",
    doc="rank correlation between adapter scale and divergence from the base, per prompt",
    params=(
        Param("prompts", prompt_list, items="prompt", doc="prompts whose response to the adapter's strength is traced"),
        Param("scales", number_list(min_len=3), DEFAULT_SCALES, doc="multipliers of the adapter's update"),
        divergence_param(),
        CHAT,
    ),
    measure=measure,
    check=check_chat_prompts("prompts"),
    label_param="divergence",
)
