"""Tailor's own BERT (adapters/encoders/bert.py) computes what transformers' ``BertModel``
computes, on the real backbone (all-MiniLM-L6-v2): padded batches, LoRA rows, the bf16 copy
with row attention and LoRA training's gradients; a folder it does not compute falls back to
``AutoModel``; and opening the default backbone imports no transformers at all (what makes
every worker's start-up ~2.5 CPU s cheaper)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from adapters.encoders import bert, row_attention
from adapters.encoders.lora import LoraSpec, LoraWeights, install_hooks, plan, routed
from tests.conftest import ROOT

TEXTS = ["What is the capital of France?", "", "naïve café déjà vu", "a\tb\nc",
         "The league table changed after the weekend's football games and the manager left",
         "word " * 600, "ok"]


@pytest.fixture(scope="module")
def hf(backbone):
    """transformers' BertModel on the same folder (what the export traces: fresh_model)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(backbone.model_dir, local_files_only=True).eval()
    model.requires_grad_(False)
    return model


def test_the_default_backbone_is_served_by_tailors_bert(backbone):
    assert isinstance(backbone.model, bert.BertEncoder) and backbone.native_why == ""
    assert bert.native(backbone.model_dir)
    names = {n for n, _ in backbone.model.named_modules()}
    assert {"encoder.layer.5.attention.self.query", "encoder.layer.0.output.LayerNorm",
            "embeddings.word_embeddings"} <= names  # BertModel's names: LoRA targets, int8, export


@pytest.mark.parametrize("texts", [TEXTS, TEXTS[:1], TEXTS[4:5] * 3], ids=["padded", "one", "unpadded"])
def test_forward_equals_bert_model(backbone, hf, texts):
    batch = backbone.collate(backbone.prepare(texts))
    with torch.inference_mode():
        ours, theirs = backbone.forward(batch, backbone.model), backbone.forward(batch, hf)
    assert float((ours - theirs).abs().max()) <= 2e-6


def test_lora_rows_and_gradients_equal_bert_model(backbone, hf):
    """Per-row LoRA routing (serving) and LoRA training's gradients go through the same named
    Linears in both models."""
    spec = LoraSpec(rank=4, alpha=8, targets=("query", "value"))
    w = LoraWeights.init(backbone.model, spec, seed=0, identity=False)
    rows = backbone.prepare(TEXTS[:5])
    order, routing = plan([w, None, w, None, w])
    batch = backbone.collate([rows[i] for i in order])
    outs = []
    for model in (backbone.model, hf):
        install_hooks(model, spec.targets)
        with torch.inference_mode(), routed(routing):
            outs.append(backbone.forward(batch, model))
    assert float((outs[0] - outs[1]).abs().max()) <= 2e-6

    grads = []
    for model in (backbone.model, hf):
        t = LoraWeights.init(backbone.model, spec, seed=1, identity=False)
        for p in t.parameters():
            p.requires_grad_(True)
        with routed(plan([t] * 3)[1]):
            backbone.forward(backbone.collate(rows[:3]), model).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in t.parameters()]))
    assert float((grads[0] - grads[1]).abs().max()) <= 1e-5


def test_bf16_row_attention_copy_is_close_to_bert_models(backbone, hf):
    ours = backbone.with_dtype("bfloat16", row_attention=True)
    assert ours._low.attn_implementation == row_attention.NAME
    theirs = hf.to(torch.bfloat16)
    try:
        bert.row_attention_on(theirs)
        batch = backbone.collate(backbone.prepare(TEXTS))
        with torch.inference_mode():
            a, b = backbone.forward(batch, ours._low), backbone.forward(batch, theirs)
        assert float(torch.nn.functional.cosine_similarity(a, b).min()) > 0.999
    finally:
        hf.float()
        hf.set_attn_implementation("sdpa")


def test_an_unknown_attention_is_refused(backbone):
    with pytest.raises(ValueError, match="sdpa"):
        backbone.model.set_attn_implementation("flash")
    assert backbone.model.attn_implementation == bert.SDPA


def test_the_export_copy_traces_to_bert_models_fused_graph(backbone, tmp_path):
    """The export traces Tailor's BERT in eager mode (``fresh_model``): its raw graph names
    every node as ``BertModel``'s does (int8's fp32 node list and the head's ``keep_fp32``
    go by name), onnxruntime's optimizer fuses it into the same graph, op for op and with
    the same weight shapes, and it answers what ``BertModel`` answers."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from transformers import AutoModel

    from adapters.encoders.text import SentenceGraph
    from export.graph import example_inputs, export_onnx, fuse_transformer
    from export.onnx_config import SENTENCE_ENCODER

    model = backbone.fresh_model()
    assert isinstance(model, bert.BertEncoder) and model.attn_implementation == bert.EAGER
    assert model is not backbone.model and backbone.model.attn_implementation == bert.SDPA
    theirs = AutoModel.from_pretrained(backbone.model_dir, local_files_only=True).eval()
    theirs.set_attn_implementation("eager")  # what exports traced before
    graphs = {}
    for name, m in (("ours", model), ("theirs", theirs)):
        raw = export_onnx(SentenceGraph(m), SENTENCE_ENCODER, tmp_path / f"{name}.onnx",
                          example_inputs(backbone))
        matmuls = sorted(n.name for n in onnx.load(str(raw)).graph.node if n.op_type == "MatMul")
        fused = onnx.load(str(fuse_transformer(raw, tmp_path / f"{name}-fused.onnx", m.config)))
        graphs[name] = (matmuls, [n.op_type for n in fused.graph.node],
                        sorted(tuple(i.dims) for i in fused.graph.initializer),
                        ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"]))
    (m1, ops1, w1, s1), (m2, ops2, w2, s2) = graphs["ours"], graphs["theirs"]
    assert m1 == m2 and "/model/encoder/layer.0/intermediate/dense/MatMul" in m1
    assert ops1 == ops2 and ops1.count("Attention") == backbone.model.config.num_hidden_layers
    assert "EmbedLayerNormalization" in ops1 and w1 == w2
    feed = backbone.collate_np(backbone.prepare(TEXTS))
    a, b = s1.run(None, feed)[0], s2.run(None, feed)[0]
    assert float(np.abs(a - b).max()) <= 1e-6
    # and the eager PyTorch forward equals the served one
    batch = backbone.collate(backbone.prepare(TEXTS))
    with torch.inference_mode():
        diff = backbone.forward(batch, model) - backbone.forward(batch, backbone.model)
    assert float(diff.abs().max()) <= 2e-6


@pytest.fixture
def tiny_bert(tmp_path):
    """A tiny randomly initialised BERT folder with the default backbone's tokenizer files."""
    import transformers as T

    from adapters.encoders.text import default_model_path

    cfg = T.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64)
    T.BertModel(cfg).save_pretrained(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (tmp_path / f).write_bytes((default_model_path() / f).read_bytes())
    return tmp_path


@pytest.mark.parametrize("change", [{"hidden_act": "gelu_new"}, {"position_embedding_type": "relative_key"},
                                    {"model_type": "roberta"}])
def test_a_model_it_does_not_compute_falls_back_to_auto_model(tiny_bert, change):
    """A plain tiny BERT is served by bert.py; with one field changed, bert.py says why and
    TextEncoder loads it through AutoModel."""
    from adapters.encoders.text import TextEncoder

    assert bert.native(tiny_bert) and isinstance(TextEncoder(tiny_bert).model, bert.BertEncoder)
    data = json.loads((tiny_bert / "config.json").read_text())
    (tiny_bert / "config.json").write_text(json.dumps({**data, **change}))
    assert next(iter(change)) in bert.why_not(tiny_bert)  # the reason names the field
    assert not bert.native(tiny_bert)
    if "model_type" in change:
        return  # BERT weights under a roberta config load nowhere sensibly: the refusal is the point
    enc = TextEncoder(tiny_bert)
    assert not isinstance(enc.model, bert.BertEncoder) and enc.native_why
    assert enc.embed(TEXTS[:3]).shape == (3, 32)


def test_a_tokenizer_it_does_not_read_falls_back_to_auto_tokenizer(tiny_bert):
    """No tokenizer_class in tokenizer_config.json: AutoTokenizer reads the folder (and the
    fork server preloads transformers for its jobs); the ids are the same."""
    from adapters.encoders.text import TextEncoder

    ours = TextEncoder(tiny_bert)
    cfg = json.loads((tiny_bert / "tokenizer_config.json").read_text())
    cfg.pop("tokenizer_class")
    (tiny_bert / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert bert.load_tokenizer(tiny_bert) is None and not bert.native(tiny_bert)
    theirs = TextEncoder(tiny_bert)
    assert ours.tokenizer.name == "BertTokenizer" and theirs.tokenizer.name != ""
    assert theirs.prepare(TEXTS) == ours.prepare(TEXTS)
    assert isinstance(theirs.model, bert.BertEncoder)  # the model is still ours

    from adapters.training.worker import PRELOAD, TRANSFORMERS, preload

    assert preload(None) == PRELOAD and preload(str(tiny_bert)) == TRANSFORMERS + PRELOAD


def test_opening_the_default_backbone_and_exporting_it_import_no_transformers():
    """The serving worker, the training fork server and auto's measuring child open it;
    exports (bundles, the onnxruntime runtime's graphs) trace its fresh copy."""
    code = ("import sys, tempfile, pathlib; from adapters import open_encoder; "
            "from adapters.encoders.text import SentenceGraph; "
            "from export.graph import example_inputs, export_onnx, fuse_transformer; "
            "from export.onnx_config import SENTENCE_ENCODER; "
            "e = open_encoder(); e.warm_up(); m = e.fresh_model(); d = pathlib.Path(tempfile.mkdtemp()); "
            "raw = export_onnx(SentenceGraph(m), SENTENCE_ENCODER, d / 'raw.onnx', example_inputs(e)); "
            "fuse_transformer(raw, d / 'fused.onnx', m.config); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
