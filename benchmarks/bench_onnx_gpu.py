"""The ONNX export on a GPU: parity on onnxruntime's CUDAExecutionProvider, and the backbone's
speed with PyTorch eager (CUDA) vs onnxruntime CUDA fp32 / int8, with the GPU's roofline.

Needs onnxruntime-gpu and a CUDA GPU; CI never runs it. The data sets' packages need not be
installed: ``--data`` is a JSON file written beforehand on any machine that has them::

    python -m benchmarks.bench_onnx_gpu --dump-data gpu-data.json             # here
    python -m benchmarks.bench_onnx_gpu --data gpu-data.json --out results/   # on the GPU box

Writes ``onnx_gpu.md`` (merged into RESULTS.md by ``benchmarks/run.py`` when present under
benchmarks/results/) and ``onnx_gpu.json``. Same timing method as bench_onnx.py: the same
token ids for every backend, medians of repeated runs, backends timed round-robin. Every
backend's time includes moving ids to the device and the embeddings back (what serving pays).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_onnx import BATCHES, LENGTHS, _ids, _time_all, backbone_flops

# BENCH_DEVICE=cpu runs the same script on CPU (a dry run of the script itself, no numbers to keep)
DEVICE = os.environ.get("BENCH_DEVICE", "cuda")
CUDA = "CUDAExecutionProvider" if DEVICE == "cuda" else "CPUExecutionProvider"
NO_TORCH_RUN = r"""
import json, sys
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
texts = json.load(sys.stdin)
tok = Tokenizer.from_file("tokenizer.json")
provider = sys.argv[1]
if provider == "CUDAExecutionProvider" and hasattr(ort, "preload_dlls"):
    ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* pip packages, as torch would load them
sess = ort.InferenceSession("model.onnx", providers=[provider])
assert sess.get_providers()[0] == provider, sess.get_providers()
enc = tok.encode_batch(texts)
feed = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
probs, _ = sess.run(["probabilities", "logits"], feed)
print(json.dumps({"torch_imported": "torch" in sys.modules, "probs": probs.tolist()}))
"""


def dump_data(path: Path) -> None:
    from benchmarks.datasets import bbc_news, trec_coarse

    trec = trec_coarse()
    train, test = trec.few_shot(8, seed=0, max_test=200)
    data = {"short": [t for t, _ in zip(trec.texts, range(5000)) if len(t.split()) >= 12][:64],
            "long": bbc_news().texts[:64], "train": train, "test": test}
    path.write_text(json.dumps(data))


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def peak_gemm(n: int = 8192, tf32: bool = False, repeats: int = 20) -> float:
    if DEVICE != "cuda":
        n, repeats = 1024, 3
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    for _ in range(3):
        torch.mm(a, b)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t)
    torch.backends.cuda.matmul.allow_tf32 = False
    return 2 * n ** 3 / best / 1e9


def main(data_path: Path, out: Path) -> str:
    import onnxruntime as ort

    from adapters import AdapterStore, Tailor, TextEncoder
    from adapters.encoders import mean_pool
    from export import ParityError, build_backbone_onnx, create_session, export_bundle

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(data_path.read_text())
    backbone = TextEncoder()
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "CPU (dry run)"
    result: dict = {"gpu": gpu, "onnxruntime": ort.__version__, "torch": torch.__version__,
                    "available_providers": ort.get_available_providers()}
    tmp = Path(tempfile.mkdtemp(prefix="tailor-gpu-"))

    # 1. backbone graphs, each parity-checked on the CUDA provider
    graphs, parity = {}, {}
    for q in ("none", "int8"):
        path = tmp / f"backbone-{q}.onnx"
        t0 = time.perf_counter()
        try:
            rep = build_backbone_onnx(backbone, path, q, providers=[CUDA])
            parity[q] = {**rep.as_dict(), "build_s": time.perf_counter() - t0}
            graphs[q] = path
        except ParityError as e:
            parity[q] = {**e.report.as_dict(), "error": e.message}
    result["backbone_parity"] = parity

    # 2. a head adapter exported as a bundle, parity-checked on CUDA; run without torch
    with tempfile.TemporaryDirectory() as root:
        engine = Tailor(backbone, AdapterStore(root, backbone.identity))
        engine.create_adapter("bench", "trec", "head", data["train"])
        texts = [t for t, _ in data["test"]]
        served = engine.predict("bench", "trec", texts)["predictions"]
        bundles = {}
        for q in ("none", "int8"):
            entry: dict = {}
            try:
                res = export_bundle(backbone, engine.store, "bench", "trec", quantize=q,
                                    dest_dir=tmp / f"bundle-{q}", providers=[CUDA])
                folder = tmp / f"bundle-{q}" / "unzipped"
                zipfile.ZipFile(res.path).extractall(folder)
                proc = subprocess.run([sys.executable, "-c", NO_TORCH_RUN, CUDA], cwd=folder,
                                      input=json.dumps(texts), text=True, capture_output=True,
                                      timeout=300)
                if proc.returncode:
                    entry["run_error"] = proc.stderr[-2000:]
                else:
                    got = json.loads(proc.stdout.strip().splitlines()[-1])
                    labels = res.manifest["labels"]
                    probs = np.array(got["probs"])
                    want = np.array([[p["scores"][lab] for lab in labels] for p in served])
                    entry.update({
                        "torch_imported": got["torch_imported"],
                        "label_agreement": float(np.mean(
                            [labels[i] == p["label"] for i, p in zip(probs.argmax(1), served)])),
                        "max_abs_diff_vs_served": float(np.abs(probs - want).max())})
                entry["parity"] = res.manifest["parity"]
            except ParityError as e:
                entry["parity"] = {**e.report.as_dict(), "error": e.message}
            bundles[q] = entry
        result["bundles"] = bundles

    # 3. speed: PyTorch eager on CUDA vs onnxruntime CUDA (fp32 with and without TF32, int8)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = copy.deepcopy(backbone.model).to(DEVICE).eval()
    sessions = {}
    if "none" in graphs:
        sessions["ort_fp32"] = create_session(graphs["none"], [CUDA],
                                              provider_options={CUDA: {"use_tf32": "0"}})
        if DEVICE == "cuda":
            sessions["ort_fp32_tf32"] = create_session(graphs["none"], [CUDA],
                                                       provider_options={CUDA: {"use_tf32": "1"}})
    if "int8" in graphs:
        sessions["ort_int8"] = create_session(graphs["int8"], [CUDA])
    rows = []
    for lname, length in LENGTHS.items():
        ids, mask = _ids(backbone, data[lname], length, 32)
        ids128 = np.concatenate([ids] * 4)
        mask128 = np.concatenate([mask] * 4)
        for batch in (*BATCHES, 128):
            i, m = ids128[:batch], mask128[:batch]

            @torch.inference_mode()
            def run_torch(i=i, m=m):
                ti, tm = torch.from_numpy(i).to(DEVICE), torch.from_numpy(m).to(DEVICE)
                h = model(input_ids=ti, attention_mask=tm).last_hidden_state
                return mean_pool(h, tm).cpu()

            @torch.inference_mode()
            def run_torch_fp16(i=i, m=m):
                ti, tm = torch.from_numpy(i).to(DEVICE), torch.from_numpy(m).to(DEVICE)
                with torch.autocast(DEVICE, dtype=torch.float16 if DEVICE == "cuda" else torch.bfloat16):
                    h = model(input_ids=ti, attention_mask=tm).last_hidden_state
                return mean_pool(h.float(), tm).cpu()

            fns = {"torch": run_torch, "torch_fp16_autocast": run_torch_fp16, **{
                k: (lambda s=s, i=i, m=m: s.run(None, {"input_ids": i, "attention_mask": m}))
                for k, s in sessions.items()}}
            cell = {"length": lname, "tokens": length, "batch": batch}
            flops = backbone_flops(backbone.model.config, batch, length)
            for name, t in _time_all(fns, budget_s=0.5).items():
                cell[name] = batch / t
                cell[name + "_gflops"] = flops / t / 1e9
            rows.append(cell)
    result["speed"] = rows
    result["peak_fp32_gflops"] = peak_gemm(tf32=False)
    result["peak_tf32_gflops"] = peak_gemm(tf32=True)
    result["seconds"] = time.perf_counter() - started
    (out / "onnx_gpu.json").write_text(json.dumps(result, indent=2))
    md = render(result)
    (out / "onnx_gpu.md").write_text(md)
    return md


def render(r: dict) -> str:
    backends = [b for b in ("torch", "torch_fp16_autocast", "ort_fp32", "ort_fp32_tf32", "ort_int8")
                if b in r["speed"][0]]
    md = ["## ONNX on a GPU (onnxruntime CUDAExecutionProvider)", "",
          f"Measured on one {r['gpu']} (device machine lent to this session), onnxruntime-gpu "
          f"{r['onnxruntime']}, torch {r['torch']}; {r['seconds']:.0f} s in all. "
          "Every time includes copying ids to the GPU and the result back.", "",
          "### Parity on CUDA", "",
          "| graph | rows | max abs diff | min cosine | top-1 agreement | passed |",
          "|---|---:|---:|---:|---:|---|"]
    for name, p in [*(("backbone " + q, p) for q, p in r["backbone_parity"].items()),
                    *(("head bundle " + q, b["parity"]) for q, b in r["bundles"].items())]:
        md.append(f"| {name} | {p.get('rows')} | {p.get('max_abs_diff', float('nan')):.2e} | "
                  f"{p.get('min_cosine') or float('nan'):.4f} | {p.get('top1_agreement') or float('nan'):.3f} | "
                  f"{p.get('passed')}{' (' + p['error'][:80] + ')' if 'error' in p else ''} |")
    md += ["", "Head bundles run on CUDA in a fresh interpreter that imports no torch, on 200 "
           "held-out TREC questions, vs the service's PyTorch (CPU) answers:", ""]
    for q, b in r["bundles"].items():
        if "label_agreement" in b:
            md.append(f"- {q}: label agreement {100 * b['label_agreement']:.1f}%, max |prob diff| "
                      f"{b['max_abs_diff_vs_served']:.2e}, torch imported: {b['torch_imported']}")
        else:
            md.append(f"- {q}: {b.get('run_error', 'export failed')[:300]}")
    md += ["", "### Backbone throughput on the GPU (rows/s; ratio vs PyTorch eager fp32 CUDA)", "",
           "| texts | batch | " + " | ".join(backends) + " |", "|---|---:|" + "---:|" * len(backends)]
    for c in r["speed"]:
        cells = [f"{c['torch']:.0f}"] + [f"{c[b]:.0f} ({c[b] / c['torch']:.2f}x)" for b in backends[1:]]
        md.append(f"| {c['length']} ({c['tokens']} tok) | {c['batch']} | " + " | ".join(cells) + " |")
    md += ["", f"Roofline: peak GEMM {r['peak_fp32_gflops'] / 1000:.1f} TFLOP/s fp32, "
           f"{r['peak_tf32_gflops'] / 1000:.1f} TFLOP/s TF32 (best of 20 torch.mm 8192^3). "
           "Achieved by the backbone at batch 128, 120 tokens: " + ", ".join(
               f"{b} {c[b + '_gflops'] / 1000:.2f} TFLOP/s" for c in r["speed"]
               if c["batch"] == 128 and c["length"] == "long" for b in backends) + ".", ""]
    return "\n".join(md)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump-data", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args()
    if a.dump_data:
        dump_data(a.dump_data)
    elif DEVICE == "cuda" and not torch.cuda.is_available():
        print("[skip] bench_onnx_gpu: no CUDA GPU here (torch.cuda.is_available() is False); "
              "run it on a GPU machine, or BENCH_DEVICE=cpu for a dry run", file=sys.stderr)
    elif a.data is None:
        ap.error("--data is required (write it with --dump-data on a machine with the data sets)")
    else:
        print(main(a.data, a.out))
