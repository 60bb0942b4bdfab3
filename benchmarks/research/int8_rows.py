"""Research (issue 20): a batch-invariant int8 backbone in PyTorch, per-token activation scales.
(The recipe ``sq-asym`` is served as ``TAILOR_RUNTIME=torch-int8-rows``: adapters/encoders/int8_rows.py.)

    .venv/bin/python -m benchmarks.research.int8_rows [--variants ...] [--rounds 3]

Why it can be batch-invariant where onnxruntime's dynamic int8 and OpenVINO's int8 are not:
every Linear of the encoder becomes an int8 x int8 GEMM with int32 accumulation
(``torch._int_mm``), which is EXACT whatever the batch's shape or the kernel's blocking, with
one activation scale PER TOKEN (its own absolute maximum), so a row's quantization never
sees the other rows; and attention runs row by row on each row's real tokens (the
``torch-bf16-rows`` module, adapters/encoders/row_attention.py), so padding never enters a
reduction. What is left is row-wise (LayerNorm, GELU, softmax, the scales): a text's
embedding is then bit for bit the same alone or in any batch.

Accuracy comes from two standard tricks, both batch-independent:
- SmoothQuant (Xiao et al. 2023): per input channel j, activations are divided and weight
  columns multiplied by s_j = max|X_j|^a / max|W_j|^(1-a), calibrated once on
  export/sample.py's 102 held-out texts (not the gate's sample);
- asymmetric per-token scales (a zero point) on the FFN output's input, the GELU outputs,
  which are nearly one-signed: symmetric int8 wastes half its range there. The zero point's
  term is a per-row constant times the weight's column sums, still exact.

Variants (``--variants``): ``fp32`` (the reference, row attention), ``sym`` (per-token
symmetric, no smoothing), ``sq`` (+ SmoothQuant a=0.5), ``sq-asym`` (+ asymmetric FFN
input), ``sq-ffn32`` (SmoothQuant, FFN output Linear left fp32: no longer exact, within
float rounding), and ``bf16-rows`` (the opt-in runtime torch-bf16-rows, for comparison). Each is measured against PyTorch fp32 (the served reference):
- the gate of ``auto`` on its fixed sample (min cosine >= 0.995, mean 1-cos <= 1e-3) and the
  same drift on 150 BBC News texts (400 chars) + 100 TREC questions;
- batch invariance: the fixed sample one text per call vs in mixed, padded calls (max |diff|,
  export/runtimes/invariance.py's layouts, bare rows);
- top-1 agreement of 8-shot logistic-regression heads fitted on fp32 embeddings (TREC,
  BBC News, 3 seeds), predicting 300 held-out texts from each variant's embeddings;
- rows/s at batch 1 (median over 8 short texts) and batch 32 (the sample twice, best of
  ``--rounds``), 1 thread, against PyTorch fp32 and the onnx-fp32 runtime in the same run.
Results: benchmarks/RESULTS.md, issue 20.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from adapters.encoders.int8_rows import ASYMMETRIC, activation_maxima, quantize

VARIANTS = {
    "fp32": None,
    "sym": dict(smooth=False),
    "sq": dict(smooth=True),
    "sq-asym": dict(smooth=True, asymmetric=ASYMMETRIC),  # what torch-int8-rows serves
    "sq-ffn32": dict(smooth=True, keep=ASYMMETRIC),
    "bf16-rows": "bf16-rows",  # the opt-in runtime torch-bf16-rows, for comparison
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    from sklearn.linear_model import LogisticRegression

    from adapters import TextEncoder
    from adapters.encoders import bert
    from benchmarks.datasets import bbc_news, trec_coarse
    from export.runtimes.auto import _drift, _rate, fixed_sample  # what auto's gate measures
    from export.runtimes.base import RuntimeOptions, get_runtime, open_runtime
    from export.runtimes.invariance import check
    from export.sample import HELDOUT_TEXTS

    torch.set_num_threads(1)
    enc = TextEncoder(workers=1)
    sample = fixed_sample()
    _, bt = bbc_news().few_shot(1, seed=9, max_test=150, max_chars=400)
    _, tt = trec_coarse().few_shot(1, seed=9, max_test=100)
    wide = [t for t, _ in bt] + [t for t, _ in tt]

    def embed_with(model):
        def embed(texts):
            with torch.no_grad():
                return torch.cat([enc.forward(enc.collate(enc.prepare(texts[i:i + 16])), model)
                                  for i in range(0, len(texts), 16)]).numpy()
        return embed

    fp32 = embed_with(enc.model)
    ref_sample, ref_wide = fp32(sample), fp32(wide)
    heads = []  # (texts, fp32 predictions, head) per set and seed
    for ds, kw in ((trec_coarse(), {}), (bbc_news(), {"max_chars": 400})):
        for seed in range(3):
            train, test = ds.few_shot(8, seed=seed, max_test=300, **kw)
            clf = LogisticRegression(max_iter=2000).fit(fp32([e["text"] for e in train]),
                                                        [e["label"] for e in train])
            texts = [t for t, _ in test]
            heads.append((texts, clf.predict(fp32(texts)), clf))

    onnx = open_runtime(get_runtime("onnx-fp32"), enc, RuntimeOptions(
        Path(tempfile.mkdtemp()), threads=1, lora=False))
    b32, b1 = (sample * 2)[:32], sample[:8]
    speed_ref = {"torch fp32": fp32, "onnx fp32": lambda t: onnx.embed(t).numpy()}
    for name in args.variants:
        spec = VARIANTS[name]
        if spec == "bf16-rows":
            twin = enc.with_dtype("bfloat16", row_attention=True)
            embed = lambda texts, twin=twin: twin.embed(texts).float().numpy()  # noqa: E731
        else:
            model = copy.deepcopy(enc.model).eval()
            bert.row_attention_on(model)
            if spec is not None:
                maxima = (activation_maxima(model, embed_with(model), list(HELDOUT_TEXTS))
                          if spec["smooth"] else None)
                quantize(model, maxima, asymmetric=spec.get("asymmetric"), keep=spec.get("keep"))
            embed = embed_with(model)
        gate = _drift(ref_sample, embed(sample))
        wide_drift = _drift(ref_wide, embed(wide))
        invariance = check(SimpleNamespace(embed=embed), sample).max_diff  # admission's layouts
        agree = [float(np.mean(clf.predict(embed(texts)) == want)) for texts, want, clf in heads]
        speed = {}
        for label, fn in [(name, embed), *speed_ref.items()]:
            speed[label] = (statistics.median(_rate(fn, [s], 1) for s in b1),
                            _rate(fn, b32, args.rounds))
        print(f"{name}: gate min cos {gate[0]:.4f} mean drift {gate[1]:.1e}; wide {wide_drift[0]:.4f}"
              f" / {wide_drift[1]:.1e}; alone vs mixed {invariance:.1e}; head agreement min "
              f"{min(agree):.3f} mean {np.mean(agree):.4f}; rows/s b1 / b32: "
              + ", ".join(f"{k} {v[0]:.0f} / {v[1]:.0f}" for k, v in speed.items()), flush=True)


if __name__ == "__main__":
    main()
