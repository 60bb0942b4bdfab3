"""Images posted by clients: base64 PNG or JPEG in, RGB pixel arrays out, or a 4xx error.

An image item is ``{"image": "<base64 PNG or JPEG>"}`` (a ``data:image/...;base64,`` prefix
is accepted). Everything a client sends is hostile until checked, in this order, so that no
check costs more than the one before it allowed:

1. count: at most ``max_images`` per request (a create's examples: ``max_examples``) -> 413
2. size: the base64 text is measured before it is decoded (``max_bytes``) -> 413
3. format: only Pillow's PNG and JPEG decoders are ever run (no GIF, TIFF, PSD ... parsers)
4. header: width x height read from the header, NOT decoded: above ``max_pixels`` per image
   or ``max_request_pixels`` in all is refused before a pixel is decompressed (a 100 kB PNG
   can hold 10000 x 10000 zeros: a decompression bomb)                  -> 413
5. sides below ``min_side`` (a 1x1 picture has nothing to classify)     -> 422
6. decode; truncated or corrupt data is refused, never padded with grey -> 422
7. normalize: EXIF orientation applied (a phone photo upright, as a viewer shows it),
   CMYK -> RGB, 16-bit -> 8-bit by scaling (Pillow's own convert clips 16-bit to 255),
   alpha composited on ``background``, grayscale replicated to RGB.

Animated images (APNG; GIF is not accepted at all) are refused, not cut to their first
frame: which frame a label is about is the client's decision, and a first frame is often a
blank or a fade-in, so a silent choice would train or predict on a picture the client never
looked at. Taking a frame is one line on the client side; the error says so.

Pure functions of bytes and limits: no model, no HTTP. Errors are ``InvalidExamples`` (422)
or ``TooLarge`` (413), each naming the item, what was wrong and what to do.
"""
from __future__ import annotations

import dataclasses
import io
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidExamples, TooLarge
from .base import FileItems, Modality, register_modality

FORMATS = ("PNG", "JPEG")


@dataclass(frozen=True)
class ImageLimits:
    """Limits on posted images; in a server each is a setting (``validation.Limits`` ->
    ``of``)."""

    max_images: int = 64  # images per request (predict/embed inputs or examples)
    max_bytes: int = 4 * 1024 * 1024  # encoded (after base64) bytes per image
    max_pixels: int = 4096 * 4096  # width x height per image, from the header
    max_request_pixels: int = 64 * 1024 * 1024  # width x height summed over a request
    min_side: int = 8  # smallest accepted width or height

    def __post_init__(self) -> None:
        for k, v in self.__dict__.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"image limit {k} must be a positive integer, got {v!r}")

    @classmethod
    def of(cls, limits: Any) -> "ImageLimits":
        return cls(max_images=limits.max_images, max_bytes=limits.max_image_bytes,
                   max_pixels=limits.max_image_pixels,
                   max_request_pixels=limits.max_request_pixels, min_side=limits.min_image_side)


FILES = FileItems("image", "PNG or JPEG", "the image", "image", "TAILOR_MAX_IMAGE_BYTES",
                  "Send a smaller or more compressed file (the model sees it at a few hundred "
                  "pixels)")


def image_payload(item: Any, where: str) -> str:
    """The base64 text of an image item ``{"image": "..."}`` (examples also carry
    ``label``/``labels``); a 422 naming the modality when the item is another modality's
    (a text, a sound), so a client learns what this deployment expects."""
    return FILES.payload(item, where, IMAGE)


def _open(blob: bytes, where: str):
    """Open with the PNG and JPEG decoders only; reads the header, decodes nothing.

    Pillow's own bomb guard (``Image.MAX_IMAGE_PIXELS``, a process-wide setting left as it
    is) raises above twice its limit; below that, our ``max_pixels`` check decides."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(blob), formats=FORMATS)
    except Image.DecompressionBombError:
        raise TooLarge(f"{where}: the image header declares more than "
                       f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels; downscale it before "
                       "sending (the model sees it at a few hundred pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error):
        raise InvalidExamples(f"{where}.image cannot be read as an image: {_diagnose(blob)}") from None


def _diagnose(blob: bytes) -> str:
    if blob.startswith((b"\x89PNG", b"\xff\xd8")):
        kind = "PNG" if blob.startswith(b"\x89PNG") else "JPEG"
        return (f"it starts like a {kind} file but is truncated or corrupt before its header ends; "
                "send the complete file")
    for magic, name in ((b"GIF8", "GIF"), (b"RIFF", "WebP"), (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"),
                        (b"BM", "BMP"), (b"8BPS", "PSD"), (b"%PDF", "PDF"), (b"<svg", "SVG"),
                        (b"<?xml", "SVG/XML")):
        if blob.startswith(magic):
            return f"it is a {name} file; only PNG and JPEG are accepted, convert it"
    return "it is not a PNG or JPEG file"


def _check_header(img, where: str, limits: ImageLimits) -> int:
    w, h = img.size
    if w * h > limits.max_pixels:
        raise TooLarge(f"{where}: the image is {w}x{h} = {w * h:,} pixels; the limit is "
                       f"{limits.max_pixels:,} per image (TAILOR_MAX_IMAGE_PIXELS). Downscale it "
                       "before sending (the model sees it at a few hundred pixels)")
    if min(w, h) < limits.min_side:
        raise InvalidExamples(f"{where}: the image is {w}x{h} pixels; both sides must be at least "
                              f"{limits.min_side} (TAILOR_MIN_IMAGE_SIDE). Send the real picture, "
                              "not a thumbnail or a placeholder")
    if getattr(img, "n_frames", 1) > 1:
        raise InvalidExamples(f"{where}: the image is animated ({img.n_frames} frames); send one "
                              "frame as a still PNG or JPEG (which frame is meant is yours to pick)")
    return w * h


def _to_rgb(img, background: tuple[int, int, int]) -> np.ndarray:
    """Any decoded PNG/JPEG mode -> uint8 [H, W, 3]."""
    from PIL import Image

    if img.mode.startswith("I"):  # 16-bit grayscale PNG ("I;16"; "I" in older Pillows)
        a = np.asarray(img).astype(np.float64)  # [H, W] in 0..65535
        gray = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        base = Image.new("RGB", img.size, background)
        base.paste(img, mask=img.getchannel("A"))
        img = base
    if img.mode != "RGB":  # L, 1, CMYK, YCbCr, LAB, RGBX ...
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def decode_images(items: Sequence[Any], limits: ImageLimits = ImageLimits(), *,
                  where: str = "inputs", background: tuple[int, int, int] = (255, 255, 255)
                  ) -> list[np.ndarray]:
    """Image items (``{"image": base64}``) -> RGB uint8 arrays [H, W, 3], in order.

    Every header is checked before any image is decoded, so a request whose tenth image is a
    bomb decodes nothing. ``background``: the colour transparent pixels are composited on
    (white: what a viewer on a white page shows)."""
    from PIL import ImageOps

    items = list(items)
    if len(items) > limits.max_images:
        raise TooLarge(f"{len(items)} images in one request; the limit is {limits.max_images} "
                       "(TAILOR_MAX_IMAGES). Split the request")
    opened = []
    total = 0
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        img = _open(FILES.read(item, w, IMAGE, limits.max_bytes), w)
        total += _check_header(img, w, limits)
        if total > limits.max_request_pixels:
            raise TooLarge(f"{where}: the images of this request hold more than "
                           f"{limits.max_request_pixels:,} pixels together "
                           "(TAILOR_MAX_REQUEST_PIXELS); send fewer or smaller images per request")
        opened.append((w, img))
    out = []
    for w, img in opened:
        try:
            img.load()
            img = ImageOps.exif_transpose(img)  # a damaged EXIF block is a damaged file too
            out.append(_to_rgb(img, background))
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
            raise InvalidExamples(f"{w}.image is truncated or corrupt ({_reason(e)}); send the "
                                  "complete PNG or JPEG file") from None
    return out


def _reason(e: Exception) -> str:
    msg = str(e).split("\n")[0][:120]
    return msg or type(e).__name__


def read_images(items: list[Any], where: str, limits: Any, *, examples: bool = False
                ) -> list[np.ndarray]:
    """The image modality's reader (``Modality.read``): image items of one request (or
    example objects carrying ``image``) -> RGB arrays, under the deployment's limits.

    A create's examples are bounded as a text create's are: by the examples limit (checked
    before the reader runs, ``TAILOR_MAX_EXAMPLES``) and a size budget, here the pixels
    summed over the request (``TAILOR_MAX_REQUEST_PIXELS``), not by ``TAILOR_MAX_IMAGES``,
    which bounds predict and embed inputs: 10 labels x 8 examples is an ordinary create."""
    lim = ImageLimits.of(limits)
    if examples:
        lim = dataclasses.replace(lim, max_images=limits.max_examples)
    return decode_images(items, lim, where=where)


IMAGE = register_modality(Modality(
    "image", "image", read_images, '{"image": "<base64 PNG or JPEG>"} objects',
    example_doc="the example image, a base64 PNG or JPEG file (image backbones)",
    item_doc="a base64 PNG or JPEG file (a data:image/...;base64, prefix is accepted); on "
             "deployments whose backbone is an image model"))
