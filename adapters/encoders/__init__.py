"""What turns inputs into embeddings: the ``Encoder`` protocol, the PyTorch text encoder and
per-row LoRA routing inside its forward."""
from pathlib import Path
from typing import Any

from .base import BackboneIdentity, Encoder, TorchEncoder, weights_sha256
from .text import TextEncoder, default_model_path, mean_pool


def open_encoder(model_dir: str | Path | None = None, *, name: str | None = None,
                 **kwargs: Any) -> TorchEncoder:
    """The PyTorch encoder for a local Hugging Face folder (None: the embedded default)."""
    return TextEncoder(model_dir, name=name, **kwargs)


__all__ = ["BackboneIdentity", "Encoder", "TextEncoder", "TorchEncoder", "default_model_path",
           "mean_pool", "open_encoder", "weights_sha256"]
