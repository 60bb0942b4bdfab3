"""Accuracy of the default serving path against PyTorch fp32, head and LoRA adapters (issue 12).

    python -m benchmarks.bench_default_accuracy             # 4 sets, 300 held-out texts each
    python -m benchmarks.bench_default_accuracy --test 100  # a quick run
    python -m benchmarks.bench_default_accuracy --runtime onnx-int8-rows --no-exports  # an opt-in runtime

The default path is what ``TAILOR_RUNTIME=auto`` picks on this machine
(export/runtimes/auto.py, measured here on a fresh cache). For each set (BBC News, TREC,
SMS spam, Rotten Tomatoes, Reuters R8, 20 Newsgroups; 8 examples per label, seed 0, texts
cut to 400 characters) one head and one LoRA adapter (2 epochs) are created end to end by two
engines, one serving PyTorch fp32 and one serving the default runtime, each fitting its heads
on its own embeddings as a server would; accuracy on the same held-out texts and top-1
agreement of the two are reported. Then each LoRA adapter is exported as the service's
export does by default (the served runtime's precision: int8-rows on onnx-int8-rows) and the
bundle, run on onnxruntime with its own tokenizer, is compared with the served answers on the
held-out texts (issue 20: >= 99.5% agreement, probabilities within 1e-3). Writes
benchmarks/results/default_accuracy.md.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, write_section

SETS = ("bbc_news", "trec_coarse", "sms_spam", "rotten_tomatoes", "reuters_r8", "newsgroups20")


def main(argv: list[str] | None = None) -> str:
    import torch

    from adapters import AdapterStore, Tailor, TextEncoder
    from benchmarks import datasets
    from export.runtimes import RuntimeOptions, get_runtime
    from export.runtimes.auto import auto

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--lora-epochs", type=int, default=2)
    p.add_argument("--runtime", default="auto",
                   help="the runtime compared with PyTorch fp32: auto (the default path) or a registered name")
    p.add_argument("--no-exports", action="store_true", help="skip the int8 export of each LoRA adapter")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tailor-acc-"))
    fp32 = TextEncoder()
    options = RuntimeOptions(work / "onnx-cache", threads=1)
    if args.runtime == "auto":
        served, choice = auto(fp32, options)
        name_, why = choice.runtime, f"`TAILOR_RUNTIME=auto` chose **{choice.runtime}** here ({choice.reason})"
    else:
        served = get_runtime(args.runtime).open(fp32, options)
        name_, why = args.runtime, f"forced: `TAILOR_RUNTIME={args.runtime}`"
    engines = {"fp32": Tailor(fp32, AdapterStore(work / "fp32", fp32.identity)),
               name_: Tailor(served, AdapterStore(work / "default", fp32.identity))}
    loaders = {**datasets.ALL, **datasets.MORE}
    rows, exports = [], []
    for name in SETS:
        train, test = loaders[name]().few_shot(8, seed=0, max_test=args.test, max_chars=400)
        texts, gold = [t for t, _ in test], [y for _, y in test]
        for kind in ("head", "lora"):
            labels = {}
            for tag, t in engines.items():
                opts = {"epochs": args.lora_epochs} if kind == "lora" else None
                out = t.create_adapter("default", f"{name}-{kind}", kind, train, opts)
                if "job" in out:
                    job = t.wait_job("default", out["job"]["id"], timeout=3600)
                    assert job["status"] == "succeeded", job
                preds = []
                for i in range(0, len(texts), 64):
                    preds += [q["label"] for q in t.predict("default", f"{name}-{kind}",
                                                             texts[i:i + 64])["predictions"]]
                labels[tag] = preds
            a, b = labels["fp32"], labels[name_]
            acc_a = sum(x == y for x, y in zip(a, gold)) / len(gold)
            acc_b = sum(x == y for x, y in zip(b, gold)) / len(gold)
            agree = sum(x == y for x, y in zip(a, b)) / len(gold)
            rows.append((name, kind, len(gold), acc_a, acc_b, agree))
            print(rows[-1], flush=True)
            if kind == "lora" and not args.no_exports:  # the served precision's export vs the service
                exports.append((name, *_export_agreement(engines[name_], f"{name}-{kind}", texts,
                                                         work / "bundles")))
                print(exports[-1], flush=True)
    load = os.getloadavg()
    worst = max(abs(r[3] - r[4]) for r in rows)
    title = "the default path" if args.runtime == "auto" else f"`{args.runtime}`"
    md = [f"## Accuracy of {title} vs PyTorch fp32 (issue 12)", "",
          f"Machine: {machine()}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the "
          f"end; {time.perf_counter() - t0:.0f} s. Runtime: {why}. Each engine fits its own heads on its own "
          f"embeddings (LoRA: {args.lora_epochs} epochs, trained in the worker process in that "
          "engine's precision). 8 examples per label, seed 0; held-out texts cut to 400 chars.", "",
          f"| set | kind | held-out | acc fp32 | acc {name_} | change (pts) | top-1 agreement |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for s, k, n, a, b, g in rows:
        md.append(f"| {s} | {k} | {n} | {100 * a:.1f} | {100 * b:.1f} | {100 * (b - a):+.1f} | {100 * g:.1f}% |")
    md += ["", f"Largest accuracy change: {100 * worst:.2f} points (goal: within 0.5).", ""]
    if not args.no_exports:
        md += [f"### Each LoRA adapter's export vs what {name_} serves (issue 20: >= 99.5% "
               "agreement, probabilities within 1e-3)", "",
               "The export a client gets by default (the served runtime's precision), run on "
               "onnxruntime with the bundle's own tokenizer, against the service's answers on the "
               "held-out texts.", "",
               "| set | quantize | held-out | top-1 agreement | max abs diff (probabilities) | zip MB |",
               "|---|---|---:|---:|---:|---:|"]
    for s_, q_, n_, g_, d_, mb in exports:
        md.append(f"| {s_} | {q_} | {n_} | {100 * g_:.1f}% | {d_:.1e} | {mb:.1f} |")
    text = "\n".join(md) + "\n"
    write_section("default_accuracy" if args.runtime == "auto" else f"accuracy_{args.runtime}", text)
    print(text)
    return text


def _export_agreement(engine, name: str, texts: list[str], dest: Path):
    """(quantize, rows, top-1 agreement, max |probability difference|, zip MB) of ``name``'s
    export in the served precision (what HTTP exports by default) against ``engine``'s answers."""
    import json
    import zipfile

    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from export import export_bundle, served_quantize

    quantize = served_quantize(engine.encoder)
    r = export_bundle(engine.encoder.pytorch(), engine.store, "default", name, quantize=quantize,
                      dest_dir=dest)
    folder = dest / f"{name}-unzipped"
    zipfile.ZipFile(r.path).extractall(folder)
    labels = json.loads((folder / "labels.json").read_text())
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got, want = [], []
    for i in range(0, len(texts), 64):
        enc = tok.encode_batch(texts[i:i + 64])
        (p,) = sess.run(["probabilities"], {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)})
        got.append(p)
        want += engine.predict("default", name, texts[i:i + 64])["predictions"]
    probs = np.concatenate(got)
    served = np.array([[w["scores"][lab] for lab in labels] for w in want])
    agree = float(np.mean([labels[k] == w["label"] for k, w in zip(probs.argmax(1), want)]))
    return quantize, len(texts), agree, float(np.abs(probs - served).max()), r.path.stat().st_size / 1e6


if __name__ == "__main__":
    main()
