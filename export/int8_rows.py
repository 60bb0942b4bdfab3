"""A batch-invariant int8 backbone as ONE onnxruntime graph: the maths of
``adapters/encoders/int8_rows.py`` (one activation scale per token, SmoothQuant, exact int32
GEMMs), with onnxruntime's kernels doing the elementwise passes that made the PyTorch copy
slow (issue 20; research and numbers: benchmarks/research/ort_int8_rows.py, RESULTS.md "int8
rows in onnxruntime").

Built from the plain fp32 export (export/graph.py; a fresh copy of the backbone, nothing
served is touched). Every weight MatMul of the encoder (``calibration.weight_matmuls``)
becomes:

    x -> Mul(1/s)                          SmoothQuant, s per input channel (a = 0.5)
      -> lo, hi = ReduceMin/ReduceMax      per token (0 included): a row's scale never
                                           sees another row
      -> step = (hi - lo) / 255, zp = round(-lo / step)
      -> QuantizeLinear(x, step, zp)       uint8, a scale and zero point per token (ONNX
                                           opset 21 block quantization; the graph is
                                           converted to opset 21), round half to even
      -> MatMulIntegerToFloat(q, Wq)       com.microsoft: int32 sums (exact), times the
                                           per-output-channel weight scales, in one kernel
      -> * step - zp * step * colsum(W)    the token's scale and zero point back

MatMuls that read the same tensor (a layer's Q, K and V) share one smoothing (from the
largest of their weights per input channel) and one quantization. Everything else (LayerNorm,
GELU, attention's softmax, the pooling) stays fp32 and row-wise, so a text's embedding does
not depend on what shares its batch: admission measures 6e-8 (fp32 itself: 4.5e-8).

Chosen on the calibration texts (export/sample.py's 102 held-out texts, one text per run),
judged on ``auto``'s own gate sample, which chose nothing: alpha 0.4-0.7 x zero point on the
FFN output only, on none, or on every input; every input with alpha 0.5 had the lowest
calibration drift (6.6e-4) and passes the gate (mean drift 7.6e-4, min cosine 0.9967). In
process, 2 threads, against the served onnx fp32 graph: 1.19x / 1.85x rows/s on short texts
at batch 1 / 32, 1.38x / 1.71x on BBC texts cut to 400 characters; over HTTP, as the default,
1.35-1.42x onnx fp32 at c=64 and 1.0-1.2x at c=1 on those BBC texts.

An ``auto`` candidate (export/runtimes/ort.py serves it; ``TAILOR_RUNTIME=onnx-int8-rows``
forces it). CPU only: ``MatMulIntegerToFloat`` is an onnxruntime CPU kernel. Three graphs
come from one calibration:
- ``build``: the plain graph, and its LoRA-routed twin (export/lora_graph.py's routed export
  quantized with the plain graph's very maxima, ``transfer``: LoRA's low-rank path stays fp32
  beside the int8 GEMMs, and a bare row answers alike in both);
- ``bundle_graph``: an adapter's classifier as this runtime serves it (an export with
  ``quantize`` ``int8-rows``), checked against the served graphs' answers.

Why not onnxruntime's own quantizers: ``quantize_dynamic`` takes one activation scale per
batch (not batch-invariant: export/quantize.py), and ``quantize_static`` fixed per-tensor
ranges (export/static_int8.py: min cosine 0.79 with every MatMul int8). Neither has a scale
per token; the graph here is written directly.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

NAME = "onnx-int8-rows"
ALPHA = 0.5  # SmoothQuant's migration strength
EPS = 1e-12
EXPORT_MODE = "int8-rows"  # an adapter's export as this runtime serves it (export/bundle.py)
# v3 (stop 31): the same answers bit for bit as v2 in 48 fewer nodes (no Clip of the zero
# point, the zero point's sign in the column sums); a new graph all the same, so a new name
RECIPE = f"int8-rows-v3-alpha{ALPHA}-zero-point-every-input-blocked-qkv-concat"


def calibrate(model: Any, feeds: Sequence[dict[str, np.ndarray]], names: Sequence[str]
              ) -> dict[str, np.ndarray]:
    """Per MatMul node in ``names``: the largest |input| per input channel over ``feeds``
    (one unpadded text each), read by running ``model`` (an fp32 ModelProto) with those
    inputs added as outputs."""
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = {n.name: n for n in model.graph.node}
    inputs = {name: nodes[name].input[0] for name in names}
    for t in dict.fromkeys(inputs.values()):
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    seen: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, val in zip(outs, sess.run(outs, feed)):
            if name in inputs.values():
                a = np.abs(val).reshape(-1, val.shape[-1]).max(0)
                seen[name] = np.maximum(seen[name], a) if name in seen else a
    return {n: seen[t] for n, t in inputs.items()}


def smoothing(act_max: np.ndarray, weights: Sequence[np.ndarray], alpha: float = ALPHA) -> np.ndarray:
    """SmoothQuant's per-input-channel factor s = max|X|^a / max|W|^(1-a) for MatMuls that read
    the same input: activations are divided by s, weight rows multiplied by it. ``weights``:
    each [in, out]; their largest |weight| per input channel counts."""
    wmax = np.max([np.abs(w).max(1) for w in weights], axis=0)
    return np.clip(np.clip(act_max, 1e-5, None) ** alpha
                   / np.clip(wmax, 1e-5, None) ** (1 - alpha), 1e-5, None)


def int8_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[in, out] -> (symmetric int8 weights, one scale per output channel)."""
    wscale = np.clip(np.abs(w).max(0), EPS, None) / 127.0
    return np.clip(np.round(w / wscale), -127, 127).astype(np.int8), wscale


def replace_nodes(model: Any, nodes: list, initializers: list) -> Any:
    """``model`` with its graph's nodes replaced by ``nodes``; initializers no node reads
    any more are dropped and ``initializers`` added."""
    g = model.graph
    del g.node[:]
    g.node.extend(nodes)
    used = {i for nd in nodes for i in nd.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + initializers)
    return model


class Rewrite:
    """The new nodes and initializers of a graph being rewritten (``quantize_rows``, and the
    research variants of benchmarks/research/ort_int8_rows.py). ``done`` puts them in place of
    the model's (``replace_nodes``)."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []

    def targets(self, nodes: Any, names: Any) -> Any:
        """The nodes named in ``names``, in graph order, to rewrite; every other node is kept
        as it is."""
        for node in nodes:
            if node.name in names:
                yield node
            else:
                self.nodes.append(node)

    def const(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(self, prefix: str, op: str, ins: list[str], out: str | list[str], **kw: Any) -> None:
        """A node named ``<prefix>/<its first output>``; ``kw``: its attributes (and
        ``domain``)."""
        from onnx import helper

        outs = [out] if isinstance(out, str) else out
        self.nodes.append(helper.make_node(op, ins, outs, name=f"{prefix}/{outs[0]}", **kw))

    def done(self, model: Any) -> Any:
        return replace_nodes(model, self.nodes, self.inits)


def quantize_rows(model: Any, maxima: dict[str, np.ndarray], *, alpha: float = ALPHA,
                  asymmetric: re.Pattern | None = None, blocked: bool = True,
                  concat: bool = True) -> Any:
    """``model`` (fp32 ModelProto) with every MatMul in ``maxima`` as a per-token int8 GEMM
    (module docstring); returns a new ModelProto.

    ``asymmetric``: the MatMuls (by the name of the first of those that share an input)
    quantized with a per-token zero point; None: all of them; the others are symmetric.
    ``blocked``: one ``QuantizeLinear`` with a scale and zero point per token (ONNX opset 21's
    block quantization; the graph is converted to opset 21) instead of subtracting and dividing
    first (1 pass over the activations instead of 3; symmetric inputs get a zero point of 128
    per token). ``concat``: MatMuls that share an input run as one GEMM on their concatenated
    weights, then Split.
    benchmarks/research/ort_int8_rows.py compares them."""
    import onnx
    from onnx import helper, numpy_helper, version_converter

    model = onnx.ModelProto.FromString(model.SerializeToString())
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if blocked and opset < 21:
        model = version_converter.convert_version(model, 21)
        opset = 21
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    by_input: dict[str, list] = {}
    for node in g.node:
        if node.name in maxima:
            by_input.setdefault(node.input[0], []).append(node)
    first = {nodes[0].name: x for x, nodes in by_input.items()}
    r = Rewrite()
    const = r.const
    for node in r.targets(g.node, maxima):
        if node.name not in first:
            continue  # emitted with the first MatMul that reads the same tensor
        x = first[node.name]
        group = by_input[x]
        p = node.name.strip("/").replace("/", "_")

        def n(op: str, ins: list[str], out: str | list[str], domain: str = "", **kw: Any) -> None:
            r.node(p, op, ins, out, domain=domain, **kw)

        def reduce(op: str, src: str, out: str) -> None:
            if opset >= 18:
                n(op, [src, const(f"{out}_axes", np.array([-1], np.int64))], out, keepdims=1)
            else:
                n(op, [src], out, axes=[-1], keepdims=1)

        ws = [numpy_helper.to_array(inits[m.input[1]]).astype(np.float64) for m in group]  # [in, out]
        s = smoothing(maxima[node.name], ws, alpha)
        n("Mul", [x, const(f"{p}_smooth", (1.0 / s).astype(np.float32))], f"{p}_xs")
        asym = asymmetric is None or bool(asymmetric.search(node.name))
        reduce("ReduceMax", f"{p}_xs", f"{p}_hi")
        reduce("ReduceMin", f"{p}_xs", f"{p}_lo")
        eps = const(f"{p}_eps", np.array(EPS, np.float32))
        zterm = None  # [rows, 1]: what times the weights' column sums the zero point adds back
        if asym and blocked:
            zero = const(f"{p}_zero", np.array(0.0, np.float32))
            n("Min", [f"{p}_lo", zero], f"{p}_lo0")  # the range holds 0, so the zero point fits uint8
            n("Max", [f"{p}_hi", zero], f"{p}_hi0")
            n("Sub", [f"{p}_hi0", f"{p}_lo0"], f"{p}_range")
            n("Max", [f"{p}_range", eps], f"{p}_range_eps")
            n("Mul", [f"{p}_range_eps", const(f"{p}_inv255", np.array(1 / 255, np.float32))], f"{p}_step")
            n("Div", [f"{p}_lo0", f"{p}_step"], f"{p}_lo_steps")
            n("Neg", [f"{p}_lo_steps"], f"{p}_zpf_raw")
            # no Clip: lo0 <= 0 <= hi0 and step >= (hi0 - lo0) / 255, so -lo0 / step is in
            # [0, 255] up to a rounding (< 255.5): the zero point fits uint8 as it is
            n("Round", [f"{p}_zpf_raw"], f"{p}_zpf")
            n("Cast", [f"{p}_zpf"], f"{p}_zpq", to=onnx.TensorProto.UINT8)
            # x / step + zero point per token, round half to even, saturate: one pass
            n("QuantizeLinear", [f"{p}_xs", f"{p}_step", f"{p}_zpq"], f"{p}_q", axis=-1,
              block_size=int(ws[0].shape[0]))
            n("Mul", [f"{p}_zpf", f"{p}_step"], f"{p}_zstep")  # zero point x step, [rows, 1]
            # its sign goes into the column sums below (exact): one node less per input
            zterm, zp, zsign = f"{p}_zstep", np.array(0, np.uint8), -1.0
        elif asym:
            n("Sub", [f"{p}_hi", f"{p}_lo"], f"{p}_range")
            n("Max", [f"{p}_range", eps], f"{p}_range_eps")
            n("Mul", [f"{p}_range_eps", const(f"{p}_inv255", np.array(1 / 255, np.float32))], f"{p}_step")
            n("Sub", [f"{p}_xs", f"{p}_lo"], f"{p}_x0")
            n("Div", [f"{p}_x0", f"{p}_step"], f"{p}_xd")  # 0..255
            n("QuantizeLinear", [f"{p}_xd", const(f"{p}_unit", np.array(1.0, np.float32)),
                                 const(f"{p}_qzp", np.array(0, np.uint8))], f"{p}_q")
            zterm, zp, zsign = f"{p}_lo", np.array(0, np.uint8), 1.0
        else:
            n("Neg", [f"{p}_lo"], f"{p}_neg_lo")
            n("Max", [f"{p}_hi", f"{p}_neg_lo", eps], f"{p}_amax")
            n("Mul", [f"{p}_amax", const(f"{p}_inv127", np.array(1 / 127, np.float32))], f"{p}_step")
            if blocked:  # x / step + 128 per token in one pass; the zero point is the same for all
                n("Shape", [f"{p}_step"], f"{p}_step_shape")
                n("Expand", [const(f"{p}_zp128_1", np.array(128, np.uint8)), f"{p}_step_shape"],
                  f"{p}_zp128_rows")
                n("QuantizeLinear", [f"{p}_xs", f"{p}_step", f"{p}_zp128_rows"], f"{p}_q", axis=-1,
                  block_size=int(ws[0].shape[0]))
            else:
                n("Div", [f"{p}_xs", f"{p}_step"], f"{p}_xd")  # -127..127, shifted by 128
                n("QuantizeLinear", [f"{p}_xd", const(f"{p}_unit", np.array(1.0, np.float32)),
                                     const(f"{p}_qzp", np.array(128, np.uint8))], f"{p}_q")
            zp = np.array(128, np.uint8)  # MatMulIntegerToFloat takes the shift back
        one = const(f"{p}_one", np.array(1.0, np.float32))
        zpn = const(f"{p}_zp", zp)
        parts = []  # (output name, int8 weights, weight scales)
        for m, w in zip(group, ws):
            parts.append((m.output[0], *int8_weights(w * s[:, None])))
        if concat and len(parts) > 1:
            parts = [([o for o, _, _ in parts], np.concatenate([q for _, q, _ in parts], 1),
                      np.concatenate([c for _, _, c in parts]))]
        for k, (out, wq, wscale) in enumerate(parts):
            q = f"{p}_{k}"
            n("MatMulIntegerToFloat", [f"{p}_q", const(f"{q}_wq", wq), one,
                                       const(f"{q}_wscale", wscale.astype(np.float32)), zpn],
              f"{q}_acc", domain="com.microsoft")
            y = out if isinstance(out, str) else f"{q}_y"
            if zterm is not None:  # the token's zero point: zterm x the dequantized column sums
                n("Mul", [f"{q}_acc", f"{p}_step"], f"{q}_main")
                colsum = (zsign * wq.astype(np.float64).sum(0) * wscale).astype(np.float32)
                n("Mul", [zterm, const(f"{q}_colsum", colsum)], f"{q}_zterm")
                n("Add", [f"{q}_main", f"{q}_zterm"], y)
            else:
                n("Mul", [f"{q}_acc", f"{p}_step"], y)
            if not isinstance(out, str):
                sizes = np.array([w.shape[1] for w in ws], np.int64)
                n("Split", [y, const(f"{q}_sizes", sizes)], out, axis=-1)  # opset >= 13
    r.done(model)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def weight_keys(model: Any) -> dict[str, str]:
    """Weight MatMul node name -> a hash of its weight: which MatMuls of two graphs of one
    backbone carry the same Linear (names differ between a plain export, a routed one and an
    adapter's bundle)."""
    from onnx import numpy_helper

    from .calibration import weight_matmuls

    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    return {name: hashlib.sha256(numpy_helper.to_array(inits[nodes[name].input[1]]).tobytes())
            .hexdigest() for name in weight_matmuls(model)}


def by_weight(maxima: dict[str, np.ndarray], model: Any) -> dict[str, np.ndarray]:
    """Calibration maxima of ``model``'s MatMuls keyed by their weights' hash (``weight_keys``)."""
    return {key: maxima[name] for name, key in weight_keys(model).items() if name in maxima}


def for_graph(keyed: dict[str, np.ndarray], dst: Any) -> dict[str, np.ndarray]:
    """Maxima keyed by weight (``by_weight``) as ``dst``'s MatMul names, so ``dst`` gets the
    very smoothing and int8 weights of the graph they were calibrated on (a head's MatMul
    matches nothing and stays fp32). Raises when a calibrated weight is not in ``dst``."""
    out = {name: keyed[key] for name, key in weight_keys(dst).items() if key in keyed}
    if len(out) != len(keyed):
        raise ValueError(f"{len(keyed)} calibrated MatMuls, {len(out)} found in the graph")
    return out


def transfer(maxima: dict[str, np.ndarray], src: Any, dst: Any) -> dict[str, np.ndarray]:
    """``src``'s calibration maxima as ``dst``'s MatMul names (``for_graph``)."""
    return for_graph(by_weight(maxima, src), dst)


def cache_path(cache_dir: str | Path, encoder: Any, lora: Sequence[str] | None = None) -> Path:
    """The cached graph: keyed by the backbone, the recipe and the calibration sample (opset
    21: ``quantize_rows`` converts the export to it for block quantization). ``lora``: the
    routed targets of the LoRA-routed twin (None: the plain graph)."""
    from .calibration import calibration_texts

    tag = hashlib.sha256(repr((RECIPE, calibration_texts())).encode()).hexdigest()[:8]
    if lora is not None:
        tag += "-lora-" + hashlib.sha256(",".join(lora).encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{encoder.identity.sha256}-int8rows-{tag}-op21.onnx"


def calibrated(encoder: Any, work: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """The plain fp32 export of the backbone (a fresh copy) and its calibration maxima: what
    every int8-rows graph of this backbone is quantized with (``transfer``)."""
    import onnx

    from .calibration import calibration_texts, row_feeds, weight_matmuls
    from .graph import example_inputs, export_onnx
    from .onnx_config import SENTENCE_ENCODER

    raw = onnx.load(str(export_onnx(encoder.graph_module(encoder.fresh_model()), SENTENCE_ENCODER,
                                    work / "raw.onnx", example_inputs(encoder))))
    return raw, calibrate(raw, row_feeds(encoder, calibration_texts(), SENTENCE_ENCODER.inputs),
                          weight_matmuls(raw))


def routed_export(encoder: Any, work: Path, targets: Sequence[str]) -> tuple[Any, Any]:
    """The plain fp32 export of the LoRA-routed backbone (export/lora_graph.py) and its module."""
    import onnx

    from .graph import export_onnx
    from .lora_graph import routed_module

    module, config, example = routed_module(encoder, targets)
    return onnx.load(str(export_onnx(module, config, work / "routed.onnx", example))), module


def bundle_graph(encoder: Any, adapter: Any, work: Path, cases: Sequence[Any], config: Any,
                 targets: Sequence[str] = ("query", "value")) -> tuple[Path, Any, Any]:
    """An adapter's classifier (tokens -> embedding -> head) as the int8-rows runtime serves
    it, in ``work``: the backbone's MatMuls quantized with the served graphs' very maxima and
    weights (``transfer``), a LoRA adapter's low-rank path fp32 beside them as in the routed
    graph (not merged into the weights: merged, it would be quantized differently), the head
    fp32.

    Checked on ``cases`` (export/parity.py) against the SERVED graphs as the service uses them
    (the plain graph for a head adapter, the routed graph with this adapter's tables for a
    LoRA one; then the head on PyTorch, as the engine applies it), within ``config.atol``
    (``ParityError`` otherwise); and compared with PyTorch fp32 (top-1 agreement, the drift),
    which is reported, not gated: the export answers what the service answers, and whether
    int8-rows is accurate enough to serve is the runtime's admission (auto's gate). Returns
    the graph's path, the parity report and the fp32 comparison. Raises ``InvalidRequest``
    for a LoRA adapter whose rows the service runs on PyTorch (it adapts Linears the routed
    graph does not route)."""
    import onnx
    import torch

    from adapters.errors import InvalidRequest

    from .graph import Classifier, example_inputs, export_onnx
    from .lora_graph import OneAdapter, lora_feed
    from .parity import ParityError, check_parity, torch_outputs
    from .session import create_session

    lora, head = adapter.lora, adapter.head
    # before seconds of work: the routed graph adapts Linears named like ``targets`` (and, of
    # those, what reaches the embedding: checked again below)
    unrouted = sorted(n for n in (lora.a if lora is not None else ())
                      if n.rsplit(".", 1)[-1] not in targets)
    if unrouted:
        raise InvalidRequest(
            f"this adapter adapts {unrouted}, which the int8-rows runtime does not route (only "
            f"{list(targets)}): its rows are served on PyTorch fp32, so export it with "
            '{"quantize": "none"} to reproduce the service')
    raw, maxima = calibrated(encoder, work)
    if lora is None:
        served, graph = quantize_rows(raw, maxima), None
        encoder_module = encoder.graph_module(encoder.fresh_model())
    else:
        routed, graph = routed_export(encoder, work, targets)
        if not set(lora.a) <= set(graph.targets):
            raise InvalidRequest(f"this adapter adapts {sorted(set(lora.a) - set(graph.targets))}, "
                                 "which does not reach the embedding; export it with "
                                 '{"quantize": "none"}')
        served = quantize_rows(routed, transfer(maxima, raw, routed))
        encoder_module = OneAdapter(graph, lora)
    module = Classifier(encoder_module, head).eval()
    bundle_raw = onnx.load(str(export_onnx(module, config, work / "bundle-raw.onnx",
                                           example_inputs(encoder))))
    path = work / "bundle-int8rows.onnx"
    onnx.save(quantize_rows(bundle_raw, transfer(maxima, raw, bundle_raw)), str(path))

    onnx.save(served, str(work / "served.onnx"))
    served_session = create_session(work / "served.onnx", ["CPUExecutionProvider"])
    references = []
    for _, feed in cases:
        rows = int(next(iter(feed.values())).shape[0])
        if graph is not None:
            feed = {**feed, **lora_feed([lora] * rows, graph.targets, graph.dims)}
        (emb,) = served_session.run(["sentence_embedding"], feed)
        x = torch.from_numpy(emb)
        references.append([head.probabilities(x).numpy(), head.logits(x).numpy()])
    session = create_session(path, ["CPUExecutionProvider"])
    report = check_parity(module, session, config, cases, EXPORT_MODE, references)
    fp32 = [torch_outputs(module, config, case) for case in cases]
    try:
        vs_fp32 = check_parity(module, session, config, cases, "int8", fp32)
    except ParityError as e:  # reported, not gated: the service answers the same
        vs_fp32 = e.report
    return path, report, vs_fp32


def build(encoder: Any, dest: Path, lora_dest: Path | None = None,
          targets: Sequence[str] = ("query", "value")) -> Path:
    """Export the backbone (a fresh copy), calibrate, rewrite, and move the graph into
    ``dest`` atomically (nothing is left behind on failure). ``lora_dest``: also the
    LoRA-routed twin (``targets`` routed), its base MatMuls quantized with the plain graph's
    very maxima (``transfer``): a bare row answers alike in both, and each row's low-rank
    path ``(x A^T) B^T`` stays fp32 on the unsmoothed input. The maxima are kept beside
    ``dest`` (``-maxima.npz``, keyed by weight), so the routed twin of a plain graph built
    earlier (auto measures candidates without their LoRA graphs) needs no second calibration.
    Accuracy and batch invariance are judged by the caller (export/runtimes/auto.py's
    admission, logged at first start)."""
    import onnx

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    maxima_file = dest.with_name(dest.name[:-len(".onnx")] + "-maxima.npz")
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        if dest.exists() and maxima_file.exists():  # auto measured the plain graph alone first
            with np.load(maxima_file) as f:
                keyed = {k: f[k] for k in f.files}
        else:
            raw, maxima = calibrated(encoder, work)
            keyed = by_weight(maxima, raw)
            onnx.save(quantize_rows(raw, maxima), str(work / "int8rows.onnx"))
            np.savez(work / "maxima.npz", **keyed)
            os.replace(work / "maxima.npz", maxima_file)
            os.replace(work / "int8rows.onnx", dest)
        if lora_dest is not None:
            routed, _ = routed_export(encoder, work, targets)
            onnx.save(quantize_rows(routed, for_graph(keyed, routed)),
                      str(work / "int8rows-lora.onnx"))
            os.replace(work / "int8rows-lora.onnx", lora_dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


__all__ = ["ALPHA", "EXPORT_MODE", "NAME", "RECIPE", "Rewrite", "build", "bundle_graph", "by_weight",
           "cache_path", "calibrate", "calibrated", "for_graph", "int8_weights", "quantize_rows",
           "replace_nodes", "routed_export", "smoothing", "transfer", "weight_keys"]
