"""Issue 20: the batch-invariant int8 maths of ``adapters/encoders/int8_rows.py`` (per-token
activation scales, SmoothQuant, exact int32 GEMMs, a zero point on the FFN output's input) as
ONE onnxruntime graph, instead of PyTorch ops. Does it beat the served onnx fp32 graph, and
does it keep ``auto``'s accuracy gate and batch invariance?

Stop 25 found torch-int8-rows slower than hoped because each int8 Linear runs ~8 elementwise
PyTorch passes around ``torch._int_mm``; stop 26 suggested expressing the same maths in ONNX
(ReduceMax per row, Round, Cast, MatMulInteger), where the passes are onnxruntime kernels and
an export could reproduce the service.

    python -m benchmarks.research.ort_int8_rows [--threads 2] [--turns 5]
    python -m benchmarks.research.ort_int8_rows --sweep   # SmoothQuant alpha x zero point
    python -m benchmarks.research.ort_int8_rows --sites   # which of a layer's inputs get one

What it does, on a fresh copy of the backbone (nothing served is touched):
1. exports the plain fp32 graph (export/graph.py, as export/static_int8.py does);
2. calibrates each weight MatMul's per-input-channel |activation| maximum on export/sample.py's
   102 held-out texts (one text per run, no padding);
3. rewrites every weight MatMul (``export.calibration.weight_matmuls``) as
   ``Mul(smooth) -> ReduceMax|x| per token -> Round(x / step) -> Cast int8 -> MatMulInteger
   (int8 weights, per output channel scale) -> Cast float -> Mul(step) -> Mul(weight scale)``;
   the FFN output projections (``/layer.N/output/dense/``) quantize asymmetrically (a per-token
   minimum and step; its part is the per-token offset times the weights' column sums). Variant
   ``u8``: activations shifted to uint8 (what VNNI's vpdpbusd multiplies), the shift taken back
   with the column sums, in case onnxruntime's int8 x int8 path is slower;
4. measures, against the served fp32 graph (``ort.cached_graphs``): ``auto``'s gate (mean
   drift and min cosine on its fixed sample), the invariance check (alone vs mixed, padded
   batches), and rows/s at batch 1 and 32 on short texts and BBC texts cut to 400 characters,
   in interleaved turns (medians).
"""
from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from export.int8_rows import ALPHA, EPS  # the served recipe's

ASYMMETRIC = re.compile(r"/layer\.\d+/output/dense/")
EVERY = None  # quantize_rows: a zero point on every input
NONE = re.compile(r"(?!)")  # matches nothing: all symmetric
ASYM_CHOICES = (ASYMMETRIC, NONE, EVERY)


def rewrite(raw, dst, maxima: dict[str, np.ndarray], *, u8: bool = False,
            alpha: float = ALPHA, asymmetric: re.Pattern | None = ASYMMETRIC) -> Path:
    """``raw`` with every calibrated weight MatMul as a per-token int8 GEMM (module docstring)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from export.int8_rows import Rewrite, int8_weights, smoothing

    model = onnx.load(str(raw))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    r = Rewrite()
    const = r.const
    for node in r.targets(g.node, maxima):
        p = node.name.strip("/").replace("/", "_")
        x, (y,) = node.input[0], node.output
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)  # [in, out]
        s = smoothing(maxima[node.name], [w], alpha)
        wq, wscale = int8_weights(w * s[:, None])
        colsum = wq.astype(np.float32).sum(0)
        asym = bool(asymmetric is not None and asymmetric.search(node.name))
        n = lambda op, ins, outs, p=p, **kw: r.node(p, op, ins, outs, **kw)  # noqa: E731
        n("Mul", [x, const(f"{p}_smooth", (1.0 / s).astype(np.float32))], [f"{p}_xs"])
        wq_name = const(f"{p}_wq", wq)
        if asym:
            n("ReduceMin", [f"{p}_xs"], [f"{p}_lo"], axes=[-1], keepdims=1)
            n("ReduceMax", [f"{p}_xs"], [f"{p}_hi"], axes=[-1], keepdims=1)
            n("Sub", [f"{p}_hi", f"{p}_lo"], [f"{p}_rng"])
            n("Max", [f"{p}_rng", const(f"{p}_eps", np.array(EPS, np.float32))], [f"{p}_rng2"])
            n("Mul", [f"{p}_rng2", const(f"{p}_inv255", np.array(1 / 255, np.float32))], [f"{p}_step"])
            n("Sub", [f"{p}_xs", f"{p}_lo"], [f"{p}_x0"])
            n("Div", [f"{p}_x0", f"{p}_step"], [f"{p}_xd"])
            n("Round", [f"{p}_xd"], [f"{p}_xr"])  # 0..255
            if u8:
                n("Cast", [f"{p}_xr"], [f"{p}_q"], to=TensorProto.UINT8)
                offset = 0.0
            else:
                n("Sub", [f"{p}_xr", const(f"{p}_128", np.array(128, np.float32))], [f"{p}_xc"])
                n("Cast", [f"{p}_xc"], [f"{p}_q"], to=TensorProto.INT8)
                offset = 128.0
            n("MatMulInteger", [f"{p}_q", wq_name], [f"{p}_acc"])
            n("Cast", [f"{p}_acc"], [f"{p}_accf"], to=TensorProto.FLOAT)
            n("Mul", [f"{p}_accf", f"{p}_step"], [f"{p}_main"])
            # lo + offset * step per token, times the weights' column sums
            n("Mul", [f"{p}_step", const(f"{p}_off", np.array(offset, np.float32))], [f"{p}_os"])
            n("Add", [f"{p}_lo", f"{p}_os"], [f"{p}_zp"])
            n("Mul", [f"{p}_zp", const(f"{p}_colsum", colsum)], [f"{p}_zterm"])
            n("Add", [f"{p}_main", f"{p}_zterm"], [f"{p}_deq"])
        else:
            n("Abs", [f"{p}_xs"], [f"{p}_abs"])
            n("ReduceMax", [f"{p}_abs"], [f"{p}_amax"], axes=[-1], keepdims=1)
            n("Max", [f"{p}_amax", const(f"{p}_eps", np.array(EPS, np.float32))], [f"{p}_am2"])
            n("Mul", [f"{p}_am2", const(f"{p}_inv127", np.array(1 / 127, np.float32))], [f"{p}_step"])
            n("Div", [f"{p}_xs", f"{p}_step"], [f"{p}_xd"])
            n("Round", [f"{p}_xd"], [f"{p}_xr"])  # -127..127
            if u8:
                n("Add", [f"{p}_xr", const(f"{p}_128", np.array(128, np.float32))], [f"{p}_xu"])
                n("Cast", [f"{p}_xu"], [f"{p}_q"], to=TensorProto.UINT8)
                n("MatMulInteger", [f"{p}_q", wq_name], [f"{p}_acc"])
                n("Cast", [f"{p}_acc"], [f"{p}_accf"], to=TensorProto.FLOAT)
                n("Sub", [f"{p}_accf", const(f"{p}_c128", (128 * colsum).astype(np.float32))], [f"{p}_acc0"])
                n("Mul", [f"{p}_acc0", f"{p}_step"], [f"{p}_deq"])
            else:
                n("Cast", [f"{p}_xr"], [f"{p}_q"], to=TensorProto.INT8)
                n("MatMulInteger", [f"{p}_q", wq_name], [f"{p}_acc"])
                n("Cast", [f"{p}_acc"], [f"{p}_accf"], to=TensorProto.FLOAT)
                n("Mul", [f"{p}_accf", f"{p}_step"], [f"{p}_deq"])
        n("Mul", [f"{p}_deq", const(f"{p}_wscale", wscale.astype(np.float32))], [y])
    r.done(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return Path(dst)


def rewrite_fused(raw, dst, maxima: dict[str, np.ndarray], *, alpha: float = ALPHA,
                  asymmetric: re.Pattern | None = ASYMMETRIC, **kw) -> Path:
    """The served recipe's graph (export/int8_rows.py ``quantize_rows``: shared quantization
    of Q, K and V, ``MatMulIntegerToFloat``) for one alpha and zero-point choice; ``kw``:
    ``blocked``, ``concat``."""
    import onnx

    from export.int8_rows import quantize_rows

    onnx.save(quantize_rows(onnx.load(str(raw)), maxima, alpha=alpha, asymmetric=asymmetric, **kw),
              str(dst))
    return Path(dst)


def texts() -> dict[str, list[str]]:
    from benchmarks.datasets import LOADERS

    from export.sample import HELDOUT_TEXTS, SAMPLE_TEXTS

    bbc = LOADERS["bbc_news"]()
    return {"short": (list(SAMPLE_TEXTS) + list(HELDOUT_TEXTS))[:64],
            "bbc400": [t[:400] for t in bbc.texts[:64]]}


def rate(enc, rows: list, batch: int, seconds: float = 2.0) -> float:
    """Rows/s of ``embed_prepared`` on ``batch``-row slices of ``rows`` for ~``seconds``."""
    n, t0, i = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        chunk = [rows[(i + k) % len(rows)] for k in range(batch)]
        enc.embed_prepared(chunk)
        n, i = n + batch, i + batch
    return n / (time.perf_counter() - t0)


def sweep(enc, raw, maxima, work: Path) -> None:
    """Drift of the fused graph for SmoothQuant alphas, with and without the FFN output's
    zero point, on the calibration texts (where a choice may be made) and on ``auto``'s gate
    sample (which only judges it)."""
    from export.runtimes.auto import _drift, fixed_sample
    from export.runtimes.ort import OnnxEncoder
    from export.calibration import calibration_texts

    sets = {"calibration": calibration_texts(), "gate": fixed_sample()}
    refs = {k: enc.embed(t).numpy() for k, t in sets.items()}
    print("\n| alpha | FFN output | calibration: mean drift, min cos | gate: mean drift, min cos |")
    print("|---|---|---|---|")
    for alpha in (0.4, 0.5, 0.6, 0.7):
        for asym in ASYM_CHOICES:
            path = rewrite_fused(raw, work / f"sweep-{alpha}-{ASYM_CHOICES.index(asym)}.onnx", maxima, alpha=alpha,
                                 asymmetric=asym)
            e = OnnxEncoder(enc, path, ("CPUExecutionProvider",), 2, quantize="int8")
            cells = []
            for k, t in sets.items():
                mc, md = _drift(refs[k], np.asarray(e.embed(t), np.float32))
                cells.append(f"{md:.2e}, {mc:.4f}")
            print(f"| {alpha} | {'every input' if asym is None else 'none' if asym is NONE else asym.pattern} | " + " | ".join(cells) + " |",
                  flush=True)


SITES = {"qkv": r"/(query|key|value)/", "attn-out": r"/attention/output/dense/",
         "ffn-up": r"/intermediate/dense/", "ffn-down": r"/layer\.\d+/output/dense/"}


def sites(enc, raw, maxima, work: Path) -> None:
    """Drift of the served graph (alpha 0.5) for every subset of a layer's four quantized
    inputs given a zero point (the others symmetric: fewer passes after the GEMM)."""
    from itertools import combinations

    from export.calibration import calibration_texts
    from export.runtimes.auto import _drift, fixed_sample
    from export.runtimes.ort import OnnxEncoder

    sets = {"calibration": calibration_texts(), "gate": fixed_sample()}
    refs = {k: enc.embed(t).numpy() for k, t in sets.items()}
    print("\n| zero point on | calibration: mean drift, min cos | gate: mean drift, min cos |")
    print("|---|---|---|")
    for r in range(len(SITES) + 1):
        for chosen in combinations(SITES, r):
            pattern = re.compile("|".join(SITES[c] for c in chosen) or r"(?!)")
            path = rewrite_fused(raw, work / f"sites-{'-'.join(chosen) or 'none'}.onnx", maxima,
                                 alpha=ALPHA, asymmetric=pattern)
            e = OnnxEncoder(enc, path, ("CPUExecutionProvider",), 2, quantize="int8")
            cells = []
            for k, t in sets.items():
                mc, md = _drift(refs[k], np.asarray(e.embed(t), np.float32))
                cells.append(f"{md:.2e}, {mc:.4f}")
            print(f"| {', '.join(chosen) or 'none'} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    import torch

    from adapters.encoders import open_encoder
    from export.graph import example_inputs, export_onnx
    from export.int8_rows import calibrate
    from export.onnx_config import SENTENCE_ENCODER
    from export.runtimes import invariance
    from export.runtimes.auto import _drift, fixed_sample
    from export.runtimes.ort import OnnxEncoder, cached_graphs
    from export.calibration import calibration_texts, row_feeds, weight_matmuls

    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--sweep", action="store_true",
                    help="accuracy only: SmoothQuant's alpha x FFN-output zero point, fused graph")
    ap.add_argument("--sites", action="store_true",
                    help="accuracy only: which of a layer's four inputs get a zero point (alpha 0.5)")
    ap.add_argument("--cache", type=Path, default=Path("benchmarks/.cache/ort_int8_rows"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    enc = open_encoder()
    a.cache.mkdir(parents=True, exist_ok=True)
    fp32_path, _ = cached_graphs(enc, a.cache, lora=False)
    work = Path(tempfile.mkdtemp(dir=a.cache))
    raw = export_onnx(enc.graph_module(enc.fresh_model()), SENTENCE_ENCODER, work / "raw.onnx",
                      example_inputs(enc))
    import onnx

    names = weight_matmuls(onnx.load(str(raw)))
    t0 = time.perf_counter()
    maxima = calibrate(onnx.load(str(raw)), row_feeds(enc, calibration_texts(), SENTENCE_ENCODER.inputs),
                       names)
    print(f"{len(names)} weight MatMuls calibrated in {time.perf_counter() - t0:.1f} s")
    if a.sweep:
        sweep(enc, raw, maxima, work)
        return
    if a.sites:
        sites(enc, raw, maxima, work)
        return
    v1 = dict(blocked=False, concat=False)
    graphs = {"onnx fp32 (served)": fp32_path,
              "onnx int8 rows (u8s8)": rewrite(raw, work / "rows_u8.onnx", maxima, u8=True),
              "fused, zero point on the FFN output only": rewrite_fused(
                  raw, work / "rows_fused.onnx", maxima, **v1),
              "fused, a zero point on every input": rewrite_fused(
                  raw, work / "rows_fasym.onnx", maxima, asymmetric=EVERY, **v1),
              "+ Q, K, V as one GEMM": rewrite_fused(
                  raw, work / "rows_concat.onnx", maxima, asymmetric=EVERY, blocked=False, concat=True),
              "+ one blocked QuantizeLinear per input, Q, K, V apart": rewrite_fused(
                  raw, work / "rows_blocked.onnx", maxima, asymmetric=EVERY, concat=False),
              "+ blocked QuantizeLinear and Q, K, V as one GEMM (served)": rewrite_fused(
                  raw, work / "rows_served.onnx", maxima, asymmetric=EVERY)}
    encs = {k: OnnxEncoder(enc, p, ("CPUExecutionProvider",), a.threads, quantize="int8")
            for k, p in graphs.items()}
    sample = fixed_sample()
    ref = enc.embed(sample).numpy()
    print("\n| graph | mean drift | min cosine | gate (<= 1e-3, >= 0.995) | alone vs mixed max diff |")
    print("|---|---:|---:|---|---:|")
    for k, e in encs.items():
        mc, md = _drift(ref, np.asarray(e.embed(sample), np.float32))
        inv = invariance.check(e, sample)
        print(f"| {k} | {md:.1e} | {mc:.4f} | {'pass' if mc >= 0.995 and md <= 1e-3 else 'FAIL'} "
              f"| {inv.max_diff:.1e} |", flush=True)
    sets = texts()
    prepared = {s: encs["onnx fp32 (served)"].prepare(t) for s, t in sets.items()}
    cells = [(s, b) for s in sets for b in (1, 32)]
    got: dict[tuple[str, str, int], list[float]] = {}
    for turn in range(a.turns):
        for k, e in encs.items():
            for s, b in cells:
                got.setdefault((k, s, b), []).append(rate(e, prepared[s], b))
        print(f"turn {turn + 1}/{a.turns} done", flush=True)
    print(f"\nrows/s, median of {a.turns} interleaved turns, {a.threads} threads "
          "(ratio vs onnx fp32 served)\n")
    print("| graph | " + " | ".join(f"{s} b{b}" for s, b in cells) + " |")
    print("|---|" + "---:|" * len(cells))
    base = {c: statistics.median(got[("onnx fp32 (served)",) + c]) for c in cells}
    for k in encs:
        row = []
        for c in cells:
            m = statistics.median(got[(k,) + c])
            row.append(f"{m:.1f} ({m / base[c]:.2f}x)")
        print(f"| {k} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
