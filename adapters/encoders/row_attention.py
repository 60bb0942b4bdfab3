"""Attention run row by row on each row's real tokens: what makes a bf16 backbone
batch-invariant (issue 20, benchmarks/RESULTS.md "Where bf16 loses batch invariance").

Measured on this project's CPU (avx512_bf16, torch 2.13, ``benchmarks/research/bf16_invariance.py``):
a bf16 forward's Linear GEMMs (oneDNN) give a row bitwise the same result whatever the number
of rows M; LayerNorm and GELU work per token. What moves a row is attention: PyTorch's CPU
flash-attention kernel (SDPA) blocks the keys by the PADDED length, so a text padded beyond 32
tokens by a longer batch-mate gets other fp32 roundings (~2e-7), and bf16 rounds them to a
different bf16 value now and then (~4e-3 at the attention output, 1e-3 in the embedding).
Eager attention and the SDPA math backend (softmax over the padded length) move too (5e-4,
1.4e-3 on the admission check).

Here each row's queries, keys and values are cut to its real tokens and attend without a
mask, so a row's attention has the same shapes (and roundings) alone and in any batch. It
costs a loop over the batch's rows per layer (a few hundred small calls at batch 32), and
no work is spent on padded keys. Rows with the same real length are not stacked: the
per-row call is the one shape the check has proved.

``bert.row_attention_on(model)`` switches a model to it: Tailor's BERT (bert.py) by name, a
transformers model by registering it under ``NAME``; padded query positions get zeros
(nothing reads them: pooling is over real tokens).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NAME = "tailor_row_attention"


def row_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float | None = None,
                  dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: query/key/value [batch, heads, seq, head_dim];
    ``attention_mask`` the boolean SDPA mask [batch, 1, seq, seq] (True: attend) or None when
    no row is padded. Returns [batch, seq, heads, head_dim]."""
    if dropout and module.training:
        raise ValueError("row attention is for serving (no dropout); train on the fp32 model")
    batch, heads, seq, dim = query.shape
    keep = None if attention_mask is None else attention_mask[:, 0, 0, :]  # [batch, seq]
    out = query.new_zeros(batch, seq, heads, dim)
    for b in range(batch):
        q, k, v = query[b:b + 1], key[b:b + 1], value[b:b + 1]
        idx = None if keep is None or bool(keep[b].all()) else keep[b].nonzero().squeeze(1)
        if idx is not None:
            q, k, v = q.index_select(2, idx), k.index_select(2, idx), v.index_select(2, idx)
        o = F.scaled_dot_product_attention(q, k, v, scale=scaling)[0].transpose(0, 1)  # [n, heads, dim]
        if idx is None:
            out[b] = o
        else:
            out[b].index_copy_(0, idx, o)
    return out, None


def register() -> str:
    """Make ``NAME`` known to transformers (idempotent); returns it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, row_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # a boolean mask, None when unpadded
    return NAME

