"""onnxruntime as the shared backbone's runtime (``TAILOR_RUNTIME=onnx``).

The backbone (encoder + pooling + L2 norm) is exported once per backbone and cached under
the store folder, keyed by the backbone's weights sha256, the quantization and the opset:
``<store>/.onnx/<sha256>-<none|int8>-op<opset>.onnx``. A cached graph was parity checked
when it was built; a second replica on the same volume reuses it.

``OnnxEncoder`` implements ``adapters.encoders.Encoder`` and is injected into ``Tailor`` in
place of the PyTorch encoder, so the engine's batched forward runs on onnxruntime with no
change to the engine. It prepares rows with the PyTorch encoder's tokenizer (one lock, one
tokenization per row). The PyTorch encoder stays loaded (read-only) for exports, training
and rows of LoRA adapters (their per-row low-rank updates live inside the encoder, which the
one shared ONNX graph does not have; export a LoRA adapter to get it merged into its graph).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from adapters.encoders import TextEncoder, TorchEncoder
from adapters.encoders.lora import LoraWeights
from adapters.segments import length_sorted_chunks

from .graph import example_inputs
from .onnx_config import SENTENCE_ENCODER, OnnxConfig, Quantize
from .parity import ParityReport, parity_cases
from .pipeline import build_graph
from .session import create_session, require_providers

CACHE_DIR = ".onnx"


def cache_path(store_root: str | Path, encoder: TorchEncoder, quantize: Quantize,
               config: OnnxConfig = SENTENCE_ENCODER) -> Path:
    return (Path(store_root) / CACHE_DIR
            / f"{encoder.identity.sha256}-{quantize}-op{config.opset}.onnx")


def build_backbone_onnx(encoder: TorchEncoder, dest: Path, quantize: Quantize = "none",
                        config: OnnxConfig = SENTENCE_ENCODER,
                        providers: Sequence[str] = ("CPUExecutionProvider",)) -> ParityReport:
    """Export the encoder (a fresh copy), fuse or quantize, parity check on ``providers``
    (where it will be served), then move into ``dest`` atomically. Returns the report."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        module = encoder.graph_module(encoder.fresh_model())
        model, report = build_graph(module, config, example_inputs(encoder), work,
                                    quantize=quantize, model_config=encoder.model.config,
                                    cases=parity_cases(encoder), providers=providers)
        os.replace(model, dest)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


class OnnxEncoder:
    """An ``Encoder`` whose forward runs on onnxruntime. Same rows, pooling and chunking as
    the PyTorch text encoder it wraps."""

    def __init__(self, encoder: TextEncoder, model_path: str | Path,
                 providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0,
                 quantize: Quantize = "none", cuda_tf32: bool = False):
        self.torch_encoder = encoder
        self.model_path = Path(model_path)
        self.quantize = quantize
        self.session = create_session(
            self.model_path, providers, threads,
            {"CUDAExecutionProvider": {"use_tf32": "1" if cuda_tf32 else "0"}})
        self.providers = self.session.get_providers()
        self.identity = encoder.identity
        self.modality = encoder.modality
        self.dim = encoder.dim
        self.model_dir = encoder.model_dir
        self.max_batch_rows = encoder.max_batch_rows
        self.max_length = encoder.max_length
        self.workers = 1  # one session; onnxruntime parallelises inside each run

    @classmethod
    def open(cls, encoder: TextEncoder, store_root: str | Path, *, quantize: Quantize = "none",
             providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0,
             cuda_tf32: bool = False) -> "OnnxEncoder":
        """Use the cached graph for this backbone, exporting it on first use (parity-checked
        in fp32 on ``providers``; ``cuda_tf32`` then applies to serving only)."""
        if encoder.modality != "text":
            raise ValueError(f"TAILOR_RUNTIME=onnx serves text backbones only for now; "
                             f"{encoder.model_dir} is an {encoder.modality} model: use "
                             "TAILOR_RUNTIME=torch (image adapters still export to ONNX bundles)")
        wanted = require_providers(providers)  # fail before spending seconds on an export
        path = cache_path(store_root, encoder, quantize)
        if not path.exists():
            build_backbone_onnx(encoder, path, quantize, providers=wanted)
        return cls(encoder, path, wanted, threads, quantize, cuda_tf32)

    def pytorch(self) -> TextEncoder:
        return self.torch_encoder

    def prepare(self, texts: Sequence[str], max_length: int | None = None) -> list[Any]:
        return self.torch_encoder.prepare(texts, max_length)

    def _run(self, rows: Sequence[Any]) -> torch.Tensor:
        """One padded onnxruntime run. [len(rows), dim] float32."""
        feed = self.torch_encoder.collate_np(rows)
        (out,) = self.session.run(["sentence_embedding"], feed)  # [batch, dim]
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def embed_prepared(self, rows: Sequence[Any],
                       loras: Sequence[LoraWeights | None] | None = None) -> torch.Tensor:
        """Bare rows run on onnxruntime, in length-sorted chunks; rows with a LoRA adapter
        need their per-row low-rank update inside the encoder, which the shared ONNX graph
        does not have, so they run on the PyTorch encoder in the same call. Head adapters
        (the common case) never touch PyTorch."""
        rows = list(rows)
        out = torch.empty(len(rows), self.dim)
        lora_rows = [i for i, w in enumerate(loras or ()) if w is not None]
        if lora_rows:
            assert loras is not None
            out[lora_rows] = self.torch_encoder.embed_prepared([rows[i] for i in lora_rows],
                                                               [loras[i] for i in lora_rows])
        on_torch = set(lora_rows)
        bare = [i for i in range(len(rows)) if i not in on_torch]
        for idx in length_sorted_chunks([len(rows[i]) for i in bare], self.max_batch_rows):
            out[[bare[i] for i in idx]] = self._run([rows[bare[i]] for i in idx])
        return out

    def embed(self, texts: Sequence[str],
              loras: Sequence[LoraWeights | None] | None = None) -> torch.Tensor:
        return self.embed_prepared(self.prepare(texts), loras)
