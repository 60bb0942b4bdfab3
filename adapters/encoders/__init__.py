"""What turns inputs into embeddings: the ``Encoder`` protocol, the PyTorch text and image
encoders and per-row LoRA routing inside their forward.

The modality follows from the folder: ``open_encoder`` asks each registered opener, in
order, whether the folder is its kind (an image processor and no tokenizer: an image
model); text is the fallback. Adding a modality is one module with its encoder plus one
line in ``OPENERS``."""
from pathlib import Path
from typing import Any, Callable

from .base import BackboneIdentity, Encoder, TorchEncoder, weights_sha256
from .image import ImageEncoder, is_image_folder
from .text import TextEncoder, default_model_path, mean_pool

# (does this folder hold that modality's model?, its encoder class); text is the fallback
OPENERS: list[tuple[Callable[[Path], bool], Callable[..., TorchEncoder]]] = [
    (is_image_folder, ImageEncoder),
]


def open_encoder(model_dir: str | Path | None = None, *, name: str | None = None,
                 **kwargs: Any) -> TorchEncoder:
    """The PyTorch encoder for a local Hugging Face folder (None: the embedded default text
    model), of the modality the folder holds."""
    if model_dir is not None:
        for matches, encoder in OPENERS:
            if matches(Path(model_dir)):
                return encoder(model_dir, name=name, **kwargs)
    return TextEncoder(model_dir, name=name, **kwargs)


__all__ = ["BackboneIdentity", "Encoder", "ImageEncoder", "TextEncoder", "TorchEncoder", "default_model_path",
           "mean_pool", "open_encoder", "weights_sha256"]
