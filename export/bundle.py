"""A stored adapter version -> a self-contained ONNX bundle (zip).

Bundle layout::

    model.onnx       tokens -> backbone -> mean pooling -> L2 norm -> head -> probabilities, logits
    tokenizer.json   the backbone's tokenizer, with truncation and padding configured
    labels.json      label names in output order
    manifest.json    backbone identity, adapter name/version, opset, quantization, parity report
    README.md        how to run it with onnxruntime + tokenizers + numpy (no torch)

Steps: store.load -> the kind loads it and merges it into a fresh backbone copy (+ head)
-> ONNX -> fuse or int8 -> parity check (export/pipeline.py) -> zip. Everything is built in
a private temp folder and the zip is moved into place only after the parity check passed;
on any failure the folder is removed and nothing is left behind. Nothing here depends on
the adapter's kind: each kind registers how it is merged (adapters/kinds).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from adapters.encoders import TorchEncoder
from adapters.errors import InvalidRequest
from adapters.kinds import get_kind
from adapters.storage import Manifest, Store, StoredAdapter
from adapters.storage.store import sha256_file

from . import audio, image, int8_rows
from .graph import Classifier, example_inputs
from .onnx_config import CLASSIFIER, EXPORT_QUANTIZE_CHOICES, OnnxConfig
from .parity import Case, parity_cases
from .pipeline import build_graph
from .quantize import INT8_LADDER, SCHEMES
from .session import require_providers

BUNDLE_FORMAT = "tailor-onnx-bundle"
HELDOUT_UNLABELED = 256  # the adapter's unlabeled texts checked beside the fixed held-out ones
BUNDLE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExportResult:
    path: Path  # the zip
    manifest: dict[str, Any]


@dataclass(frozen=True)
class ModalityExport:
    """What a bundle needs to know about the backbone's modality: the graph's inputs, a
    batch to trace, the parity cases (with the adapter's stored examples), what the manifest
    adds (how to prepare inputs outside Tailor), and the README."""

    config: OnnxConfig
    example_inputs: Callable[[TorchEncoder], tuple[Any, ...]]
    parity_cases: Callable[[TorchEncoder, Sequence[Any], Sequence[Any]], list[Case]]  # examples, unlabeled
    manifest_extra: Callable[[TorchEncoder, Sequence[Any]], dict[str, Any]]
    readme: Callable[[dict[str, Any]], str]
    int8_embeddings: bool = False  # int8 also makes the word-embedding table int8 (a Gather)
    no_int8: str | None = None  # why int8 makes no sense for this modality's graph (a 422)


def _text_cases(encoder: TorchEncoder, examples: Sequence[Any],
                unlabeled: Sequence[Any] = ()) -> list[Case]:
    return parity_cases(encoder, [e.get("text") for e in examples if isinstance(e, dict)], unlabeled)


MODALITIES: dict[str, ModalityExport] = {}  # filled at the end of this module


def check_quantize(quantize: Any) -> str:
    if quantize not in EXPORT_QUANTIZE_CHOICES:
        raise InvalidRequest(f"quantize must be one of {', '.join(EXPORT_QUANTIZE_CHOICES)}, "
                             f"got {quantize!r}")
    return quantize


def served_quantize(encoder: Any) -> str:
    """The export ``quantize`` that answers what ``encoder`` (a serving encoder) serves: the
    runtime's own (``export_quantize``: int8-rows on onnx-int8-rows), else fp32 (``none``;
    also for dynamic int8, whose per-batch scales no export reproduces). What an HTTP export
    gets when it names none."""
    return getattr(encoder, "export_quantize", None) or "none"


def bundle_filename(name: str, version: int, quantize: str) -> str:
    suffix = {"int8": "-int8", "int8-rows": "-int8rows"}.get(quantize, "")
    return f"{name}-v{version}{suffix}.onnx.zip"


def build_module(encoder: TorchEncoder, stored: StoredAdapter) -> nn.Module:
    """The adapter as one PyTorch module on a FRESH copy of the backbone: its kind loads it
    and merges what belongs inside the encoder (LoRA) into the copy; + the head. The served
    backbone is never touched."""
    kind = get_kind(stored.manifest.kind)
    adapter = kind.load(stored)
    copy = encoder.fresh_model()
    kind.merge(copy, adapter)
    return Classifier(encoder.graph_module(copy), adapter.head).eval()


# The graph goes into the zip uncompressed: its weights are floats (or int8) that deflate
# shrinks by 8% (fp32, 90 MB -> 83 MB) or 7% (int8), for 3.1 or 0.8 CPU s of an export's ~16
# (measured 2026-12-07 on the default backbone); unzipping it is faster too. The text files
# (tokenizer, manifest, README) are deflated.
GRAPH_ZIP = zipfile.ZIP_STORED


def export_bundle(encoder: TorchEncoder, store: Store, tenant: str, name: str,
                  version: int | None = None, *, quantize: str = "none",
                  dest_dir: str | Path | None = None, config: OnnxConfig | None = None,
                  providers: Sequence[str] = ("CPUExecutionProvider",)) -> ExportResult:
    """Export ``name`` (latest or ``version``) of ``tenant`` to ``dest_dir/<name>-v<N>.onnx.zip``.

    ``encoder`` supplies the weights to COPY (the served model is never traced or changed).
    The adapter's stored examples (examples.json) and up to ``HELDOUT_UNLABELED`` of its
    unlabeled texts join the fixed held-out texts of the parity check; the int8 top-1 gate
    reads all of them. int8 tries the recipes of ``quantize.INT8_LADDER`` in order (fastest
    first) and keeps the first that passes; its word-embedding table is int8 too.
    ``config`` overrides the OnnxConfig (tests use an impossible tolerance).
    ``providers``: the onnxruntime providers the parity check runs on (e.g. CUDA, to check
    the bundle where it will be served); a provider that is not active is an error.
    Raises ParityError (nothing written) when onnxruntime disagrees with PyTorch.
    """
    quantize = check_quantize(quantize)
    providers = require_providers(providers)  # before seconds of export work
    encoder = encoder.pytorch()
    stored = store.load(tenant, name, version)
    m = stored.manifest
    modality = MODALITIES.get(encoder.modality)
    if modality is None:
        raise InvalidRequest(f"export of {encoder.modality} adapters is not supported yet")
    if quantize == "int8" and modality.no_int8:
        raise InvalidRequest(f"quantize int8 does not apply to {encoder.modality} adapters: "
                             f"{modality.no_int8}; export with quantize \"none\"")
    if quantize == int8_rows.EXPORT_MODE and encoder.modality != "text":
        raise InvalidRequest(f"quantize int8-rows is the onnx-int8-rows runtime's graph, which "
                             f"serves text backbones only, not {encoder.modality}; export with "
                             'quantize "none" or "int8"')
    if quantize == int8_rows.EXPORT_MODE and "CPUExecutionProvider" not in providers:
        raise InvalidRequest("quantize int8-rows runs on onnxruntime's CPU kernels "
                             "(MatMulIntegerToFloat); check it on CPUExecutionProvider")
    config = config or modality.config
    dest = Path(dest_dir) if dest_dir is not None else Path(tempfile.mkdtemp(prefix="tailor-bundle-"))
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=dest))
    try:
        inputs = store.inputs(tenant, m.name, m.version)
        own = inputs.examples
        unlabeled = inputs.unlabeled
        if len(unlabeled) > HELDOUT_UNLABELED:  # a seeded sample: the same on every export
            unlabeled = random.Random(0).sample(unlabeled, HELDOUT_UNLABELED)
        cases = modality.parity_cases(encoder, own, unlabeled)
        extra: dict[str, Any] = {}
        if quantize == int8_rows.EXPORT_MODE:  # the served graph + the head, not a new recipe
            model, report, vs_fp32 = int8_rows.bundle_graph(
                encoder, get_kind(m.kind).load(stored), work, cases, config)
            extra = {"vs_pytorch_fp32": {k: vs_fp32.as_dict()[k] for k in (
                "top1_agreement", "top1_agreement_examples", "top1_agreement_heldout",
                "max_abs_diff", "min_cosine", "rows")}}
        else:
            model, report = build_graph(build_module(encoder, stored), config,
                                        modality.example_inputs(encoder), work,
                                        quantize=quantize, model_config=encoder.model.config,
                                        cases=cases, providers=providers, keep_fp32=("/head/",),
                                        recipes=INT8_LADDER, embeddings=modality.int8_embeddings)

        files = work / "bundle"
        files.mkdir()
        os.replace(model, files / "model.onnx")
        encoder.write_preprocessor(files)
        (files / "labels.json").write_text(json.dumps(list(m.labels), indent=2, ensure_ascii=False))
        manifest = _bundle_manifest(encoder, m, config, quantize,
                                    {**report.as_dict(), "providers": list(providers), **extra},
                                    report.recipe)
        manifest.update(modality.manifest_extra(encoder, own))
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(files.iterdir())}
        (files / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        (files / "README.md").write_text(modality.readme(manifest))

        tmp_zip = work / "bundle.zip"
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for p in sorted(files.iterdir()):
                z.write(p, p.name, compress_type=GRAPH_ZIP if p.suffix == ".onnx" else None)
        final = dest / bundle_filename(m.name, m.version, quantize)
        os.replace(tmp_zip, final)
        return ExportResult(final, manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bundle_manifest(encoder: TorchEncoder, m: Manifest, config: OnnxConfig, quantize: str,
                     parity: dict[str, Any], recipe: str | None = None) -> dict[str, Any]:
    import onnxruntime
    import torch

    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "adapter": {"name": m.name, "version": m.version, "ref": m.ref, "kind": m.kind,
                    "id": m.id, "created_at": m.created_at, "multi_label": m.multi_label,
                    "threshold": m.threshold, "metrics": m.metrics},
        "labels": list(m.labels),
        "backbone": encoder.identity.as_dict(),
        "max_length": encoder.max_length,
        "inputs": list(config.inputs),
        "outputs": list(config.outputs),
        "opset": config.opset,
        "activation": m.activation,
        "quantization": _quantization(quantize, recipe),
        "exporter": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "method": "torch.onnx.export(dynamo=False) + onnxruntime transformer fusions"},
        "parity": parity,
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _quantization(quantize: str, recipe: str | None) -> dict[str, Any]:
    if quantize == "int8" and recipe:
        return {"mode": "int8", "recipe": recipe, "scheme": f"{SCHEMES[recipe]}; word embeddings "
                "int8 with a scale per row; head kept fp32"}
    if quantize == int8_rows.EXPORT_MODE:
        return {"mode": quantize, "recipe": int8_rows.RECIPE, "scheme": "the onnx-int8-rows "
                "runtime's graph: every encoder MatMul int8 with one activation scale and zero "
                "point per token (SmoothQuant, exact int32 sums), LoRA's low-rank path and the "
                "head fp32; parity is against the served graphs, vs_pytorch_fp32 the drift"}
    return {"mode": "none"}


def bundle_readme(manifest: dict[str, Any]) -> str:
    a = manifest["adapter"]
    decide = ("labels = [l for l, p in zip(LABELS, row) if p >= %s]" % a["threshold"]
              if a["multi_label"] else "label = LABELS[int(np.argmax(row))]")
    return f"""# {a['ref']}: ONNX classifier exported by Tailor

Backbone {manifest['backbone']['name']} (sha256 {manifest['backbone']['sha256'][:12]}...) +
mean pooling + L2 norm + the adapter's head, in one graph. Opset {manifest['opset']},
quantization: {manifest['quantization']['mode']}. Parity at export time (with PyTorch; for
int8-rows with the graphs the onnx-int8-rows runtime serves) is in `manifest.json` (`parity`).

Inputs: `input_ids`, `attention_mask` (int64, [batch, sequence]). Outputs:
`probabilities` and `logits` ([batch, {len(manifest['labels'])}], label order in `labels.json`).

Needs only `pip install onnxruntime tokenizers numpy` (no torch):

```python
import json
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

LABELS = json.load(open("labels.json"))
tok = Tokenizer.from_file("tokenizer.json")  # truncation to {manifest['max_length']} tokens and padding built in
sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])

texts = ["first text", "second text"]
enc = tok.encode_batch(texts)
feed = {{"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}}
probs, logits = sess.run(["probabilities", "logits"], feed)
for text, row in zip(texts, probs):
    {decide}
    print(text, "->", {"labels" if a["multi_label"] else "label"}, dict(zip(LABELS, row.round(4))))
```

On a GPU use `pip install onnxruntime-gpu` and `providers=["CUDAExecutionProvider"]` (not for
int8-rows: its int8 kernels are onnxruntime's CPU ones).
"""


MODALITIES.update(
    text=ModalityExport(CLASSIFIER, example_inputs, _text_cases, lambda encoder, examples: {},
                        bundle_readme, int8_embeddings=True),
    image=ModalityExport(image.IMAGE_CLASSIFIER, image.example_inputs, image.parity_cases,
                         image.manifest_extra, image.readme),
    audio=ModalityExport(audio.AUDIO_CLASSIFIER, audio.example_inputs, audio.parity_cases,
                         audio.manifest_extra, audio.readme, no_int8=audio.NO_INT8),
)
