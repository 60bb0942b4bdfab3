"""An adapter's fp32 ONNX bundle vs what the service answers, served on torch-fp32 and on
torch-bf16-rows (issue 20c): does the export reproduce a bf16 service? Head adapters on 4 sets
(8 examples per label, seed 0), 100 held-out texts each, probabilities compared per text.

    PYTHONPATH=. python benchmarks/research/export_gap_bf16.py
"""
import io, json, tempfile, zipfile, sys
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from adapters import AdapterStore, Tailor, TextEncoder
from benchmarks import datasets
from export import export_bundle
from export.runtimes import RuntimeOptions, get_runtime
import onnxruntime as ort
from tokenizers import Tokenizer
work = Path(tempfile.mkdtemp(prefix="gap-"))
fp32 = TextEncoder()
rows = get_runtime("torch-bf16-rows").open(fp32, RuntimeOptions(work))
loaders = {**datasets.ALL, **datasets.MORE}
out = []
for runtime, enc in (("torch-fp32", fp32), ("torch-bf16-rows", rows)):
    t = Tailor(enc, AdapterStore(work / runtime, fp32.identity))
    for name in ("trec_coarse", "bbc_news", "sms_spam", "rotten_tomatoes"):
        train, test = loaders[name]().few_shot(8, seed=0, max_test=100, max_chars=400)
        texts = [x for x, _ in test]
        t.create_adapter("default", name, "head", train, None)
        served = t.predict("default", name, texts)["predictions"]
        r = export_bundle(enc, t.store, "default", name, dest_dir=work / f"b-{runtime}")
        d = work / f"x-{runtime}-{name}"; zipfile.ZipFile(r.path).extractall(d)
        labels = json.loads((d / "labels.json").read_text())
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
        diffs, flips = [], 0
        for i, x in enumerate(texts):
            e = tok.encode_batch([x])
            (p,) = sess.run(["probabilities"], {"input_ids": np.array([e[0].ids], dtype=np.int64),
                                                 "attention_mask": np.array([e[0].attention_mask], dtype=np.int64)})
            diffs.append(max(abs(float(p[0][j]) - served[i]["scores"][l]) for j, l in enumerate(labels)))
            flips += labels[int(p[0].argmax())] != served[i]["label"]
        diffs = np.array(diffs)
        line = f"| {runtime} | {name} | {len(texts)} | {diffs.max():.1e} | {np.median(diffs):.1e} | {(diffs > 1e-4).sum()} | {flips} |"
        print(line, flush=True); out.append(line)
print("\n".join(["| served | set (head) | texts | max abs prob diff | median | > 1e-4 | label flips |", "|---|---|---:|---:|---:|---:|---:|"] + out))
