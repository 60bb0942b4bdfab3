"""Posted sound: every hostile file is a 422 or 413 naming what was wrong and what to do,
refused from its header where the header tells; good WAV, FLAC and OGG files decode to 16 kHz
mono. Files are generated here; ``HOSTILE`` is the e2e hostile-audio test's table too
(tests/e2e/test_audio_e2e.py)."""
from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest

from adapters.errors import InvalidExamples, TooLarge
from adapters.limits import Limits
from adapters.modalities.audio import AudioLimits, decode_audio, read_audio
from benchmarks.audio.speech import wav_bytes


# -- generators ------------------------------------------------------------------------------
def b64(blob: bytes) -> dict:
    return {"audio": base64.b64encode(blob).decode()}


def tone(seconds: float = 1.0, rate: int = 16_000, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def silent_flac(seconds: int, rate: int = 8_000) -> bytes:
    """Silence compresses to almost nothing in FLAC: an hour is ~90 kB, a duration bomb."""
    import soundfile as sf

    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, 1, format="FLAC") as out:
        block = np.zeros(rate * 60, np.float32)
        for _ in range(seconds // 60):
            out.write(block)
    return buf.getvalue()


def truncated_wav() -> bytes:
    blob = wav_bytes(tone(1.0))
    return blob[:len(blob) // 2]


def truncated_flac() -> bytes:
    blob = wav_bytes(tone(2.0), fmt="FLAC")
    return blob[:len(blob) // 2]


def nan_wav() -> bytes:
    x = tone(0.5)
    x[100] = np.nan
    return wav_bytes(x, subtype="FLOAT")


HOSTILE = [
    # (case, item, error, words in the message)
    ("not audio", b64(b"hello, this is plain text and no sound at all"), InvalidExamples,
     ["not a WAV, FLAC or OGG"]),
    ("mp3", b64(b"ID3\x03\x00" + bytes(200)), InvalidExamples, ["MP3", "convert"]),
    ("png", b64(b"\x89PNG\r\n\x1a\n" + bytes(64)), InvalidExamples, ["PNG"]),
    ("header cut", b64(wav_bytes(tone(0.5))[:30]), InvalidExamples, ["WAV", "truncated"]),
    ("wav data cut", b64(truncated_wav()), InvalidExamples, ["truncated", "complete file"]),
    ("flac data cut", b64(truncated_flac()), InvalidExamples, ["complete"]),
    ("an hour of FLAC", b64(silent_flac(3600)), TooLarge, ["3,600.0 s", "TAILOR_MAX_AUDIO_SECONDS"]),
    ("1 sample", b64(wav_bytes(np.zeros(1, np.float32))), InvalidExamples,
     ["1 sample(s)", "TAILOR_MIN_AUDIO_MS"]),
    ("192 kHz", b64(wav_bytes(tone(0.5, 192_000), 192_000)), InvalidExamples,
     ["192,000 Hz", "TAILOR_MAX_AUDIO_SAMPLE_RATE", "Resample"]),
    ("8 channels", b64(wav_bytes(tone(0.5), channels=8)), InvalidExamples,
     ["8 channels", "TAILOR_MAX_AUDIO_CHANNELS", "mono"]),
    ("NaN samples", b64(nan_wav()), InvalidExamples, ["NaN"]),
    ("bad base64", {"audio": "not base64 at all!"}, InvalidExamples, ["base64"]),
    ("a number", {"audio": 12}, InvalidExamples, ["base64 string"]),
    ("a text", "one two three", InvalidExamples, ["is text", "audio backbone", "WAV"]),
    ("an image", {"image": "iVBORw0KGgo="}, InvalidExamples, ["is an image", "audio backbone"]),
    ("unknown field", {"audio": "UklGRg==", "speaker": "x"}, InvalidExamples, ["speaker"]),
]


@pytest.mark.parametrize("case, item, error, words", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_refused_with_a_message_that_says_what_to_do(case, item, error, words):
    with pytest.raises(error) as e:
        decode_audio([item], where="inputs")
    assert e.value.message.startswith("inputs[0]"), e.value.message
    for w in words:
        assert w in e.value.message, (w, e.value.message)


def test_an_hour_is_refused_from_the_header_before_any_sample_is_decoded():
    blob = b64(silent_flac(3600))
    t = time.perf_counter()
    with pytest.raises(TooLarge):
        decode_audio([blob])
    assert time.perf_counter() - t < 0.5  # decoding an hour of FLAC takes seconds


def test_the_request_is_bounded_as_a_whole_before_decoding():
    clip = b64(wav_bytes(tone(20.0, 8_000), 8_000))
    with pytest.raises(TooLarge, match="TAILOR_MAX_REQUEST_AUDIO_SECONDS") as e:
        decode_audio([clip, clip, clip], AudioLimits(max_request_seconds=50))
    assert e.value.message.startswith("inputs:")


def test_bytes_are_measured_on_the_base64_text():
    with pytest.raises(TooLarge, match="TAILOR_MAX_AUDIO_BYTES"):
        decode_audio([b64(wav_bytes(tone(2.0)))], AudioLimits(max_bytes=10_000))


@pytest.mark.parametrize("fmt, subtype, rate, channels", [
    ("WAV", "PCM_16", 16_000, 1), ("WAV", "PCM_U8", 8_000, 1), ("WAV", "FLOAT", 44_100, 2),
    ("WAV", "PCM_24", 48_000, 1), ("FLAC", None, 22_050, 2), ("OGG", "VORBIS", 48_000, 1),
    ("OGG", "OPUS", 48_000, 1)])
def test_accepted_formats_decode_to_16_khz_mono(fmt, subtype, rate, channels):
    x = tone(1.0, rate)
    out, = decode_audio([b64(wav_bytes(x, rate, fmt, subtype, channels))])
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 16_000) <= 400  # OGG adds codec padding
    assert 0.3 < float(np.abs(out).max()) <= 1.0  # the tone survived, no clipping wrap
    spectrum = np.abs(np.fft.rfft(out[2000:14000]))
    assert abs(int(np.argmax(spectrum)) * 16_000 / 12_000 - 440) < 5  # still 440 Hz


def test_data_uri_prefix_and_examples_with_labels():
    blob = base64.b64encode(wav_bytes(tone(0.5))).decode()
    out = read_audio([{"audio": f"data:audio/wav;base64,{blob}", "label": "a"}], "examples",
                     Limits(), examples=True)
    assert len(out) == 1 and len(out[0]) == 8_000


def test_every_limit_is_a_setting_that_reaches_the_reader():
    lim = AudioLimits.of(Limits(max_audio_seconds=2, min_audio_ms=300, max_audio_channels=1,
                                max_audio_sample_rate=16_000, max_audio_bytes=4096,
                                max_request_audio_seconds=3))
    assert lim == AudioLimits(max_bytes=4096, max_seconds=2, max_request_seconds=3,
                              min_seconds=0.3, max_channels=1, max_rate=16_000)


@pytest.mark.parametrize("item, sent", [({"audio": "UklGRg=="}, "an audio"),
                                        ("a text", "text")])
def test_an_image_deployment_names_the_modality_it_was_sent(item, sent):
    """Every non-bare reader asks the registry (``refuse_other_modality``): an image reader
    sent a sound says so, as the audio reader sent an image does (HOSTILE above)."""
    from adapters.modalities.image import image_payload

    with pytest.raises(InvalidExamples, match=f"is {sent}, but this deployment serves an image"):
        image_payload(item, "inputs[0]")
