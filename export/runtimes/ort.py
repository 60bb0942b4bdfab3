"""onnxruntime as the shared backbone's runtime: the ``onnx-fp32`` and ``onnx-int8`` runtimes
(``TAILOR_RUNTIME=onnx``, or what ``auto`` chose: auto.py). Text backbones only: the graphs
are built and parity checked on token ids (image adapters still export to ONNX bundles).

Two graphs per backbone, exported once and cached in the runtime cache folder (by default
``<store>/.onnx``), keyed by the backbone's weights sha256, the quantization and the opset:

- ``<sha256>-<none|int8>-op<opset>.onnx``: encoder + pooling + L2 norm, for batches without
  LoRA rows (fp32 with onnxruntime's transformer fusions, or int8);
- ``<sha256>-<none|int8>-lora-<targets>-op<opset>.onnx``: the same with per-row LoRA deltas
  as graph inputs (export/lora_graph.py), for batches with LoRA rows: heads, bare rows and
  any number of LoRA adapters in ONE onnxruntime call.

Each was parity checked when it was built; a second replica on the same volume reuses them.

``OnnxEncoder`` implements ``adapters.encoders.Encoder`` and is injected into ``Tailor`` in
place of the PyTorch encoder, so the engine's batched forward runs on onnxruntime with no
change to the engine. It prepares rows with the PyTorch encoder's tokenizer. The PyTorch
encoder stays loaded (read-only) for exports, LoRA training, and the rare rows of LoRA
adapters that adapt Linears the routed graph does not route (``DEFAULT_TARGETS``: query and
value; e.g. an adapter with ``targets: ["dense"]``), which run on PyTorch in the same call.
"""
from __future__ import annotations

import hashlib
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

from ..graph import example_inputs
from ..int8_rows import NAME as INT8_ROWS, RECIPE as INT8_ROWS_RECIPE
from ..lora_graph import (DEFAULT_TARGETS, a_input, lora_feed, parity_adapters, routed_module,
                          with_lora_feeds)
from ..onnx_config import SENTENCE_ENCODER, OnnxConfig, Quantize
from ..parity import ParityReport, parity_cases
from ..pipeline import build_graph
from ..session import create_session, require_providers
from .base import Runtime, RuntimeOptions, register_runtime

CACHE_DIR = ".onnx"


def cache_path(cache_dir: str | Path, encoder: TorchEncoder, quantize: Quantize,
               config: OnnxConfig = SENTENCE_ENCODER, lora: Sequence[str] | None = None) -> Path:
    """The cached graph's path. ``lora``: the routed targets (None: the plain graph)."""
    tag = ""
    if lora is not None:
        tag = "-lora-" + hashlib.sha256(",".join(lora).encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{encoder.identity.sha256}-{quantize}{tag}-op{config.opset}.onnx"


def default_cache_dir(store_root: str | Path) -> Path:
    return Path(store_root) / CACHE_DIR


def _build(dest: Path, build) -> ParityReport:
    """Run ``build(work) -> (graph path, report)`` in a temp folder beside ``dest``, then move
    the graph into place atomically (nothing is left behind on failure)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        model, report = build(work)
        os.replace(model, dest)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_backbone_onnx(encoder: TorchEncoder, dest: Path, quantize: Quantize = "none",
                        config: OnnxConfig = SENTENCE_ENCODER,
                        providers: Sequence[str] = ("CPUExecutionProvider",)) -> ParityReport:
    """Export the encoder (a fresh copy), fuse or quantize, parity check on ``providers``
    (where it will be served), then move into ``dest`` atomically. Returns the report."""
    module = encoder.graph_module(encoder.fresh_model())
    return _build(Path(dest), lambda work: build_graph(
        module, config, example_inputs(encoder), work, quantize=quantize,
        model_config=encoder.model.config, cases=parity_cases(encoder), providers=providers))


def build_lora_onnx(encoder: TorchEncoder, dest: Path, quantize: Quantize = "none",
                    suffixes: Sequence[str] = DEFAULT_TARGETS,
                    providers: Sequence[str] = ("CPUExecutionProvider",)) -> ParityReport:
    """The LoRA-routed backbone graph: parity checked on the usual text cases with
    non-identity adapters of several ranks and targets mixed into every batch."""
    module, config, example = routed_module(encoder, suffixes)
    adapters = parity_adapters(encoder)
    cases = with_lora_feeds(parity_cases(encoder), adapters, module.targets, module.dims)
    return _build(Path(dest), lambda work: build_graph(
        module, config, example, work, quantize=quantize, model_config=encoder.model.config,
        cases=cases, providers=providers))


def cached_graphs(encoder: TorchEncoder, cache_dir: str | Path, quantize: Quantize = "none",
                  providers: Sequence[str] = ("CPUExecutionProvider",),
                  lora: bool = True) -> tuple[Path, Path | None]:
    """The backbone's graph in ``cache_dir`` and, with ``lora``, its LoRA-routed twin: each
    built (parity checked on ``providers``) when it is not there yet. Returns their paths."""
    path = cache_path(cache_dir, encoder, quantize)
    if not path.exists():
        build_backbone_onnx(encoder, path, quantize, providers=providers)
    if not lora:
        return path, None
    lora_path = cache_path(cache_dir, encoder, quantize, lora=DEFAULT_TARGETS)
    if not lora_path.exists():
        build_lora_onnx(encoder, lora_path, quantize, providers=providers)
    return path, lora_path


class OnnxEncoder:
    """An ``Encoder`` whose forward runs on onnxruntime. Same rows, pooling and chunking as
    the PyTorch text encoder it wraps."""

    def __init__(self, encoder: TextEncoder, model_path: str | Path,
                 providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0,
                 quantize: Quantize = "none", cuda_tf32: bool = False,
                 lora_path: str | Path | None = None, export_quantize: str | None = None):
        self.torch_encoder = encoder
        self.model_path = Path(model_path)
        self.quantize = quantize
        options = {"CUDAExecutionProvider": {"use_tf32": "1" if cuda_tf32 else "0"}}
        self.session = create_session(self.model_path, providers, threads, options)
        self.lora_session = None
        self.routed_targets: list[str] = []  # routed Linear names, in graph-input order
        self.lora_dims: dict[str, tuple[int, int]] = {}
        if lora_path is not None:
            self.lora_session = create_session(Path(lora_path), providers, threads, options)
            names = [i.name for i in self.lora_session.get_inputs()]
            self.routed_targets = [n[len(a_input("")):] for n in names if n.startswith(a_input(""))]
            modules = dict(encoder.model.named_modules())
            self.lora_dims = {t: (modules[t].in_features, modules[t].out_features)
                              for t in self.routed_targets}
        self.providers = self.session.get_providers()
        self.identity = encoder.identity
        self.modality = encoder.modality
        self.dim = encoder.dim
        self.model_dir = encoder.model_dir
        self.max_batch_rows = encoder.max_batch_rows
        self.max_length = encoder.max_length
        self.workers = 1  # one session per graph; onnxruntime parallelises inside each run
        self.dtype = "int8" if quantize == "int8" else "float32"
        # an adapter export's ``quantize`` that answers what this encoder serves (the default
        # of HTTP exports): fp32 graphs for fp32; none for dynamic int8 (per-batch scales)
        self.export_quantize = export_quantize or ("none" if quantize == "none" else None)

    @classmethod
    def open(cls, encoder: TextEncoder, store_root: str | Path, *, quantize: Quantize = "none",
             providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0,
             cuda_tf32: bool = False, lora: bool = True,
             cache_dir: str | Path | None = None) -> "OnnxEncoder":
        """Use the cached graphs for this backbone, exporting them on first use (parity
        checked in fp32 on ``providers``; ``cuda_tf32`` then applies to serving only).
        ``lora``: also the LoRA-routed graph (LoRA rows on onnxruntime). ``cache_dir``:
        where the graphs are cached (default ``<store_root>/.onnx``)."""
        wanted = require_providers(providers)  # fail before spending seconds on an export
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(store_root)
        path, lora_path = cached_graphs(encoder, cache_dir, quantize, wanted, lora)
        return cls(encoder, path, wanted, threads, quantize, cuda_tf32, lora_path)

    def pytorch(self) -> TextEncoder:
        return self.torch_encoder

    def warm_up(self) -> None:
        self.embed(["warm-up"])

    def describe(self) -> str:
        what = "int8 rows" if self.export_quantize == "int8-rows" else self.quantize
        return f"onnxruntime {what} on {','.join(self.providers)}"

    def prepare(self, texts: Sequence[str], max_length: int | None = None) -> list[Any]:
        return self.torch_encoder.prepare(texts, max_length)

    def _run(self, rows: Sequence[Any]) -> np.ndarray:
        """One padded run of the plain graph. [len(rows), dim] float32."""
        feed = self.torch_encoder.collate_np(rows)
        (out,) = self.session.run(["sentence_embedding"], feed)  # [batch, dim]
        return out

    def _run_lora(self, rows: Sequence[Any], loras: Sequence[LoraWeights | None]) -> np.ndarray:
        """One padded run of the routed graph: every row through its own LoRA (or none)."""
        assert self.lora_session is not None
        feed = {**self.torch_encoder.collate_np(rows),
                **lora_feed(loras, self.routed_targets, self.lora_dims)}
        (out,) = self.lora_session.run(["sentence_embedding"], feed)  # [batch, dim]
        return out

    def routes(self, w: LoraWeights) -> bool:
        """Whether ``w``'s rows can run in the routed graph (it adapts only routed Linears)."""
        hit = w.__dict__.get("_onnx_routed")
        if hit is None:
            hit = w.__dict__["_onnx_routed"] = set(w.a) <= set(self.routed_targets)
        return hit

    def embed_prepared(self, rows: Sequence[Any],
                       loras: Sequence[LoraWeights | None] | None = None) -> torch.Tensor:
        """Rows in length-sorted chunks of at most ``max_batch_rows``, one onnxruntime run
        each: the plain graph when a chunk has no LoRA row, the routed graph otherwise (heads,
        bare rows and LoRA adapters together). Rows of adapters the routed graph cannot take
        (see the module docstring) run on PyTorch in the same call."""
        rows = list(rows)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        loras = list(loras) if loras is not None else [None] * len(rows)
        on_torch = [i for i, w in enumerate(loras)
                    if w is not None and (self.lora_session is None or not self.routes(w))]
        if on_torch:
            out[on_torch] = self.torch_encoder.embed_prepared(
                [rows[i] for i in on_torch], [loras[i] for i in on_torch]).numpy()
        skip = set(on_torch)
        here = [i for i in range(len(rows)) if i not in skip]
        for idx in length_sorted_chunks([len(rows[i]) for i in here], self.max_batch_rows):
            chunk = [here[i] for i in idx]
            adapters = [loras[i] for i in chunk]
            if any(w is not None for w in adapters):
                out[chunk] = self._run_lora([rows[i] for i in chunk], adapters)
            else:
                out[chunk] = self._run([rows[i] for i in chunk])
        return torch.from_numpy(out)

    def embed(self, texts: Sequence[str],
              loras: Sequence[LoraWeights | None] | None = None) -> torch.Tensor:
        return self.embed_prepared(self.prepare(texts), loras)


def _opener(quantize: Quantize):
    def open_onnx(encoder: TorchEncoder, options: RuntimeOptions) -> OnnxEncoder:
        assert isinstance(encoder, TextEncoder)  # modalities={"text"}: open_runtime checked it
        return OnnxEncoder.open(encoder, options.cache_dir, quantize=quantize,
                                providers=options.providers, threads=options.threads,
                                cuda_tf32=options.cuda_tf32, lora=options.lora,
                                cache_dir=options.cache_dir)
    return open_onnx


# Dynamic int8 is not an ``auto`` candidate: it computes its activation scales per run, from
# the whole batch, so a row's answer moves with its neighbours, and admission's
# batch-invariance check (auto.py) can never hold for it. On MiniLM it failed the accuracy
# gate too (mean drift 9.2e-3, min cosine 0.962). Measuring it anyway was a third of every
# first start's measurement (its export and quantization: 6.3 of 18.9 s here, 2026-12-07).
# It stays available when forced (TAILOR_RUNTIME=onnx, TAILOR_ONNX_QUANTIZE=int8).
ONNX_INT8 = register_runtime(Runtime(
    "onnx-int8", "onnxruntime, dynamic per-channel int8 backbone (cached graphs); not "
    "batch-invariant, so not an auto candidate", _opener("int8"), candidate=False,
    setting=("onnx", "int8")))


def _int8_rows(encoder: TorchEncoder, options: RuntimeOptions) -> OnnxEncoder:
    """The cached int8-rows graph and, with ``options.lora``, its LoRA-routed twin (both built
    on first use: ~8 s here) on the CPU provider."""
    from .. import int8_rows

    assert isinstance(encoder, TextEncoder)  # modalities={"text"}: open_runtime checked it
    path = int8_rows.cache_path(options.cache_dir, encoder)
    lora_path = (int8_rows.cache_path(options.cache_dir, encoder, DEFAULT_TARGETS)
                 if options.lora else None)
    if not path.exists() or (lora_path is not None and not lora_path.exists()):
        int8_rows.build(encoder, path, lora_path, DEFAULT_TARGETS)
    return OnnxEncoder(encoder, path, ("CPUExecutionProvider",), options.threads, quantize="int8",
                       lora_path=lora_path, export_quantize=int8_rows.EXPORT_MODE)


# An ``auto`` candidate since stop 30 (2026-12-07; benchmarks/RESULTS.md "int8 rows in
# onnxruntime" and "`onnx-int8-rows` is `auto`'s choice"), and the one auto serves on the
# 2-core dev machine. It is batch-invariant by construction (admission: 3e-7 with LoRA rows in
# its routed graph) and passes the gate (mean drift 7.6e-4, min cosine 0.9967). As the default
# over HTTP it served 1.35-1.42x onnx fp32 at c=64 and 1.0-1.2x at c=1 on 400-character texts,
# but 0.85-0.89x for one short text at a time. What kept it opt-in until then is done: LoRA
# rows of the routed targets run in its LoRA-routed int8 graph, and an adapter's
# ``int8-rows`` export is the served graph plus the head (export/int8_rows.py
# ``bundle_graph``), so exports reproduce the service (2e-7). CPU provider only:
# ``MatMulIntegerToFloat`` is a CPU kernel.
ONNX_INT8_ROWS = register_runtime(Runtime(
    INT8_ROWS, "onnxruntime int8 graph with one activation scale and zero point per token, "
    "SmoothQuant and exact int32 GEMMs (export/int8_rows.py), LoRA rows in its routed twin: "
    "batch-invariant by construction; adapters export with quantize int8-rows to reproduce it",
    _int8_rows, setting=(INT8_ROWS, None), revision=f"{INT8_ROWS_RECIPE}; lora-routed"))
ONNX_FP32 = register_runtime(Runtime(
    "onnx-fp32", "onnxruntime fp32, fused graph (cached)", _opener("none"),
    setting=("onnx", "none")))


__all__ = ["CACHE_DIR", "ONNX_FP32", "ONNX_INT8", "ONNX_INT8_ROWS", "OnnxEncoder", "build_backbone_onnx", "build_lora_onnx", "cache_path",
           "cached_graphs",
           "default_cache_dir"]
