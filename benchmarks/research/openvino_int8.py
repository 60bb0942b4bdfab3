"""Research (issue 20): OpenVINO + NNCF static int8 on the MiniLM backbone, against fp32.

Two steps, two environments (OpenVINO and NNCF are not project dependencies):

    .venv/bin/python -m benchmarks.research.openvino_int8 dump DIR      # token ids, fp32 embeddings,
                                                                       # and the unfused fp32 graph
    python3 -m venv /tmp/ov && /tmp/ov/bin/pip install openvino nncf onnx
    /tmp/ov/bin/python benchmarks/research/openvino_int8.py measure DIR fp32 int8-transformer

``measure``: NNCF ``quantize`` with ``model_type=TRANSFORMER`` (SmoothQuant + fast bias
correction), calibrated on export/sample.py's 102 held-out texts one per run; then min cosine
and mean drift against PyTorch fp32 on 150 BBC News texts (400 chars) + 100 TREC questions,
batch invariance (the fixed sample alone vs in mixed, padded calls, as export/runtimes/invariance.py)
and rows/s at batch 1 / 32 (1 thread). Results: benchmarks/RESULTS.md, issue 20.
"""
import pickle
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def dump(folder: Path) -> None:
    import torch

    from adapters import TextEncoder
    from benchmarks.datasets import bbc_news, trec_coarse
    from export.graph import example_inputs, export_onnx
    from export.onnx_config import SENTENCE_ENCODER
    from export.runtimes.auto import fixed_sample
    from export.sample import HELDOUT_TEXTS

    torch.set_num_threads(1)
    enc = TextEncoder(workers=1)
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(enc.graph_module(enc.fresh_model()), SENTENCE_ENCODER, folder / "raw.onnx",
                example_inputs(enc))
    _, bt = bbc_news().few_shot(1, seed=9, max_test=150, max_chars=400)
    held = [t for t, _ in bt] + list(trec_coarse().texts[:100])
    d = {"cal": enc.prepare(list(HELDOUT_TEXTS)), "held": enc.prepare(held),
         "sample": enc.prepare(fixed_sample()), "ref": enc.embed(held).numpy(),
         "filler": enc.prepare(["padding " * 600])[0], "pad": enc._pad_id}
    (folder / "data.pkl").write_bytes(pickle.dumps(d))


def measure(folder: Path, names: list[str]) -> None:
    import nncf
    import openvino as ov

    d = pickle.loads((folder / "data.pkl").read_bytes())
    core = ov.Core()
    core.set_property("CPU", {"INFERENCE_NUM_THREADS": 1})
    model = core.read_model(str(folder / "raw.onnx"))

    def collate(rows):
        w = max(len(r) for r in rows)
        ids = np.full((len(rows), w), d["pad"], dtype=np.int64)
        m = np.zeros((len(rows), w), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            m[i, :len(r)] = 1
        return {"input_ids": ids, "attention_mask": m}

    cal = nncf.Dataset(d["cal"], lambda r: collate([r]))
    variants = {"fp32": None, "int8-transformer": dict(model_type=nncf.ModelType.TRANSFORMER)}
    for name in names:
        kw = variants[name]
        t = time.time()
        m = model if kw is None else nncf.quantize(model, cal, subset_size=len(d["cal"]), **kw)
        cm = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        req = cm.create_infer_request()

        def run(rows):
            return req.infer(collate(rows))[cm.output(0)].copy()

        build = time.time() - t
        got = np.concatenate([run(d["held"][i:i + 32]) for i in range(0, len(d["held"]), 32)])
        ref = d["ref"]
        c = np.sum(ref * got, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
        s = d["sample"]
        alone = np.concatenate([run([r]) for r in s])
        worst = 0.0
        n = len(s)
        layouts = (([list(range(n))], True), ([list(range(i, min(i + 5, n))) for i in range(0, n, 5)], False),
                   ([list(range(n))[::-1][i:i + 8] for i in range(0, n, 8)], True))
        for calls, fill in layouts:
            for call in calls:
                rows = [s[i] for i in call] + ([d["filler"]] if fill else [])
                worst = max(worst, float(np.abs(run(rows)[:len(call)] - alone[call]).max()))
        short, bbc = d["held"][150:182], d["held"][:32]

        def rate(rows, rep):
            ts = []
            for _ in range(rep):
                t0 = time.perf_counter()
                run(rows)
                ts.append(time.perf_counter() - t0)
            return len(rows) / statistics.median(ts)

        b1 = statistics.median(rate([r], 1) for r in short[:16])
        print(f"{name}: build {build:.0f} s, min cos {c.min():.4f}, mean drift {np.mean(1 - c):.2e}, "
              f"alone vs mixed {worst:.1e}, short b1 {b1:.0f}, short b32 {rate(short, 3):.0f}, "
              f"bbc b32 {rate(bbc, 3):.0f} rows/s", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(Path(sys.argv[2]))
    else:
        measure(Path(sys.argv[2]), sys.argv[3:])
