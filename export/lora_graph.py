"""Per-row LoRA inside the onnxruntime backbone graph.

The shared sentence-encoder graph gets extra inputs so that rows of different LoRA adapters
(and bare rows, and rows of head-only adapters) run in ONE onnxruntime call, as Punica's
BGMV / S-LoRA do on GPUs::

    <the encoder's graph inputs>   e.g. input_ids, attention_mask int64 [batch, seq]
    lora_slot        int64 [batch]                 which slot of the tables each row uses
    lora_a.<t>       fp32  [slots, rank, in_t]     A of each slot, per routed Linear t
    lora_b.<t>       fp32  [slots, out_t, rank]    scaling * B of each slot

Slot 0 is all zeros (bare rows, head-only adapters); the tables hold only the adapters present
in the batch; ``rank`` is padded to the batch's largest with zero rows of A / zero columns of
B, and a target an adapter does not adapt stays zero for it: zeros add exactly nothing.
Inside the graph every routed Linear computes ``x W^T + b + (x A_row^T) B_row^T`` with A_row,
B_row gathered by ``lora_slot``: ``delta W = scaling * B @ A`` per row, the maths of
``adapters/encoders/lora.py``.

Which Linears are routed is fixed when the graph is built: by default those LoRA adapters
adapt unless told otherwise (``DEFAULT_TARGETS``: attention query and value). With the 12
query/value Linears routed the research measured 0-3% off the plain graph's rows/s at batch
32 in fp32 with 0-1 adapters, 9-10% with 16 adapters in a batch
(benchmarks/results/research_lora_ort.md); rows of an adapter that adapts other modules run
on PyTorch (``OnnxEncoder``). int8
quantizes only MatMuls with a constant weight, so the base weights become int8 and the
low-rank path stays fp32.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from adapters.encoders import TorchEncoder
from adapters.encoders.lora import LoraWeights

from .graph import example_inputs
from .onnx_config import SENTENCE_ENCODER, OnnxConfig

SLOT = "lora_slot"
DEFAULT_TARGETS = ("query", "value")  # LoraOptions' default targets (Linear name suffixes)


def a_input(target: str) -> str:
    return f"lora_a.{target}"


def b_input(target: str) -> str:
    return f"lora_b.{target}"


class _Rows:
    """The gathered per-row A and B of the current forward, shared by the routed Linears
    (set at the top of ``LoraGraph.forward``; tracing records the ops)."""

    def __init__(self) -> None:
        self.a: dict[str, torch.Tensor] = {}
        self.b: dict[str, torch.Tensor] = {}


class RoutedLinear(nn.Module):
    """``base(x) + (x A_row^T) B_row^T``; A_row [batch, rank, in], B_row [batch, out, rank]."""

    def __init__(self, base: nn.Linear, name: str, rows: _Rows):
        super().__init__()
        self.base, self.name, self.rows = base, name, rows

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [batch, seq, in]
        a, b = self.rows.a[self.name], self.rows.b[self.name]
        xa = torch.matmul(x, a.transpose(1, 2))  # [batch, seq, rank]
        return self.base(x) + torch.matmul(xa, b.transpose(1, 2))  # [batch, seq, out]


def routable(encoder: TorchEncoder, model: nn.Module,
             suffixes: Sequence[str] = DEFAULT_TARGETS) -> list[str]:
    """The Linear modules of ``model`` named like ``suffixes`` (last name part) whose output
    reaches the pooled embedding: what the routed graph adapts. (A BERT pooler runs in the
    forward but mean pooling never reads it; the exporter prunes it, so it must not be an
    input either.)"""
    linears = {n: m for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in set(suffixes)}
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if not output.requires_grad:
                output.requires_grad_(True)
            outputs[name] = output
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in linears.items()]
    try:
        with torch.enable_grad():
            pooled = encoder.graph_module(model)(*example_inputs(encoder))
            names = list(outputs)
            grads = torch.autograd.grad(pooled.sum(), [outputs[n] for n in names],
                                        allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    return [n for n, g in zip(names, grads) if g is not None]


class LoraGraph(nn.Module):
    """The encoder's graph module (inputs -> pooled embedding) with every Linear routed.
    Build it on a FRESH copy of the backbone (``TorchEncoder.fresh_model``): it replaces
    modules of the model it is given."""

    def __init__(self, encoder: TorchEncoder, model: nn.Module,
                 suffixes: Sequence[str] = DEFAULT_TARGETS):
        super().__init__()
        self.rows = _Rows()
        self.targets = routable(encoder, model, suffixes)
        if not self.targets:
            raise ValueError(f"no Linear module of the backbone is named any of {list(suffixes)}")
        modules = dict(model.named_modules())
        self.dims = {t: (modules[t].in_features, modules[t].out_features) for t in self.targets}
        for name in self.targets:
            parent, _, child = name.rpartition(".")
            setattr(modules[parent] if parent else model, child,
                    RoutedLinear(modules[name], name, self.rows))
        self.inner = encoder.graph_module(model)
        self.n_inputs = len(encoder.graph_inputs)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        graph_inputs, slot, tables = (inputs[:self.n_inputs], inputs[self.n_inputs],
                                      inputs[self.n_inputs + 1:])
        n = len(self.targets)
        self.rows.a = {t: tables[i].index_select(0, slot) for i, t in enumerate(self.targets)}
        self.rows.b = {t: tables[n + i].index_select(0, slot) for i, t in enumerate(self.targets)}
        return self.inner(*graph_inputs)  # [batch, dim]


class OneAdapter(nn.Module):
    """A ``LoraGraph`` with ONE adapter's tables as constants, taking only the encoder's graph
    inputs: the routed graph as that adapter's rows run in it (every row in slot 1), for a
    bundle that must reproduce the served graph (export/int8_rows.py)."""

    def __init__(self, graph: LoraGraph, lora: LoraWeights):
        super().__init__()
        self.graph = graph
        feed = lora_feed([lora], graph.targets, graph.dims)
        names = [a_input(t) for t in graph.targets] + [b_input(t) for t in graph.targets]
        self.tables = [torch.from_numpy(feed[k]) for k in names]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        slot = torch.ones_like(inputs[0][:, 0])  # [batch] int64: the adapter's slot
        return self.graph(*inputs, slot, *self.tables)


def lora_config(encoder: TorchEncoder, targets: Sequence[str],
                base: OnnxConfig = SENTENCE_ENCODER) -> OnnxConfig:
    """The routed graph's inputs, outputs and dynamic axes."""
    tables = [a_input(t) for t in targets] + [b_input(t) for t in targets]
    axes = {k: dict(v) for k, v in base.dynamic_axes.items()}
    axes[SLOT] = {0: "batch"}
    axes.update({a_input(t): {0: "slots", 1: "rank"} for t in targets})
    axes.update({b_input(t): {0: "slots", 2: "rank"} for t in targets})
    return dataclasses.replace(base, inputs=(*encoder.graph_inputs, SLOT, *tables),
                               dynamic_axes=axes)


def routed_module(encoder: TorchEncoder, targets: Sequence[str] = DEFAULT_TARGETS
                  ) -> tuple[LoraGraph, OnnxConfig, tuple[torch.Tensor, ...]]:
    """A LoRA-routed module on a fresh copy of the backbone, its graph config, and a batch to
    trace it with (non-identity adapters of several ranks mixed per row, ``parity_adapters``)."""
    module = LoraGraph(encoder, encoder.fresh_model(), targets).eval()
    config = lora_config(encoder, module.targets)
    example = example_inputs(encoder)
    adapters = parity_adapters(encoder)
    feed = lora_feed([adapters[i % len(adapters)] for i in range(example[0].shape[0])],
                     module.targets, module.dims)
    return module, config, example + tuple(torch.from_numpy(feed[k])
                                           for k in config.inputs[len(example):])


def tables_of(w: LoraWeights) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """target -> (A [rank, in], scaling * B [out, rank]) as float32 numpy, cached on the
    weights (frozen while served)."""
    hit = w.__dict__.get("_onnx_tables")
    if hit is None:
        hit = {t: (w.a[t].detach().float().contiguous().numpy(),
                   (w.b[t].detach().float() * w.spec.scaling).contiguous().numpy())
               for t in w.a}
        w.__dict__["_onnx_tables"] = hit
    return hit


def lora_feed(adapters: Sequence[LoraWeights | None], targets: Sequence[str],
              dims: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """The LoRA part of the feed for one batch: per-row slots and stacked tables.

    ``adapters``: per row, its LoRA weights or None. ``dims``: target -> (in, out). Slot 0 is
    zeros; each distinct adapter gets one slot, in first-seen order; rank is padded to the
    batch's largest (at least 1). Scaling is folded into B."""
    slots: dict[int, int] = {}
    order: list[LoraWeights] = []
    slot = np.zeros(len(adapters), dtype=np.int64)
    for i, w in enumerate(adapters):
        if w is None:
            continue
        k = slots.get(id(w))
        if k is None:
            k = slots[id(w)] = len(order) + 1
            order.append(w)
        slot[i] = k
    rank = max([w.spec.rank for w in order], default=1)
    feed: dict[str, np.ndarray] = {SLOT: slot}
    per_adapter = [tables_of(w) for w in order]
    for t in targets:
        d_in, d_out = dims[t]
        a = np.zeros((len(order) + 1, rank, d_in), dtype=np.float32)
        b = np.zeros((len(order) + 1, d_out, rank), dtype=np.float32)
        for k, tables in enumerate(per_adapter, start=1):
            if t in tables:
                ta, tb = tables[t]
                a[k, :ta.shape[0]] = ta
                b[k, :, :tb.shape[1]] = tb
        feed[a_input(t)] = a
        feed[b_input(t)] = b
    return feed


def parity_adapters(encoder: TorchEncoder, seed: int = 0) -> list[LoraWeights | None]:
    """Non-identity adapters of different ranks and targets (and a bare row) that the routed
    graph's parity cases mix in every batch: an export that drops or misroutes a delta fails."""
    from adapters.encoders.lora import LoraSpec

    specs = [LoraSpec(rank=4, alpha=8, targets=("query", "value")),
             LoraSpec(rank=8, alpha=16, targets=("key", "dense")),
             LoraSpec(rank=2, alpha=4, targets=("value",))]
    out: list[LoraWeights | None] = [None]
    for i, spec in enumerate(specs):
        try:
            out.append(LoraWeights.init(encoder.model, spec, seed=seed + i, identity=False))
        except ValueError:  # a backbone without such Linear names
            continue
    return out


def with_lora_feeds(cases: Sequence[tuple[str, dict[str, np.ndarray]]],
                    adapters: Sequence[LoraWeights | None], targets: Sequence[str],
                    dims: dict[str, tuple[int, int]]) -> list[tuple[str, dict[str, Any]]]:
    """Text parity cases with the LoRA inputs added: row i uses ``adapters[i % len]``."""
    out = []
    for name, feed in cases:
        rows = int(next(iter(feed.values())).shape[0])
        per_row = [adapters[i % len(adapters)] for i in range(rows)]
        out.append((name, {**feed, **lora_feed(per_row, targets, dims)}))
    return out
