"""Posted images: every hostile file is a 422 or 413 naming what was wrong, never a crash,
and good files decode to the pixels a viewer would show. Images are generated here."""
from __future__ import annotations

import base64
import functools
import io
import random
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from adapters.errors import InvalidExamples, TooLarge
from adapters.modalities.image import ImageLimits, decode_images, image_payload


# -- generators ------------------------------------------------------------------------------
def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def b64(blob: bytes) -> dict:
    return {"image": base64.b64encode(blob).decode()}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: for what Pillow will not write (16-bit RGB) and for bombs."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", rows)
            + png_chunk(b"IEND", b""))


@functools.lru_cache(maxsize=None)
def png_bomb(side: int) -> bytes:
    """side x side black grayscale pixels: ~side^2 bytes decoded from ~side^2/1000 sent."""
    z = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return raw_png(side, side, 8, 0, body)


def jpeg_header_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    blob = bytearray(encode(Image.new("L", (16, 16), 128), "JPEG"))
    i = blob.index(b"\xff\xc0")
    struct.pack_into(">HH", blob, i + 5, height, width)
    return bytes(blob)


def png16_gray(values: np.ndarray) -> bytes:
    return encode(Image.fromarray(values.astype(np.uint16)), "PNG")


def png16_rgb(rgb: np.ndarray) -> bytes:
    h, w, _ = rgb.shape
    rows = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(h))
    return raw_png(w, h, 16, 2, zlib.compress(rows))


def jpeg_with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", exif=exif.tobytes(), quality=100)


def frames(fmt: str) -> bytes:
    f = [Image.new("RGB", (16, 16), c) for c in ((0, 0, 0), (255, 0, 0), (0, 255, 0))]
    return encode(f[0], fmt, save_all=True, append_images=f[1:])


def marker_image(w: int = 32, h: int = 16) -> Image.Image:
    """Black, with a white 4x4 block in the top-left corner: orientation shows."""
    a = np.zeros((h, w), np.uint8)
    a[:4, :4] = 255
    return Image.fromarray(a).convert("RGB")


GOOD_JPEG_HEAD = encode(Image.new("RGB", (40, 30)), "JPEG")[:100]
GOOD_PNG = encode(Image.new("L", (28, 28), 200), "PNG")
GOOD_JPEG = encode(Image.new("RGB", (40, 30), (10, 120, 240)), "JPEG", quality=95)


# -- refused ---------------------------------------------------------------------------------
REFUSED = [
    # (case, items, limits, error, words in the message)
    ("not an image", [b64(b"hello, I am text in a file")], ImageLimits(), InvalidExamples,
     ["not a PNG or JPEG"]),
    ("empty file", [b64(b"")], ImageLimits(), InvalidExamples, ["not valid base64"]),
    ("not base64", [{"image": "this is *not* base64!"}], ImageLimits(), InvalidExamples,
     ["not valid base64"]),
    ("truncated PNG", [b64(encode(Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (64, 64), np.uint8)), "PNG")[:300])], ImageLimits(), InvalidExamples,
     ["truncated or corrupt", "complete PNG or JPEG"]),
    ("truncated JPEG", [b64(encode(Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (64, 64, 3), np.uint8)), "JPEG")[:1200])], ImageLimits(), InvalidExamples,
     ["truncated or corrupt", "complete"]),
    ("JPEG cut inside its header", [b64(GOOD_JPEG_HEAD)], ImageLimits(), InvalidExamples,
     ["starts like a JPEG", "truncated or corrupt", "complete file"]),
    ("PNG bomb 10000x10000", [b64(png_bomb(10_000))], ImageLimits(), TooLarge,
     ["10000x10000", "100,000,000 pixels", "TAILOR_MAX_IMAGE_PIXELS"]),
    ("JPEG header 10000x10000", [b64(jpeg_header_claiming(10_000, 10_000))], ImageLimits(),
     TooLarge, ["10000x10000", "TAILOR_MAX_IMAGE_PIXELS"]),
    ("beyond Pillow's own guard", [b64(jpeg_header_claiming(20_000, 20_000))], ImageLimits(),
     TooLarge, ["downscale"]),
    ("1x1", [b64(encode(Image.new("RGB", (1, 1)), "PNG"))], ImageLimits(), InvalidExamples,
     ["1x1", "at least 8", "TAILOR_MIN_IMAGE_SIDE"]),
    ("1x10000 sliver", [b64(encode(Image.new("L", (1, 10_000)), "PNG"))], ImageLimits(),
     InvalidExamples, ["1x10000"]),
    ("animated GIF", [b64(frames("GIF"))], ImageLimits(), InvalidExamples,
     ["GIF file", "only PNG and JPEG"]),
    ("still GIF", [b64(encode(Image.new("L", (16, 16)), "GIF"))], ImageLimits(), InvalidExamples,
     ["GIF"]),
    ("animated PNG", [b64(frames("PNG"))], ImageLimits(), InvalidExamples,
     ["animated (3 frames)", "one frame"]),
    ("WebP", [b64(encode(Image.new("RGB", (16, 16)), "WEBP"))], ImageLimits(), InvalidExamples,
     ["WebP"]),
    ("TIFF", [b64(encode(Image.new("RGB", (16, 16)), "TIFF"))], ImageLimits(), InvalidExamples,
     ["TIFF"]),
    ("too many bytes", [{"image": "A" * 2000}], ImageLimits(max_bytes=1000), TooLarge,
     ["1,000 bytes", "TAILOR_MAX_IMAGE_BYTES"]),
    ("too many images", [b64(GOOD_PNG)] * 3, ImageLimits(max_images=2), TooLarge,
     ["3 images", "limit is 2", "TAILOR_MAX_IMAGES"]),
    ("too many pixels in all", [b64(GOOD_PNG)] * 3, ImageLimits(max_request_pixels=2000),
     TooLarge, ["2,000 pixels", "TAILOR_MAX_REQUEST_PIXELS"]),
    ("text to an image deployment", ["a red shoe"], ImageLimits(), InvalidExamples,
     ["is text", "image backbone", '{"image"']),
    ("text example to an image deployment", [{"text": "a red shoe", "label": "x"}],
     ImageLimits(), InvalidExamples, ["is text", "image backbone"]),
    ("image not a string", [{"image": 12}], ImageLimits(), InvalidExamples,
     ["must be a base64 string", "int"]),
    ("unknown field", [{"image": "", "colour": "red"}], ImageLimits(), InvalidExamples,
     ["unknown field", "colour"]),
    ("neither text nor image", [[1, 2]], ImageLimits(), InvalidExamples, ['{"image"']),
]


@pytest.mark.parametrize("case,items,limits,error,words", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_a_message_that_says_what_to_do(case, items, limits, error, words):
    with pytest.raises(error) as e:
        decode_images(items, limits, where="inputs")
    assert e.value.status == (413 if error is TooLarge else 422)
    for w in words:
        assert w in e.value.message, (w, e.value.message)
    assert "inputs[" in e.value.message or "request" in e.value.message or "images in one" in e.value.message


def test_a_bomb_is_refused_from_its_header_without_decoding():
    blob = png_bomb(10_000)
    assert len(blob) < 200_000  # what a client sends: ~100 kB for 100 MB of pixels
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(TooLarge):
        decode_images([b64(GOOD_PNG), b64(blob)])  # the good first image is not decoded either
    took = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5 * len(blob) + 2_000_000, peak
    assert took < 1.0


# -- accepted, normalized ----------------------------------------------------------------------
def _expect_gray(value: int):
    return lambda a: a.shape == (28, 28, 3) and (a == value).all()


ACCEPTED = [
    # (case, blob or item, check on the [H, W, 3] uint8 array)
    ("grayscale PNG -> RGB", GOOD_PNG, _expect_gray(200)),
    ("RGB JPEG", GOOD_JPEG, lambda a: a.shape == (30, 40, 3)
     and np.abs(a.astype(int) - [10, 120, 240]).max() <= 3),
    ("data URI prefix", {"image": "data:image/png;base64," + base64.b64encode(GOOD_PNG).decode()},
     _expect_gray(200)),
    ("base64 with line breaks", {"image": base64.encodebytes(GOOD_PNG).decode()}, _expect_gray(200)),
    ("16-bit gray PNG is scaled, not clipped", png16_gray(np.array([[0, 257 * 128, 65535] * 4] * 8)),
     lambda a: a.shape == (8, 12, 3) and a[0, :3, 0].tolist() == [0, 128, 255]),
    ("16-bit RGB PNG", png16_rgb(np.full((8, 8, 3), [65535, 257 * 64, 0])),
     lambda a: a.shape == (8, 8, 3) and a[0, 0].tolist() == [255, 64, 0]),
    ("CMYK JPEG -> RGB", encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=100),
     lambda a: a.shape == (16, 16, 3) and np.abs(a[8, 8].astype(int) - [255, 0, 0]).max() <= 4),
    ("RGBA composited on white", encode(Image.new("RGBA", (16, 16), (0, 0, 0, 0)), "PNG"),
     lambda a: (a == 255).all()),
    ("half-transparent red on white", encode(Image.new("RGBA", (16, 16), (255, 0, 0, 128)), "PNG"),
     lambda a: np.abs(a[0, 0].astype(int) - [255, 127, 127]).max() <= 1),
    ("palette PNG with transparency", encode(Image.new("P", (16, 16), 0), "PNG", transparency=0),
     lambda a: (a == 255).all()),
    ("1-bit PNG", encode(Image.new("1", (16, 16), 1), "PNG"), lambda a: (a == 255).all()),
    ("8x8, the smallest accepted", encode(Image.new("L", (8, 8), 7), "PNG"),
     lambda a: a.shape == (8, 8, 3)),
    # EXIF orientation 6: stored landscape, shown rotated 90 deg clockwise (portrait); the
    # marker in the stored top-left ends up top-right.
    ("EXIF orientation 6", jpeg_with_orientation(marker_image(), 6),
     lambda a: a.shape == (32, 16, 3) and a[:4, -4:].mean() > 200 and a[:4, :4].mean() < 50),
    ("EXIF orientation 3 (upside down)", jpeg_with_orientation(marker_image(), 3),
     lambda a: a.shape == (16, 32, 3) and a[-4:, -4:].mean() > 200 and a[:4, :4].mean() < 50),
    ("no EXIF: as stored", encode(marker_image(), "JPEG", quality=100),
     lambda a: a.shape == (16, 32, 3) and a[:4, :4].mean() > 200),
]


@pytest.mark.parametrize("case,blob,check", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted_and_normalized(case, blob, check):
    item = blob if isinstance(blob, dict) else b64(blob)
    [a] = decode_images([item])
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert check(a), (a.shape, a[0, :4].tolist())


def test_background_is_a_parameter():
    [a] = decode_images([b64(encode(Image.new("LA", (16, 16), (0, 0)), "PNG"))], background=(0, 0, 0))
    assert (a == 0).all()


def test_examples_carry_their_label_beside_the_image():
    assert image_payload({"image": "abc", "label": "shoe"}, "examples[0]") == "abc"


def test_limits_are_checked_at_construction():
    with pytest.raises(ValueError, match="max_pixels"):
        ImageLimits(max_pixels=0)


# -- fuzz: damaged files never escape as anything but a 4xx ----------------------------------
def test_damaged_files_are_refused_or_decoded_never_crash():
    rng = random.Random(0)
    seeds = [encode(marker_image(), "PNG"), encode(marker_image(), "JPEG"),
             jpeg_with_orientation(marker_image(), 6), png16_gray(np.arange(64).reshape(8, 8) * 1000)]
    outcomes = {"ok": 0, "refused": 0}
    for i in range(400):
        blob = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            op = rng.random()
            pos = rng.randrange(len(blob) or 1)
            if op < 0.6 and blob:
                blob[pos] = rng.randrange(256)
            elif op < 0.8:
                del blob[pos:pos + rng.randint(1, 64)]
            else:
                blob[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        try:
            [a] = decode_images([b64(bytes(blob))])
            assert a.dtype == np.uint8 and a.shape[2] == 3
            outcomes["ok"] += 1
        except (InvalidExamples, TooLarge):
            outcomes["refused"] += 1
    assert outcomes["refused"] > 50 and outcomes["ok"] > 0, outcomes
