"""Reduced-precision inference without autocast: the matmul weights are cast once.

Autocast casts every fp32 weight to bf16 on every call; with ``cache_enabled=False`` (required inside
a CUDA graph) that is all 670 M HMR 2.0 weights re-read and re-written per frame. ``cast_matmul_weights_``
does the same arithmetic as autocast with the cast done once:

- Linear and Conv2d weights and biases become ``dtype``; a forward pre-hook casts their input to it
  (what autocast does to the activations). Their output stays ``dtype``.
- Everything else keeps fp32: LayerNorm parameters and statistics, position embeddings (so the
  residual stream is fp32, as under autocast, where a bf16 branch added to it promotes to fp32), and
  the modules named in ``keep`` (e.g. small readout layers whose outputs feed rotation maths and cameras).

The result holds no fp32 copy of a cast weight (``fp32_matmul_weights`` lists any that remain).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

MATMUL_MODULES = (nn.Linear, nn.Conv2d)


def _cast_input(module: nn.Module, args: tuple) -> tuple:
    x = args[0]
    dtype = module.weight.dtype
    return args if x.dtype == dtype else (x.to(dtype), *args[1:])


@torch.no_grad()
def cast_matmul_weights_(model: nn.Module, dtype: torch.dtype, keep: Sequence[str] = ()) -> nn.Module:
    """Cast ``model``'s Linear/Conv2d layers to ``dtype`` in place (see module doc). ``keep``: module
    name prefixes left in fp32. Idempotent: a layer already cast gets no second hook."""
    keep = tuple(keep)
    for name, module in model.named_modules():
        if not isinstance(module, MATMUL_MODULES) or (keep and name.startswith(keep)):
            continue
        if getattr(module, "_lart_cast", None) is None:
            module._lart_cast = module.register_forward_pre_hook(_cast_input)
        module.to(dtype)
    return model


def fp32_matmul_weights(model: nn.Module, keep: Sequence[str] = ()) -> list[str]:
    """Names of Linear/Conv2d weights still in fp32 outside ``keep`` (empty after a full cast)."""
    keep = tuple(keep)
    return [f"{name}.weight" for name, m in model.named_modules()
            if isinstance(m, MATMUL_MODULES) and not (keep and name.startswith(keep))
            and m.weight.dtype == torch.float32]


def parameter_bytes(model: nn.Module) -> dict[torch.dtype, int]:
    """Bytes of parameters and buffers per dtype."""
    out: dict[torch.dtype, int] = {}
    for t in (*model.parameters(), *model.buffers()):
        out[t.dtype] = out.get(t.dtype, 0) + t.numel() * t.element_size()
    return out
