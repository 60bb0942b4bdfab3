"""Spoken words made on this machine, for the audio tests and benchmark: synthetic voices
from Debian's espeak-ng and flite, human digit recordings from asterisk-core-sounds-en-wav
(all three installed by deploy/install-audio.sh, which `make test` runs).

Clips are WAV bytes (what a client posts, base64-encoded); ``wave_of`` reads one back as
16 kHz mono float32 for in-process use.
"""
from __future__ import annotations

import io
import itertools
import random
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HUMAN = Path("/usr/share/asterisk/sounds/en_US_f_Allison/digits")
ESPEAK_LANGS = ("en-us", "en", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan",
                "en-gb-x-gbcwmd")
HELD_OUT_LANG = "en-us-nyc"  # an accent no training draw speaks: the held-out voices
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "croak", "whisper")
FLITE_VOICES = ("kal", "awb", "rms", "slt", "kal16")


def require_tools() -> None:
    missing = [t for t in ("espeak-ng", "flite") if shutil.which(t) is None]
    if missing or not HUMAN.is_dir():
        raise RuntimeError(f"missing {missing or [str(HUMAN)]}: run deploy/install-audio.sh "
                           "(make test does)")


@lru_cache(maxsize=4096)
def espeak(word: str, voice: str, speed: int = 160, pitch: int = 50) -> bytes:
    """WAV bytes (22.05 kHz mono 16-bit) of ``word`` in espeak-ng voice ``lang+variant``."""
    return subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                           "--stdout", word], check=True, capture_output=True).stdout


@lru_cache(maxsize=4096)
def flite(word: str, voice: str) -> bytes:
    """WAV bytes (16 kHz mono 16-bit, 8 kHz for kal) of ``word`` in flite voice ``voice``."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["flite", "-voice", voice, "-t", word, "-o", f.name], check=True,
                       capture_output=True)
        return Path(f.name).read_bytes()


def synthetic_voices(seed: int = 0, langs: tuple[str, ...] = ESPEAK_LANGS,
                     flite_voices: tuple[str, ...] = FLITE_VOICES) -> list[tuple[str, str, int, int]]:
    """The synthetic training voices, shuffled by ``seed``: ("espeak", lang+variant, speed,
    pitch) or ("flite", voice, 0, 0). Speeds and pitches vary per voice, seeded."""
    rng = random.Random(seed)
    voices = [("espeak", f"{lang}+{v}", rng.randrange(130, 200), rng.randrange(30, 70))
              for lang, v in itertools.product(langs, ESPEAK_VARIANTS)]
    voices += [("flite", v, 0, 0) for v in flite_voices]
    rng.shuffle(voices)
    return voices


def held_out_voices(n: int = 5) -> list[tuple[str, str, int, int]]:
    """``n`` voices in an accent (``HELD_OUT_LANG``) that ``synthetic_voices`` never gives."""
    return synthetic_voices(999, langs=(HELD_OUT_LANG,), flite_voices=())[:n]


def say(word: str, voice: tuple[str, str, int, int]) -> bytes:
    engine, name, speed, pitch = voice
    return espeak(word, name, speed, pitch) if engine == "espeak" else flite(word, name)


def spoken_digits(per_label: int, seed: int = 0, labels: tuple[str, ...] = DIGITS
                  ) -> list[tuple[bytes, str]]:
    """``per_label`` synthetic clips of each digit word, each in another voice."""
    voices = synthetic_voices(seed)
    return [(say(word, voices[(i * 7 + j) % len(voices)]), word)
            for i, word in enumerate(labels) for j in range(per_label)]


def human_digits(labels: tuple[str, ...] = DIGITS) -> list[tuple[bytes, str]]:
    """The human recordings of the digits (one speaker, Allison, 8 kHz telephone WAVs)."""
    return [((HUMAN / f"{DIGITS.index(w)}.wav").read_bytes(), w) for w in labels]


def wave_of(wav: bytes) -> np.ndarray:
    """WAV bytes -> 16 kHz mono float32, as the service decodes."""
    import base64

    from adapters.modalities.audio import decode_audio

    return decode_audio([{"audio": base64.b64encode(wav).decode()}])[0]


def wav_bytes(wave: np.ndarray, rate: int = 16_000, fmt: str = "WAV", subtype: str | None = None,
              channels: int = 1) -> bytes:
    """A waveform as a file's bytes (``fmt``: WAV, FLAC, OGG), ``channels`` copies."""
    import soundfile as sf

    buf = io.BytesIO()
    x = np.repeat(np.asarray(wave, np.float32)[:, None], channels, axis=1)
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()
