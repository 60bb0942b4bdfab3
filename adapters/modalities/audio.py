"""Sound posted by clients: base64 WAV, FLAC or OGG in, mono float waveforms out, or a 4xx.

An audio item is ``{"audio": "<base64 WAV, FLAC or OGG>"}`` (a ``data:audio/...;base64,``
prefix is accepted). Everything a client sends is hostile until checked, in this order, so
that no check costs more than the one before it allowed:

1. size: the base64 text is measured before it is decoded (``max_bytes``)        -> 413
2. format: libsndfile (``soundfile``, whose wheels bundle it with FLAC and Ogg Vorbis/Opus)
   reads the HEADER only: WAV, FLAC or OGG, else refused with what the bytes look like -> 422
3. header: sample rate (``min_rate``..``max_rate``), channels (``max_channels``), duration
   (frames / rate, at most ``max_seconds`` per clip and ``max_request_seconds`` summed
   over the request) and at least ``min_seconds``: an hour-long clip, a 192 kHz file or an
   8-channel one is refused before a sample is decoded                          -> 413 / 422
4. decode; a file whose data ends before its header's frame count is truncated -> 422
5. mix to mono (mean of the channels) and resample to the backbone's rate with soxr (VHQ),
   float32 in [-1, 1].

Pure functions of bytes and limits: no model, no HTTP. Errors are ``InvalidExamples`` (422)
or ``TooLarge`` (413), each naming the item, what was wrong and what to do.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidExamples, TooLarge
from .base import FileItems, Modality, register_modality

FORMATS = ("WAV", "FLAC", "OGG")  # libsndfile's major formats accepted (WAVEX is WAV too)
RATE = 16_000  # what every packaged audio backbone reads; the reader resamples to it
_DATA_LINE = re.compile(r"data\s*:\s*(\d+)\s*\(should be \d+\)")
_STREAMED = 0x7FFF0000  # a WAV data size from here up is a streaming writer's placeholder


@dataclass(frozen=True)
class AudioLimits:
    """Limits on posted sound; in a server each is a setting (``validation.Limits`` -> ``of``)."""

    max_bytes: int = 8 * 1024 * 1024  # encoded (after base64) bytes per clip
    max_seconds: float = 30.0  # duration per clip, from the header
    max_request_seconds: float = 1200.0  # durations summed over a request (examples included)
    min_seconds: float = 0.1  # shortest clip: a few samples hold no word
    max_channels: int = 2
    min_rate: int = 8_000  # telephone audio is the lowest rate speech comes in
    max_rate: int = 96_000

    @classmethod
    def of(cls, limits: Any) -> "AudioLimits":
        return cls(max_bytes=limits.max_audio_bytes, max_seconds=limits.max_audio_seconds,
                   max_request_seconds=limits.max_request_audio_seconds,
                   min_seconds=limits.min_audio_ms / 1000, max_channels=limits.max_audio_channels,
                   max_rate=limits.max_audio_sample_rate)


FILES = FileItems("audio", "WAV, FLAC or OGG", "the audio file", "clip", "TAILOR_MAX_AUDIO_BYTES",
                  f"Send a shorter clip, or FLAC/OGG, or mono {RATE // 1000} kHz (what the model "
                  "hears)")


def _diagnose(blob: bytes) -> str:
    for magic, name in ((b"RIFF", "WAV"), (b"fLaC", "FLAC"), (b"OggS", "OGG")):
        if blob.startswith(magic):
            return (f"it starts like a {name} file but its header is truncated or corrupt; send "
                    "the complete file")
    for magic, name in ((b"ID3", "MP3"), (b"\xff\xfb", "MP3"), (b"\xff\xf3", "MP3"),
                        (b"FORM", "AIFF"), (b"\x1aE\xdf\xa3", "WebM/Matroska"), (b"\x89PNG", "PNG"),
                        (b"\xff\xd8", "JPEG"), (b"%PDF", "PDF")):
        if blob.startswith(magic):
            return f"it is a {name} file; only WAV, FLAC and OGG are accepted, convert it"
    if blob[4:8] == b"ftyp":
        return "it is an MP4/M4A file; only WAV, FLAC and OGG are accepted, convert it"
    return "it is not a WAV, FLAC or OGG file"


def _open(blob: bytes, where: str):
    """The header through libsndfile, nothing decoded; only WAV, FLAC and OGG."""
    import soundfile as sf

    try:
        f = sf.SoundFile(io.BytesIO(blob))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
        raise InvalidExamples(f"{where}.audio cannot be read as audio: {_diagnose(blob)}") from None
    major = f.format
    if major == "WAVEX":
        major = "WAV"
    if major not in FORMATS:
        f.close()
        raise InvalidExamples(f"{where}.audio is a {f.format} file; only WAV, FLAC and OGG are "
                              "accepted, convert it")
    return f


def _check_header(f, where: str, limits: AudioLimits) -> float:
    rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
    if not limits.min_rate <= rate <= limits.max_rate:
        raise InvalidExamples(f"{where}: the audio is sampled at {rate:,} Hz; accepted rates are "
                              f"{limits.min_rate:,}..{limits.max_rate:,} Hz "
                              f"(TAILOR_MAX_AUDIO_SAMPLE_RATE). Resample it (the model hears "
                              f"{RATE:,} Hz)")
    if channels > limits.max_channels:
        raise InvalidExamples(f"{where}: the audio has {channels} channels; at most "
                              f"{limits.max_channels} are accepted (TAILOR_MAX_AUDIO_CHANNELS). "
                              "Mix it down to mono (the model hears one channel)")
    seconds = frames / rate
    if seconds > limits.max_seconds:
        raise TooLarge(f"{where}: the clip is {seconds:,.1f} s long; the limit is "
                       f"{limits.max_seconds:g} s per clip (TAILOR_MAX_AUDIO_SECONDS). Cut it "
                       "to the part that carries the label")
    if seconds < limits.min_seconds:
        raise InvalidExamples(f"{where}: the clip is {frames} sample(s) ({seconds * 1000:.1f} ms) "
                              f"long; at least {limits.min_seconds * 1000:g} ms is needed "
                              "(TAILOR_MIN_AUDIO_MS). Send the whole recording")
    return seconds


def _cut_short(f) -> bool:
    """libsndfile reads a WAV whose data ends early as a shorter clip, and says so only in
    its log ("data : 64000 (should be 31978)"): a cut file is refused, not half-heard. A
    streamed WAV (written to a pipe: espeak-ng --stdout, ffmpeg) carries a placeholder size
    (0, or near 2**31 or 2**32) because its writer could not know the length; it is whole."""
    for line in f.extra_info.splitlines():
        m = _DATA_LINE.match(line)
        if m and 0 < int(m.group(1)) < _STREAMED:
            return True
    return False


def decode_audio(items: Sequence[Any], limits: AudioLimits = AudioLimits(), *,
                 where: str = "inputs", rate: int = RATE) -> list[np.ndarray]:
    """Audio items (``{"audio": base64}``) -> mono float32 waveforms at ``rate`` Hz in
    [-1, 1], in order. Every header is checked before any clip is decoded, so a request
    whose tenth clip lasts an hour decodes nothing."""
    import soundfile as sf
    import soxr

    opened, total = [], 0.0
    try:
        for i, item in enumerate(items):
            w = f"{where}[{i}]"
            f = _open(FILES.read(item, w, AUDIO, limits.max_bytes), w)
            opened.append((w, f))
            total += _check_header(f, w, limits)
            if total > limits.max_request_seconds:
                raise TooLarge(f"{where}: the clips of this request last more than "
                               f"{limits.max_request_seconds:g} s together "
                               "(TAILOR_MAX_REQUEST_AUDIO_SECONDS); send fewer or shorter clips "
                               "per request")
        out = []
        for w, f in opened:
            try:
                x = f.read(dtype="float32", always_2d=True)  # [frames, channels]
            except (sf.LibsndfileError, RuntimeError, ValueError) as e:
                raise InvalidExamples(f"{w}.audio is corrupt ({str(e)[:120]}); send the "
                                      "complete WAV, FLAC or OGG file") from None
            if len(x) < f.frames or _cut_short(f):
                raise InvalidExamples(f"{w}.audio is truncated: its header announces more "
                                      "samples than the file holds; send the complete file")
            if not np.isfinite(x).all():  # float WAVs can carry NaN or inf
                raise InvalidExamples(f"{w}.audio holds NaN or infinite samples; send real audio")
            mono = x.mean(axis=1)  # [frames]
            if f.samplerate != rate:
                mono = soxr.resample(mono, f.samplerate, rate, quality="VHQ")
            out.append(np.clip(mono, -1.0, 1.0).astype(np.float32))
        return out
    finally:
        for _, f in opened:
            f.close()


def read_audio(items: list[Any], where: str, limits: Any, *, examples: bool = False
               ) -> list[np.ndarray]:
    """The audio modality's reader (``Modality.read``): the clips of one request (inputs, or
    example objects carrying ``audio``) -> 16 kHz mono waveforms. The number of clips is
    bounded before this runs (``TAILOR_MAX_INPUTS``, ``TAILOR_MAX_EXAMPLES``), their length
    here per clip and summed over the request."""
    return decode_audio(items, AudioLimits.of(limits), where=where)


AUDIO = register_modality(Modality(
    "audio", "audio", read_audio, '{"audio": "<base64 WAV, FLAC or OGG>"} objects',
    example_doc="the example sound, a base64 WAV, FLAC or OGG file (audio backbones)",
    item_doc="a base64 WAV, FLAC or OGG file (a data:audio/...;base64, prefix is accepted); on "
             "deployments whose backbone is an audio model"))
