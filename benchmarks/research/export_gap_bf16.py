"""An adapter's fp32 ONNX bundle vs what the service answers, served on torch-fp32 and on
torch-bf16-rows (issue 20c): does the export reproduce a bf16 service?

    python -m benchmarks.research.export_gap_bf16     # a markdown table on stdout

Head adapters on 4 sets (8 examples per label, seed 0), created by an engine serving each
runtime; their fp32 bundle (export/bundle.py) run on onnxruntime with its own tokenizer, one
text at a time, against the engine's own answers on 100 held-out texts.
"""
from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np

SETS = ("trec_coarse", "bbc_news", "sms_spam", "rotten_tomatoes")


def _bundle_probs(path: Path, folder: Path, texts: list[str]) -> tuple[list[str], np.ndarray]:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    zipfile.ZipFile(path).extractall(folder)
    labels = json.loads((folder / "labels.json").read_text())
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    probs = []
    for e in tok.encode_batch(texts):
        (p,) = sess.run(["probabilities"], {"input_ids": np.array([e.ids], dtype=np.int64),
                                            "attention_mask": np.array([e.attention_mask], dtype=np.int64)})
        probs.append(p[0])
    return labels, np.array(probs)


def main() -> str:
    import torch

    from adapters import AdapterStore, Tailor, TextEncoder
    from benchmarks import datasets
    from export import export_bundle
    from export.runtimes import RuntimeOptions, get_runtime

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="tailor-export-gap-"))
    fp32 = TextEncoder()
    encoders = {"torch-fp32": fp32,
                "torch-bf16-rows": get_runtime("torch-bf16-rows").open(fp32, RuntimeOptions(work))}
    loaders = {**datasets.ALL, **datasets.MORE}
    md = ["| served | set (head) | texts | max abs prob diff | median | texts > 1e-4 | label flips |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for runtime, enc in encoders.items():
        engine = Tailor(enc, AdapterStore(work / runtime, fp32.identity))
        for name in SETS:
            train, test = loaders[name]().few_shot(8, seed=0, max_test=100, max_chars=400)
            texts = [t for t, _ in test]
            engine.create_adapter("default", name, "head", train, None)
            served = engine.predict("default", name, texts)["predictions"]
            bundle = export_bundle(enc, engine.store, "default", name, dest_dir=work / f"b-{runtime}")
            labels, probs = _bundle_probs(bundle.path, work / f"x-{runtime}-{name}", texts)
            diffs = np.array([max(abs(float(probs[i][j]) - s["scores"][label]) for j, label in enumerate(labels))
                              for i, s in enumerate(served)])
            flips = sum(labels[int(probs[i].argmax())] != s["label"] for i, s in enumerate(served))
            md.append(f"| {runtime} | {name} | {len(texts)} | {diffs.max():.1e} | {np.median(diffs):.1e} | "
                      f"{int((diffs > 1e-4).sum())} | {flips} |")
            print(md[-1], flush=True)
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    print(main())
