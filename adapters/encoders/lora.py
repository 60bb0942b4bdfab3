"""LoRA on the shared frozen backbone, chosen per row, without touching the backbone.

A LoRA adapter adds ``scaling * B @ A`` to the weight of some Linear layers (by default the
attention ``query`` and ``value`` of every layer). Tailor never merges that into the served
weights and never switches a global "active adapter" (peft #804). Instead every target
Linear carries one forward hook, installed once, that reads a *routing* for the current
forward from a ``contextvars.ContextVar``:

    routing = contiguous row segments [start, end) -> LoraWeights

and adds each segment's low-rank update to those rows only (the segmented-gather idea of
Punica / S-LoRA, in plain PyTorch). Rows are sorted by adapter before the forward so that
every segment is a slice, not a gather. The routing lives in the caller's context, so two
threads (or asyncio tasks) running forwards at the same time never see each other's
adapters, and with no routing set the hook is a no-op: the bare backbone answers exactly
as before. Parameters and the state_dict are never changed; only hook objects are added.

On a backbone served in bf16 (``TextEncoder.with_dtype``) the update is computed in fp32 from
the bf16 activations and rounded once when it is added; A and B stay fp32.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Iterator, Sequence

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..segments import group_rows

if TYPE_CHECKING:  # torch loads with the weights: a manifest's LoraSpec is read without it
    import torch
    from torch import nn


ModuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class LoraSpec(BaseModel):
    """The shape of a LoRA adapter (stored in its manifest under ``"lora"``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rank: int = Field(ge=1, le=1024)
    alpha: float = Field(gt=0)
    targets: tuple[ModuleName, ...] = Field(min_length=1)  # Linear name suffixes, e.g. ("query", "value")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def target_modules(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """Names of the Linear modules whose last name part is one of ``targets``."""
    from torch import nn

    from .int8_rows import Int8Linear  # a served int8 copy's Linears (TextEncoder.with_int8_rows)

    names = [n for n, m in model.named_modules()
             if isinstance(m, (nn.Linear, Int8Linear)) and n.rsplit(".", 1)[-1] in set(targets)]
    if not names:
        raise ValueError(f"no Linear module of the backbone is named any of {list(targets)}")
    return names


@dataclass
class LoraWeights:
    """A and B per target module. A [rank, in], B [out, rank]; delta W = scaling * B @ A."""

    spec: LoraSpec
    a: dict[str, torch.Tensor]
    b: dict[str, torch.Tensor]

    @classmethod
    def init(cls, model: nn.Module, spec: LoraSpec, seed: int = 0,
             identity: bool = True) -> "LoraWeights":
        """peft's init: A kaiming-uniform, B zero (identity). ``identity=False`` draws B too,
        for tests that must be able to fail (cf. peft ``init_lora_weights=False``)."""
        import torch

        g = torch.Generator().manual_seed(seed)
        modules = dict(model.named_modules())
        a, b = {}, {}
        for name in target_modules(model, spec.targets):
            lin = modules[name]
            bound = 1 / math.sqrt(lin.in_features)  # kaiming_uniform(a=sqrt(5)), as nn.Linear
            a[name] = (torch.rand(spec.rank, lin.in_features, generator=g) * 2 - 1) * bound
            b[name] = (torch.zeros(lin.out_features, spec.rank) if identity else
                       (torch.rand(lin.out_features, spec.rank, generator=g) * 2 - 1) * bound)
        return cls(spec, a, b)

    def parameters(self) -> list[torch.Tensor]:
        return [*self.a.values(), *self.b.values()]

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.a:
            out[f"lora.{name}.A"] = self.a[name].detach().contiguous()
            out[f"lora.{name}.B"] = self.b[name].detach().contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], spec: LoraSpec) -> "LoraWeights":
        a, b = {}, {}
        for key, t in tensors.items():
            if key.startswith("lora.") and key.endswith(".A"):
                name = key[len("lora."):-len(".A")]
                a[name] = t.float()
                b[name] = tensors[f"lora.{name}.B"].float()
        if not a:
            raise ValueError("no lora.*.A tensors in the adapter file")
        return cls(spec, a, b)

    def scaled_bt(self, name: str) -> torch.Tensor:
        """(scaling * B).T, [rank, out]: what the forward multiplies by. Cached when the
        weights are frozen (serving); computed afresh while they train."""
        b = self.b[name]
        if b.requires_grad:
            return b.T * self.spec.scaling
        cache = self.__dict__.setdefault("_bt_cache", {})
        hit = cache.get(name)
        if hit is None:
            hit = cache[name] = (b.T * self.spec.scaling).contiguous()
        return hit

    def delta_weight(self, name: str) -> torch.Tensor:
        """The dense update of one module: [out, in]. For merging into a *copy* (export)."""
        return self.spec.scaling * self.b[name] @ self.a[name]


# -- routing: which rows of the current forward get which adapter ---------------------------
@dataclass(frozen=True)
class Routing:
    """Row segments of one forward. ``segments``: (start, end, weights), rows contiguous."""

    segments: tuple[tuple[int, int, LoraWeights], ...]
    dropout: float = 0.0  # only while training


_ROUTING: contextvars.ContextVar[Routing | None] = contextvars.ContextVar("tailor_lora_routing",
                                                                         default=None)


@contextlib.contextmanager
def routed(routing: Routing | None) -> Iterator[None]:
    """Set the routing for forwards run in this context (thread / task) only."""
    token = _ROUTING.set(routing)
    try:
        yield
    finally:
        _ROUTING.reset(token)


# PyTorch's fp32 GEMM takes other kernels below 4 rows (a 1-3 token input), whose roundings
# differ by ~1e-7 from the same row's in a bigger product: harmless in fp32, but a bf16
# backbone rounds that into a different bf16 value now and then (issue 20: 3.2e-3 for a
# 3-token text alone vs in a batch). From 4 rows on, a row's result does not depend on M
# (benchmarks/research/bf16_invariance.py), so smaller inputs are padded to 4 zero rows.
MIN_GEMM_ROWS = 4


def _low_rank(x: torch.Tensor, a: torch.Tensor, bt: torch.Tensor) -> torch.Tensor:
    """(x @ A.T) @ (scaling B).T for x [..., in], computed on at least ``MIN_GEMM_ROWS`` rows
    (tensor methods only: the service's definition imports this module without torch)."""
    flat = x.reshape(-1, x.shape[-1])
    n = flat.shape[0]
    if n < MIN_GEMM_ROWS:
        padded = flat.new_zeros(MIN_GEMM_ROWS, flat.shape[1])
        padded[:n] = flat
        flat = padded
    return ((flat @ a.T) @ bt)[:n].reshape(*x.shape[:-1], bt.shape[1])


def _make_hook(name: str):
    import torch
    import torch.nn.functional as F

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        routing = _ROUTING.get()
        if routing is None:
            return None
        x = inputs[0]  # [batch, seq, in]
        parts = []
        for start, end, w in routing.segments:
            a = w.a.get(name)
            if a is None:
                continue
            xs = x[start:end]  # [rows, seq, in]: a view, rows of one adapter are contiguous
            if routing.dropout:
                xs = F.dropout(xs, routing.dropout, training=True)
            # the low-rank update in the adapter's precision (fp32), also on a bf16 backbone
            # (TextEncoder.with_dtype): rounded once, where it is added to the output
            d = _low_rank(xs.to(a.dtype), a, w.scaled_bt(name))  # [rows, seq, out]
            parts.append((start, end, d.to(output.dtype)))
        if not parts:
            return None
        if torch.is_grad_enabled():  # training: out of place, autograd-safe
            delta = torch.zeros_like(output)
            for start, end, d in parts:
                delta = delta.index_add(0, torch.arange(start, end), d)
            return output + delta
        for start, end, d in parts:  # serving: the output is a fresh tensor of this forward
            output[start:end] += d
        return output
    return hook


_INSTALL_LOCK = threading.Lock()


def install_hooks(model: nn.Module, targets: Sequence[str]) -> None:
    """Put the routing hook on every Linear named like ``targets`` (idempotent, and a set
    lookup once done: it runs before every routed forward)."""
    key = tuple(sorted(targets))
    if key in model.__dict__.get("_tailor_lora_targets", ()):
        return
    with _INSTALL_LOCK:
        done: set[str] = model.__dict__.setdefault("_tailor_lora_hooked", set())
        modules = dict(model.named_modules())
        for name in target_modules(model, targets):
            if name not in done:
                modules[name].register_forward_hook(_make_hook(name))
                done.add(name)
        model.__dict__["_tailor_lora_targets"] = model.__dict__.get("_tailor_lora_targets", frozenset()) | {key}


def plan(adapters: Sequence[LoraWeights | None]) -> tuple[list[int], Routing | None]:
    """Order rows so that each adapter's rows are contiguous.

    Returns the permutation (``order[k]`` = original index of the k-th row to run) and the
    routing for the permuted rows; None when no row uses LoRA."""
    keys = [id(w) if w is not None else None for w in adapters]
    if all(k is None for k in keys):
        return list(range(len(adapters))), None
    order: list[int] = []
    segments = []
    for key, idx in group_rows(keys).items():
        if key is not None:
            segments.append((len(order), len(order) + len(idx), adapters[idx[0]]))
        order += idx
    return order, Routing(tuple(segments))

