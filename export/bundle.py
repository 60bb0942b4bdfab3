"""A stored adapter version -> a self-contained ONNX bundle (zip).

Bundle layout::

    model.onnx       tokens -> backbone -> mean pooling -> L2 norm -> head -> probabilities, logits
    tokenizer.json   the backbone's tokenizer, with truncation and padding configured
    labels.json      label names in output order
    manifest.json    backbone identity, adapter name/version, opset, quantization, parity report
    README.md        how to run it with onnxruntime + tokenizers + numpy (no torch)

Steps: store.load -> export target (fresh backbone copy + head) -> ONNX -> fuse -> [int8]
-> parity check -> zip. Everything is built in a private temp folder and the zip is moved
into place only after the parity check passed; on any failure the folder is removed and
nothing is left behind.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from adapters.backbone import Backbone
from adapters.errors import InvalidRequest
from adapters.store import AdapterStore, sha256_file

from .graph import example_inputs, export_onnx, fuse_transformer, quantize_int8
from .onnx_config import QUANTIZE_CHOICES, OnnxConfig
from .parity import check_parity, parity_cases
from .runtime import create_session, require_providers
from .targets import target_for

BUNDLE_FORMAT = "tailor-onnx-bundle"
BUNDLE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExportResult:
    path: Path  # the zip
    manifest: dict[str, Any]


def check_quantize(quantize: Any) -> str:
    if quantize not in QUANTIZE_CHOICES:
        raise InvalidRequest(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    return quantize


def bundle_filename(name: str, version: int, quantize: str) -> str:
    return f"{name}-v{version}{'-int8' if quantize == 'int8' else ''}.onnx.zip"


def _write_tokenizer(backbone: Backbone, path: Path) -> None:
    """The served tokenizer, with the server's truncation and padding baked in, so that
    ``Tokenizer.from_file`` alone reproduces the service's token ids."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(backbone.tokenizer.backend_tokenizer.to_str())
    tok.enable_truncation(max_length=backbone.max_length)
    pad = backbone.tokenizer.pad_token or "[PAD]"
    tok.enable_padding(pad_id=int(backbone.tokenizer.pad_token_id or 0), pad_token=pad)
    tok.save(str(path))


def export_bundle(backbone: Backbone, store: AdapterStore, tenant: str, name: str,
                  version: int | None = None, *, quantize: str = "none",
                  dest_dir: str | Path | None = None, sample_texts: Sequence[str] = (),
                  config: OnnxConfig | None = None,
                  providers: Sequence[str] = ("CPUExecutionProvider",)) -> ExportResult:
    """Export ``name`` (latest or ``version``) of ``tenant`` to ``dest_dir/<name>-v<N>.onnx.zip``.

    ``backbone`` supplies the weights to COPY (the served model is never traced or changed).
    The adapter's stored examples (examples.json) and ``sample_texts`` join the fixed parity
    sample; the int8 top-1 gate is taken on them when there are any.
    ``config`` overrides the target's OnnxConfig (tests use an impossible tolerance).
    ``providers``: the onnxruntime providers the parity check runs on (e.g. CUDA, to check
    the bundle where it will be served); a provider that is not active is an error.
    Raises ParityError (nothing written) when onnxruntime disagrees with PyTorch.
    """
    quantize = check_quantize(quantize)
    providers = require_providers(providers)  # before seconds of export work
    stored = store.load(tenant, name, version)
    m = stored.manifest
    target = target_for(m["kind"])
    config = config or target.config
    dest = Path(dest_dir) if dest_dir is not None else Path(tempfile.mkdtemp(prefix="tailor-bundle-"))
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=dest))
    try:
        module = target.build(backbone, stored)  # on a fresh copy of the backbone
        raw = export_onnx(module, config, work / "raw.onnx", example_inputs(backbone))
        if quantize == "int8":
            # int8 on the unfused graph: every MatMul (Q, K, V included) gets int8 weights, which
            # measured faster than int8 on the fused graph (docs/onnx.md). The head stays fp32:
            # it is tiny and sits right before the probabilities.
            model = quantize_int8(raw, work / "int8.onnx", exclude_outputs_of=("/head/",))
        else:
            model = fuse_transformer(raw, work / "fused.onnx", backbone.model.config)
        own = [e.get("text") for e in store.examples(tenant, m["name"], m["version"])
               if isinstance(e, dict)]
        cases = parity_cases(backbone.tokenizer, backbone.max_length, [*own, *sample_texts])
        report = check_parity(module, create_session(model, providers), config, cases, quantize)

        files = work / "bundle"
        files.mkdir()
        os.replace(model, files / "model.onnx")
        _write_tokenizer(backbone, files / "tokenizer.json")
        (files / "labels.json").write_text(json.dumps(m["labels"], indent=2, ensure_ascii=False))
        manifest = _bundle_manifest(backbone, m, config, quantize,
                                    {**report.as_dict(), "providers": list(providers)})
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(files.iterdir())}
        (files / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        (files / "README.md").write_text(bundle_readme(manifest))

        tmp_zip = work / "bundle.zip"
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for p in sorted(files.iterdir()):
                z.write(p, p.name)
        final = dest / bundle_filename(m["name"], m["version"], quantize)
        os.replace(tmp_zip, final)
        return ExportResult(final, manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bundle_manifest(backbone: Backbone, m: dict[str, Any], config: OnnxConfig, quantize: str,
                     parity: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime
    import torch

    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "adapter": {"name": m["name"], "version": m["version"], "ref": f"{m['name']}@{m['version']}",
                    "kind": m["kind"], "id": m.get("id"), "created_at": m.get("created_at"),
                    "multi_label": bool(m.get("multi_label")),
                    "threshold": float(m.get("options", {}).get("threshold", 0.5)),
                    "metrics": m.get("metrics", {})},
        "labels": m["labels"],
        "backbone": backbone.identity.as_dict(),
        "max_length": backbone.max_length,
        "inputs": list(config.inputs),
        "outputs": list(config.outputs),
        "opset": config.opset,
        "activation": "sigmoid" if m.get("multi_label") else "softmax",
        "quantization": ({"mode": "int8", "scheme": "dynamic, per-channel QInt8 weights of the "
                          "backbone MatMuls; head kept fp32"} if quantize == "int8"
                         else {"mode": "none"}),
        "exporter": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "method": "torch.onnx.export(dynamo=False) + onnxruntime transformer fusions"},
        "parity": parity,
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def bundle_readme(manifest: dict[str, Any]) -> str:
    a = manifest["adapter"]
    decide = ("labels = [l for l, p in zip(LABELS, row) if p >= %s]" % a["threshold"]
              if a["multi_label"] else "label = LABELS[int(np.argmax(row))]")
    return f"""# {a['ref']}: ONNX classifier exported by Tailor

Backbone {manifest['backbone']['name']} (sha256 {manifest['backbone']['sha256'][:12]}...) +
mean pooling + L2 norm + the adapter's head, in one graph. Opset {manifest['opset']},
quantization: {manifest['quantization']['mode']}. Parity with PyTorch at export time is in
`manifest.json` (`parity`).

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

On a GPU use `pip install onnxruntime-gpu` and `providers=["CUDAExecutionProvider"]`.
"""



