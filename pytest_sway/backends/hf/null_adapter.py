"""A null adapter: the real LoRA adapter's structure and update sizes, random directions.

For every LoRA module, A and B are replaced by Gaussian matrices, B rescaled so
that the update ``B @ A`` has the same Frobenius norm as the trained one's
(``scaling`` is untouched, so the effective update norms match too). What a
null adapter does to the model is what an update of that size does by chance:
the noise floor against which ``null_contrast`` measures the real adapter.
"""

from __future__ import annotations

import contextlib

from ...errors import BackendError


@contextlib.contextmanager
def null_adapter(peft_model, seed: int):
    """Swap in the null adapter for ``seed``; the trained weights are restored on exit, even on error."""
    import torch

    layers = _lora_layers(peft_model)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    saved = []
    try:
        with torch.no_grad():
            for _, layer, adapter in layers:
                a = layer.lora_A[adapter].weight
                b = layer.lora_B[adapter].weight
                saved.append((a, a.detach().clone(), b, b.detach().clone()))
                new_a, new_b = null_pair(a, b, generator)
                a.copy_(new_a.to(a.dtype))
                b.copy_(new_b.to(b.dtype))
        yield peft_model
    finally:
        with torch.no_grad():
            for a, a_saved, b, b_saved in saved:
                a.copy_(a_saved)
                b.copy_(b_saved)


def null_pair(a, b, generator):
    """Gaussian ``(A, B)`` (float32, A drawn first) of ``a`` and ``b``'s shapes, ``B`` rescaled so
    that ``||B A||_F`` is the trained ``||b a||_F``. Every engine draws its null adapters here, in
    the modules' sorted order, so a null adapter is the same weights whichever engine serves it."""
    import torch

    target = update_norm(a, b)
    new_a = torch.randn(a.shape, generator=generator, dtype=torch.float32)
    new_b = torch.randn(b.shape, generator=generator, dtype=torch.float32)
    now = update_norm(new_a, new_b)
    if now > 0:
        new_b *= target / now
    return new_a, new_b


def update_norm(a, b) -> float:
    """``||b @ a||_F`` through the rank-r Gram matrices, without forming b @ a:
    ``||BA||_F^2 = trace((B^T B)(A A^T))``."""
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    return float(((b64.T @ b64) * (a64 @ a64.T)).sum().clamp(min=0).sqrt())


def _lora_layers(peft_model):
    """(name, layer, adapter name) for every active LoRA linear layer, in a stable order."""
    from peft.tuners.lora import LoraLayer

    found = []
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                if adapter in getattr(module, "lora_embedding_A", {}):
                    raise BackendError(f"null_contrast supports LoRA on linear layers; {name} is an embedding LoRA")
                continue
            if getattr(module, "use_dora", {}).get(adapter, False):
                raise BackendError(f"null_contrast supports plain LoRA adapters; {name} uses DoRA")
            found.append((name, module, adapter))
    if not found:
        raise BackendError("null_contrast needs a LoRA adapter with linear LoRA layers; none is active")
    return sorted(found, key=lambda entry: entry[0])
