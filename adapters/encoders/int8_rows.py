"""An int8 serving copy of a text backbone that stays batch-invariant (issue 20).

Every encoder Linear becomes ``Int8Linear``: an int8 x int8 GEMM with int32 accumulation
(``torch._int_mm``), exact whatever the batch's shape or the kernel's blocking, with ONE
ACTIVATION SCALE PER TOKEN (its own absolute maximum: a row's quantization never sees the
other rows) and per-output-channel weight scales. Attention runs row by row on each row's
real tokens (row_attention.py). What is left is row-wise (LayerNorm, GELU, softmax, the
scales), so a text's embedding is bit for bit the same alone or in any batch: measured 0.0
on the admission sample, where onnxruntime's dynamic int8 (one scale per batch) and
OpenVINO's int8 (2.0e-3) move (benchmarks/RESULTS.md, "A batch-invariant int8 backbone").

Accuracy, both batch-independent:
- SmoothQuant (Xiao et al. 2023), a = 0.5: per input channel, activations are divided and
  weight columns multiplied by s = max|X|^a / max|W|^(1-a), from a calibration pass over
  texts the caller gives (the runtime passes export/sample.py's 102 held-out texts);
- asymmetric per-token scales (a zero point) on the FFN output's input, the GELU outputs,
  which are nearly one-signed: symmetric int8 wastes half its range there. The zero point's
  part is a per-row constant times the weights' column sums: still exact.
Measured: mean drift 8.5e-4 and min cosine 0.9965 against fp32 on ``auto``'s gate sample
(gate 1e-3, 0.995), ~2x PyTorch fp32 and 1.5x the bf16 row-attention copy at batch 32 on
one thread. Without the zero point, 1.5e-3; without SmoothQuant, 3.9e-3.

The pooler is left alone (not used: embeddings are mean-pooled). LoRA's routing hooks
(lora.py) sit on these modules like on ``nn.Linear``: they see the Linear's input before the
smoothing and add their fp32 delta to its output.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
from torch import nn

ALPHA = 0.5
ASYMMETRIC = re.compile(r"layer\.\d+\.output\.dense$")  # the FFN output: its input is GELU's


class Int8Linear(nn.Module):
    """``linear`` as an exact int8 GEMM (see the module docstring). ``act_max``: the largest
    |activation| per input channel seen in calibration (None: no smoothing)."""

    def __init__(self, linear: nn.Linear, act_max: torch.Tensor | None = None,
                 alpha: float = ALPHA, asymmetric: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()  # [out, in]
        smooth = None
        if act_max is not None:
            s = (act_max.clamp(min=1e-5) ** alpha
                 / w.abs().amax(0).clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
            w, smooth = w * s[None, :], (1.0 / s).contiguous()
        scale = w.abs().amax(1).clamp(min=1e-12) / 127.0
        wq = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).t().contiguous()
        self.register_buffer("weight_q", wq)  # [in, out]
        self.register_buffer("weight_scale", scale)
        # the zero point's term needs the weights' column sums (``asymmetric`` only)
        self.register_buffer("weight_colsum", wq.float().sum(0) if asymmetric else None)
        self.register_buffer("smooth", smooth)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())
        self.asymmetric = asymmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        if self.smooth is not None:
            x = x * self.smooth
        if self.asymmetric:
            lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
            step = (hi - lo).clamp(min=1e-12) / 255.0
            xq = (torch.round((x - lo) / step) - 128).clamp(-128, 127).to(torch.int8)
            y = (torch._int_mm(xq, self.weight_q).float() * step
                 + (lo + 128 * step) * self.weight_colsum)
        else:
            step = x.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127.0
            xq = torch.round(x / step).clamp(-127, 127).to(torch.int8)
            y = torch._int_mm(xq, self.weight_q).float() * step
        y = y * self.weight_scale
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"smoothed={self.smooth is not None}, asymmetric={self.asymmetric}")


def activation_maxima(model: nn.Module, run: Callable[[Sequence[str]], object],
                      texts: Sequence[str], batch: int = 16) -> dict[str, torch.Tensor]:
    """Per Linear of ``model``, the largest |activation| per input channel while ``run``
    embeds ``texts`` (padded positions included: they only widen a maximum)."""
    seen: dict[str, torch.Tensor] = {}

    def watch(name: str):
        def hook(_, inputs):
            a = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float()
            seen[name] = torch.maximum(seen[name], a) if name in seen else a
        return hook

    hooks = [m.register_forward_pre_hook(watch(n)) for n, m in model.named_modules()
             if isinstance(m, nn.Linear)]
    try:
        with torch.inference_mode():
            for i in range(0, len(texts), batch):
                run(texts[i:i + batch])
    finally:
        for h in hooks:
            h.remove()
    return seen


def quantize(model: nn.Module, maxima: dict[str, torch.Tensor] | None, *,
             asymmetric: re.Pattern | None = ASYMMETRIC, keep: re.Pattern | None = None) -> nn.Module:
    """Every Linear of ``model`` but the pooler as ``Int8Linear``, in place; returns it.
    ``maxima``: ``activation_maxima``'s (None: no smoothing); ``asymmetric``: the Linears
    (by name) quantized with a zero point; ``keep``: Linears left fp32 (research variants,
    benchmarks/research/int8_rows.py)."""
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if (not isinstance(child, nn.Linear) or name.startswith("pooler")
                    or (keep is not None and keep.search(name))):
                continue
            setattr(parent, child_name, Int8Linear(
                child, None if maxima is None else maxima.get(name),
                asymmetric=bool(asymmetric is not None and asymmetric.search(name))))
    return model
