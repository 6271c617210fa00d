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


# ----------------------------------------------------------------------------------------------
# FP8 (e4m3) linears with row-wise scales: weights quantised once per output row, activations per
# token on every call, one torch._scaled_mm (Hopper/Ada tensor cores) with a bf16 output.

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3fn value


def quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> (q (M, K) e4m3, scale (M, 1) fp32) with x ~ q * scale, each row's max at FP8_MAX."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12)
    scale = amax / FP8_MAX
    return (x.float() / scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


class Fp8Linear(nn.Module):
    """A Linear whose weight is e4m3 with a scale per output row; input quantised per row each call.
    Off CUDA the same quantised numbers are multiplied in fp32 (an emulation for tests)."""

    def __init__(self, linear: nn.Linear, out_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.in_features, self.out_features, self.out_dtype = linear.in_features, linear.out_features, out_dtype
        q, scale = quantize_rowwise(linear.weight.detach())
        self.register_buffer("weight_fp8", q)  # (N, K) row-major: .t() is the column-major operand
        self.register_buffer("weight_scale", scale.reshape(1, -1).contiguous())  # (1, N)
        bias = linear.bias.detach().to(out_dtype) if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        q, scale = quantize_rowwise(x.reshape(-1, self.in_features))
        if q.is_cuda:
            y = torch._scaled_mm(q, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale, bias=self.bias,
                                 out_dtype=self.out_dtype)
        else:
            w = self.weight_fp8.float() * self.weight_scale.t()
            y = (q.float() * scale) @ w.t()
            y = (y + self.bias.float() if self.bias is not None else y).to(self.out_dtype)
        return y.reshape(*lead, self.out_features)


@torch.no_grad()
def fp8_linears_(model: nn.Module, under: str, out_dtype: torch.dtype = torch.bfloat16) -> int:
    """Replace every nn.Linear inside the submodule named ``under`` by an Fp8Linear; returns how many.
    The fp32/bf16 weight goes with the replaced module (no copy stays)."""
    root = model.get_submodule(under)
    swaps = [(name, m) for name, m in root.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in swaps:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, child, Fp8Linear(linear, out_dtype))
    return len(swaps)
