"""What turns inputs into embeddings: the ``Encoder`` protocol, the PyTorch text and image
encoders and per-row LoRA routing inside their forward.

The modality follows from the folder: ``open_encoder`` asks each registered opener, in
order, whether the folder is its kind (an image processor and no tokenizer: an image
model); text is the fallback. Adding a modality is one module with its encoder plus one
line in ``openers()``."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol

if TYPE_CHECKING:
    from .audio import AudioEncoder
    from .base import BackboneIdentity, Encoder, TorchEncoder, weights_sha256
    from .image import ImageEncoder
    from .text import TextEncoder, default_model_path, mean_pool

Dtype = Literal["float32", "bfloat16"]


class Opener(Protocol):
    """An encoder class as ``open_encoder`` calls it: every modality's encoder takes every one
    of these (an image encoder without ``dtype`` once broke LoRA on images with a TypeError
    that only a training worker hit)."""

    def __call__(self, model_dir: str | Path | None, *, name: str | None, device: str,
                 max_batch_rows: int, workers: int, dtype: Dtype) -> TorchEncoder: ...


def openers() -> list[tuple[Callable[[Path], bool], Opener]]:
    """(does this folder hold that modality's model?, its encoder class); text is the fallback.
    Imported when an encoder is opened, not with this package: the encoders load torch and
    transformers, which the modules that only name ``Encoder`` (and the service's CLI
    process) do without."""
    from .audio import AudioEncoder, is_audio_folder
    from .image import ImageEncoder, is_image_folder

    return [(is_image_folder, ImageEncoder), (is_audio_folder, AudioEncoder)]


def open_encoder(model_dir: str | Path | None = None, *, name: str | None = None,
                 device: str = "cpu", max_batch_rows: int = 64, workers: int = 1,
                 dtype: Dtype = "float32") -> TorchEncoder:
    """The PyTorch encoder for a local Hugging Face folder (None: the embedded default text
    model), of the modality the folder holds. ``max_batch_rows``: rows per forward
    (TAILOR_MAX_BATCH_ROWS); ``dtype``: the precision of inference forwards."""
    from .text import TextEncoder

    opener: Opener = TextEncoder
    if model_dir is not None:
        opener = next((enc for matches, enc in openers() if matches(Path(model_dir))), TextEncoder)
    return opener(model_dir, name=name, device=device, max_batch_rows=max_batch_rows,
                  workers=workers, dtype=dtype)


# The names below load on first use (PEP 562), as in ``adapters/__init__``.
_WHERE = {"AudioEncoder": "audio", "BackboneIdentity": "base", "Encoder": "base",
          "TorchEncoder": "base", "weights_sha256": "base", "ImageEncoder": "image",
          "TextEncoder": "text", "default_model_path": "text", "mean_pool": "text"}
__all__ = sorted([*_WHERE, "open_encoder"])


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
