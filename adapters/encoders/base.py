"""The one interface every backbone implements, whatever runs it and whatever it reads.

Two roles, two protocols:

- ``Encoder``: what serving and head training need. ``prepare`` turns inputs into per-row
  model inputs ONCE (token ids for text; later, decoded pixels for images), ``embed_prepared``
  runs rows (optionally each with its own LoRA weights) and returns pooled, L2-normalised
  embeddings. Implemented by the PyTorch ``TextEncoder`` and by ``export.runtimes.ort.OnnxEncoder``.
- ``TorchEncoder``: an ``Encoder`` with autograd and a module to copy, what LoRA training and
  export need. Every ``Encoder`` can hand out the PyTorch encoder behind it (``pytorch()``).

Thread-safety lives inside the encoder: ``prepare`` and ``embed_prepared`` may be called from
several threads at once (forwards, in-request training), and nothing here switches a global
adapter: per-row LoRA weights travel with the call (adapters/encoders/lora.py).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # torch loads with an encoder, not with this protocol (adapters/__init__)
    import torch
    from torch import nn

    from .lora import LoraWeights

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class BackboneIdentity:
    """Who the backbone is. Stored in every adapter manifest so that a head trained on one
    backbone is never served on another."""

    name: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256}


def weights_sha256(model_dir: Path) -> str:
    """sha256 over the model's weight files (name + bytes, in sorted order)."""
    h = hashlib.sha256()
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {model_dir}")
    for p in files:
        h.update(p.name.encode())
        with p.open("rb") as f:  # one running hash over every file: not file_digest's one per file
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def describe_torch(dtype: str, workers: int) -> str:
    """``Encoder.describe`` of an encoder whose forwards run on PyTorch."""
    import torch

    return f"torch {dtype}, {workers} forward workers x {torch.get_num_threads()} threads"


@runtime_checkable
class Encoder(Protocol):
    """A frozen backbone that embeds rows, each optionally through its own LoRA weights."""

    identity: BackboneIdentity
    modality: str  # "text"; what ``prepare`` accepts
    dim: int  # embedding size
    model_dir: Path  # the Hugging Face folder it was loaded from (a training worker loads it too)
    max_batch_rows: int
    max_length: int | None  # longest row the backbone takes (tokens, for text); None: fixed size
    # serving precision of the forwards: "float32"; "bfloat16" for text on AMX CPUs; "int8"
    # for an int8 onnxruntime graph
    dtype: str

    def prepare(self, items: Sequence[Any], max_length: int | None = None) -> list[Any]:
        """Per-row model inputs (token ids for text), computed once per row. ``max_length``
        caps the row length below the backbone's own limit (training)."""
        ...

    def embed_prepared(self, rows: Sequence[Any],
                       loras: Sequence["LoraWeights | None"] | None = None) -> torch.Tensor:
        """Pooled, L2-normalised embeddings [rows, dim] float32 on the CPU. ``loras``: per row,
        the LoRA weights to apply inside the forward (None = the bare backbone)."""
        ...

    def embed(self, items: Sequence[Any],
              loras: Sequence["LoraWeights | None"] | None = None) -> torch.Tensor:
        """``prepare`` then ``embed_prepared``."""
        ...

    def pytorch(self) -> "TorchEncoder":
        """The PyTorch encoder behind this one (itself when it is one)."""
        ...

    def warm_up(self) -> None:
        """One forward before the first request, so that the first client does not pay for
        lazy initialisation (an encoder that warmed up when it opened does nothing)."""
        ...

    def describe(self) -> str:
        """What runs the forwards, for the start-up log line (e.g. "torch float32, 2 forward
        workers x 1 threads", "onnxruntime int8 on CPUExecutionProvider")."""
        ...


@runtime_checkable
class TorchEncoder(Encoder, Protocol):
    """An encoder with autograd and a module to copy: LoRA training and export."""

    model: "nn.Module"  # the frozen backbone: never mutated, never switched
    # the Linear names LoRA adapts when an adapter leaves ``targets`` at its default; ()
    # means LoraOptions' default (query, value: BERT-style names); None: no PyTorch weights
    # to tune (an ONNX-only backbone), so the kinds that tune the backbone are refused
    lora_targets: tuple[str, ...] | None

    def collate(self, rows: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Prepared rows -> the padded model inputs of one forward (e.g. input_ids,
        attention_mask)."""
        ...

    def forward(self, batch: dict[str, torch.Tensor], model: "nn.Module | None" = None
                ) -> torch.Tensor:
        """One forward of collated rows through ``model`` (default: the shared backbone) and
        pooling: [rows, dim], differentiable when the caller enables grad."""
        ...

    def fresh_model(self) -> "nn.Module":
        """A deep copy of the backbone's weights for merging and exporting."""
        ...

    graph_inputs: tuple[str, ...]  # the collated tensors an exported graph takes, in order

    def graph_module(self, model: "nn.Module") -> "nn.Module":
        """``model`` (a fresh copy) wrapped to take ``graph_inputs`` positionally and return
        pooled embeddings: what export traces."""
        ...

    def write_preprocessor(self, folder: Path) -> list[str]:
        """Files that reproduce ``prepare`` + ``collate`` outside Tailor (text: tokenizer.json),
        written into ``folder``; returns their names."""
        ...

    def describe_preprocessing(self) -> dict[str, Any]:
        """``prepare`` + ``collate`` as data (an export bundle's manifest and README show it:
        an image processor's resize, crop and normalisation; a text tokenizer's limits)."""
        ...
