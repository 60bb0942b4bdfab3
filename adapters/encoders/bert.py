"""A BERT encoder of Tailor's own for the text backbone's forwards: the same maths and the
same parameter names as ``transformers``' ``BertModel``, loaded straight from the folder's
``model.safetensors`` and ``tokenizer.json``.

Why not ``AutoModel``: every process that opens the text backbone (the serving worker, the
training fork server, ``auto``'s measuring child) paid for ``transformers``' import of its
modelling code, which pulls in ``torch.distributed.tensor``, ``torch._dynamo`` and
``scipy.optimize``, and ``AutoTokenizer`` ~1 CPU s more. Measured here (2-core EPYC, torch
2.13, transformers 5.25; benchmarks/RESULTS.md "The text backbone without transformers"): a
``bentoml serve`` start to ready 9.0 -> 4.4 s and 8.6 -> 3.7 CPU s, the worker 622 -> 500 MiB,
a CI run 212 CPU s less; its forward of one short text 11.7 -> 10.0 ms (``BertModel``'s mask
building, output classes and pooler), the same at 32 rows.
What it computes is pinned to ``BertModel``'s output by tests/unit/adapters/test_bert.py
(padded batches, LoRA rows and gradients, bf16; bitwise equal here, tested to 2e-6).

What it leaves to ``transformers``: anything that is not a plain absolute-position BERT
(``load`` answers None and the caller uses ``AutoModel``). The ONNX export traces this module
too, in eager attention (``TextEncoder.fresh_model``): its modules, their names and their ops
are ``BertModel``'s, so the traced graph names every node as ``BertModel``'s does and
onnxruntime's BERT fusions turn it into the same fused graph (tested node for node), and an
export no longer imports ``transformers``' modelling code (~3 CPU s a process). Parameter
names are ``BertModel``'s (``encoder.layer.N.attention.self.query`` ...): LoRA targets, int8
replacement and the export's weight copies find the same modules. No dropout and no pooler:
the backbone is frozen and always in ``eval()``, and Tailor pools the last hidden state itself.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import row_attention

SDPA = "sdpa"  # the default attention (``set_attn_implementation``)
EAGER = "eager"  # plain MatMul/Softmax: what the ONNX export traces
# an attention function: (SelfAttention, q, k, v, mask, scaling) -> ([batch, seq, heads, dim], None)
Attend = Callable[..., tuple[torch.Tensor, None]]


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT ``config.json`` this module reads, with ``transformers``'
    ``BertConfig`` defaults for a field the file leaves out."""
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    model_type: str = "bert"

    @classmethod
    def read(cls, cfg: dict) -> "BertConfig":
        return cls(**{f: cfg[f] for f in cls.__dataclass_fields__ if cfg.get(f) is not None})


@dataclass(frozen=True)
class EncoderOutput:
    """What ``transformers`` models return, as far as Tailor reads it."""
    last_hidden_state: torch.Tensor


def supported(cfg: dict) -> str | None:
    """None when ``cfg`` (a parsed config.json) is a BERT this module computes exactly as
    ``BertModel`` does; else why not (the caller falls back to ``AutoModel``)."""
    if cfg.get("model_type") != "bert":
        return f"model_type {cfg.get('model_type')!r} is not 'bert'"
    if cfg.get("hidden_act", "gelu") != "gelu":
        return f"hidden_act {cfg.get('hidden_act')!r} (only exact 'gelu')"
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type {cfg.get('position_embedding_type')!r}"
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        return "a decoder"
    c = BertConfig.read(cfg)
    if c.hidden_size % c.num_attention_heads:
        return "hidden_size is not a multiple of num_attention_heads"
    return None


class SelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads, self.head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        self.scaling = self.head_dim ** -0.5
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None, attend: Attend) -> torch.Tensor:
        batch, seq, _ = h.shape
        shape = (batch, seq, self.heads, self.head_dim)
        q = self.query(h).view(shape).transpose(1, 2)
        k = self.key(h).view(shape).transpose(1, 2)
        v = self.value(h).view(shape).transpose(1, 2)
        return attend(self, q, k, v, mask, self.scaling)[0].reshape(batch, seq, -1).contiguous()


class Output(nn.Module):
    """dense -> LayerNorm(residual + .): ``BertSelfOutput`` and ``BertOutput``."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class Attention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = SelfAttention(c)
        self.output = Output(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None, attend: Attend) -> torch.Tensor:
        return self.output(self.self(h, mask, attend), h)


class Intermediate(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(h))


class Layer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = Output(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None, attend: Attend) -> torch.Tensor:
        h = self.attention(h, mask, attend)
        return self.output(self.intermediate(h), h)


class Embeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        # a slice of this table, as BertEmbeddings takes it: traced, it is the pattern
        # onnxruntime's EmbedLayerNormalization fusion looks for (an arange is not)
        self.register_buffer("position_ids", torch.arange(c.max_position_embeddings)[None],
                             persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, :input_ids.shape[1]]
        # the order of BertEmbeddings' sums (float addition is not associative)
        h = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(h + self.position_embeddings(positions))


class Encoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None, attend: Attend) -> torch.Tensor:
        for layer in self.layer:
            h = layer(h, mask, attend)
        return h


def _sdpa(module, q, k, v, mask, scaling) -> tuple[torch.Tensor, None]:
    """[batch, heads, seq, dim] -> ([batch, seq, heads, dim], None), as transformers'
    attention functions (row_attention.py too); ``mask`` boolean (True: attend)
    [batch, 1, seq, seq] or None: what ``transformers``' SDPA attention does."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling).transpose(1, 2), None


def _eager(module, q, k, v, mask, scaling) -> tuple[torch.Tensor, None]:
    """Attention as plain MatMul/Softmax, for the ONNX export (``TextEncoder.fresh_model``):
    traced, onnxruntime's transformer optimizer fuses it into its Attention op, as it does
    ``BertModel``'s graph (the same fused graph, node for node). ``mask`` is BERT's additive
    float mask [batch, 1, 1, seq] (0 where attended), always given. The scores are divided by
    sqrt(head_dim), not multiplied by ``scaling``: two Mul parents of the mask's Add would
    make the optimizer match the scores' Mul as the mask and fuse nothing."""
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(module.head_dim) + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2), None


ATTENTION = {SDPA: _sdpa, EAGER: _eager, row_attention.NAME: row_attention.row_attention}


class BertEncoder(nn.Module):
    """``BertModel`` without pooler and dropout: ``forward(input_ids, attention_mask,
    token_type_ids)`` -> ``EncoderOutput(last_hidden_state)``."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self._attn_name, self._attn = SDPA, _sdpa

    def set_attn_implementation(self, name: str) -> None:
        """"sdpa" (the default), "eager" (what the ONNX export traces) or row_attention.NAME
        (row by row on each row's real tokens)."""
        if name not in ATTENTION:
            raise ValueError(f"attention implementation must be one of {', '.join(ATTENTION)}, "
                             f"got {name!r}")
        self._attn_name, self._attn = name, ATTENTION[name]

    @property
    def attn_implementation(self) -> str:
        return self._attn_name

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> EncoderOutput:
        batch, seq = input_ids.shape
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = self.embeddings(input_ids, token_type_ids)
        if self._attn_name == EAGER:  # BERT's additive mask, always (the traced graph's)
            keep = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            mask = (1.0 - keep[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        elif attention_mask is not None and not bool(attention_mask.all()):
            # transformers' bidirectional mask, boolean [batch, 1, query, key]
            mask = attention_mask.bool()[:, None, None, :].expand(batch, 1, seq, seq)
        else:  # no row padded: SDPA takes its unmasked path
            mask = None
        return EncoderOutput(self.encoder(h, mask, self._attn))


def row_attention_on(model: nn.Module) -> None:
    """Make ``model`` (a ``BertEncoder`` or a transformers model) attend row by row on each
    row's real tokens (row_attention.py)."""
    model.set_attn_implementation(row_attention.NAME if isinstance(model, BertEncoder)
                                  else row_attention.register())


def why_not(model_dir: Path, cfg: dict | None = None) -> str | None:
    """None when this module serves the folder's model (a plain BERT in model.safetensors);
    else why not, and ``TextEncoder`` loads it with ``AutoModel``. ``cfg``: the folder's
    config.json when the caller has read it already."""
    if not (model_dir / "model.safetensors").exists():
        return "no model.safetensors"
    return supported(cfg if cfg is not None else json.loads((model_dir / "config.json").read_text()))


def native(model_dir: Path) -> bool:
    """Does ``TextEncoder`` open this folder without ``transformers`` (model and tokenizer)?"""
    return why_not(model_dir) is None and _tokenizer_config(model_dir) is not None


def load(model_dir: Path) -> tuple[BertEncoder | None, str]:
    """The folder's BERT as a ``BertEncoder`` in ``eval()`` with frozen weights, or
    (None, why) when this module does not compute that model (the caller uses ``AutoModel``)."""
    from safetensors.torch import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    why = why_not(model_dir, cfg)
    if why:
        return None, why
    model = BertEncoder(BertConfig.read(cfg))
    state = load_file(str(model_dir / "model.safetensors"))
    prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items()
             if not k.startswith("pooler.") and not k.endswith("position_ids")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:  # another layout of BERT: leave it to transformers
        return None, (f"weights do not match BertModel's names (missing {missing[:3]}, "
                      f"unexpected {unexpected[:3]})")
    model.eval()
    model.requires_grad_(False)
    return model, ""


@dataclass(frozen=True)
class TokenizerFiles:
    """What ``TextEncoder`` reads of a tokenizer, from tokenizer.json and
    tokenizer_config.json alone (what ``AutoTokenizer`` would give a BERT tokenizer)."""
    backend: object  # tokenizers.Tokenizer
    name: str
    pad_token: str
    pad_token_id: int
    padding_side: str
    model_max_length: int | None
    token_type_ids: bool

    def to_str(self) -> str:
        return self.backend.to_str()


def _tokenizer_config(model_dir: Path) -> dict | None:
    """tokenizer_config.json where tokenizer.json beside it is a BERT tokenizer's, else None."""
    path, cfg_path = model_dir / "tokenizer.json", model_dir / "tokenizer_config.json"
    if not path.exists() or not cfg_path.exists():
        return None
    cfg = json.loads(cfg_path.read_text())
    return cfg if str(cfg.get("tokenizer_class") or "").removesuffix("Fast") == "BertTokenizer" else None


def load_tokenizer(model_dir: Path) -> TokenizerFiles | None:
    """The folder's BERT tokenizer without ``transformers``, or None where that is not
    certain to give ``AutoTokenizer``'s ids (no tokenizer.json, another tokenizer class)."""
    from tokenizers import Tokenizer

    cfg = _tokenizer_config(model_dir)
    if cfg is None:
        return None
    backend = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    pad = cfg.get("pad_token", "[PAD]")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    pad_id = backend.token_to_id(pad) if isinstance(pad, str) else None
    if pad_id is None:
        return None
    max_len = cfg.get("model_max_length")
    return TokenizerFiles(
        backend=backend, name="BertTokenizer", pad_token=pad, pad_token_id=pad_id,
        padding_side=cfg.get("padding_side", "right"),
        model_max_length=max_len if isinstance(max_len, int) else None,
        token_type_ids="token_type_ids" in cfg.get(
            "model_input_names", ["input_ids", "token_type_ids", "attention_mask"]))
