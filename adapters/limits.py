"""The request limits, defined once. Every field of ``RequestLimits`` is also a setting,
``TAILOR_<FIELD>`` (service/settings.py's ``Settings`` derives from this class, so the name,
default, bounds and description live here alone); ``Limits`` adds what the deployment's
backbone reads (``modality``, set by the engine from its encoder).

Every limit is checked by the domain (adapters/validation.py, adapters/modalities/),
which answers 413/422 naming the setting to change.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RequestLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_inputs: int = Field(256, ge=1, description="texts per predict/embed request (413 above)")
    max_chars: int = Field(10_000, ge=1, description="characters per text (413 above)")
    max_examples: int = Field(2_000, ge=2, description="examples per adapter (413 above)")
    max_labels: int = Field(100, ge=2, description="labels per adapter (422 above)")
    max_label_chars: int = Field(100, ge=1, description="characters per label (422 above)")
    max_unlabeled: int = Field(20_000, ge=1, description="unlabeled texts per adapter (413 above)")
    max_suggest_texts: int = Field(2_000, ge=1, description="candidate texts per suggest request (413 above)")
    max_images: int = Field(64, ge=1, description="image backbones: images per predict/embed request (413 above); a create's examples are bounded by TAILOR_MAX_EXAMPLES and TAILOR_MAX_REQUEST_PIXELS instead, as a text create's are by TAILOR_MAX_EXAMPLES and TAILOR_MAX_CHARS")
    max_image_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="image backbones: encoded bytes per image, measured on the base64 text before decoding (413 above)")
    max_image_pixels: int = Field(4096 * 4096, ge=64, description="image backbones: width x height per image, read from the header before decoding: decompression bombs are refused unopened (413 above)")
    max_request_pixels: int = Field(64 * 1024 * 1024, ge=64, description="image backbones: width x height summed over a request's images, a create's examples included (413 above)")
    min_image_side: int = Field(8, ge=1, description="image backbones: smallest accepted width or height (422 below)")
    max_audio_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="audio backbones: encoded bytes per clip, measured on the base64 text before decoding (413 above)")
    max_audio_seconds: int = Field(30, ge=1, le=3600, description="audio backbones: duration per clip, read from the header before decoding (413 above)")
    max_request_audio_seconds: int = Field(1200, ge=1, description="audio backbones: durations summed over a request's clips, a create's examples included (413 above)")
    min_audio_ms: int = Field(100, ge=1, description="audio backbones: shortest accepted clip in milliseconds (422 below)")
    max_audio_channels: int = Field(2, ge=1, le=64, description="audio backbones: channels per clip, mixed down to mono (422 above)")
    max_audio_sample_rate: int = Field(96_000, ge=16_000, le=768_000, description="audio backbones: highest accepted sample rate in Hz (422 above; 8000 Hz is the lowest), resampled to the backbone's 16 kHz")


class Limits(RequestLimits):
    """The limits a deployment checks requests against. ``modality``: what its backbone
    reads ("text", "image", "audio"): inputs and examples are read by that modality's reader
    (``validation.MODALITIES``)."""

    modality: str = "text"

    def for_modality(self, modality: str) -> "Limits":
        return self.model_copy(update={"modality": modality})
