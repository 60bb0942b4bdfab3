"""Audio adapters in ONNX bundles: what export needs to know about the audio modality.

The speech-embedding backbone is ONNX already (adapters/encoders/audio.py): its two frozen
models travel in the bundle as they are (``melspectrogram.onnx``, ``embedding_model.onnx``,
written by ``AudioEncoder.write_preprocessor``), and the exported graph is what Tailor adds:

    frames [batch, steps, 96], mask [batch, steps] -> mean pooling -> L2 norm -> head
        -> probabilities, logits

The front end (scale to int16 range, mel, windows of 76 frames by 8) is described as data in
the manifest ("preprocessing"), and the README runs ``speech_frames``, the very function the
service runs (its source is copied into the README). Parity is checked twice: the front end
from the BUNDLE's files against the served encoder (``front_end_parity``), and onnxruntime
against PyTorch on the same frames (export/parity.py, as for text and images).
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np
import torch

from adapters.encoders import TorchEncoder
from adapters.encoders.audio import speech_frames
from adapters.modalities.audio import AudioLimits, decode_audio

from .onnx_config import OnnxConfig
from .parity import Case, feed_of

_BATCH_STEPS = {0: "batch", 1: "steps"}
AUDIO_CLASSIFIER = OnnxConfig(inputs=("frames", "mask"), outputs=("probabilities", "logits"),
                              dynamic_axes={"frames": _BATCH_STEPS, "mask": _BATCH_STEPS,
                                            "probabilities": {0: "batch"},
                                            "logits": {0: "batch"}})

# The graph Tailor exports holds no backbone weights (pooling + the head, which stays fp32),
# and the front end ships as its authors published it.
NO_INT8 = ("the graph is mean pooling + the head (no backbone weights to quantize), and the "
           "speech front end ships as published")


def sample_waves(seed: int = 0) -> list[np.ndarray]:
    """Fixed clips of odd lengths (shorter than one window, one window, several seconds):
    noise, a chirp and silence, so padding and masking show in the parity check."""
    rng = np.random.default_rng(seed)
    t = np.arange(40_000) / 16_000
    chirp = (0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t)).astype(np.float32)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (3_000, 12_400, 27_777)] \
        + [chirp, np.zeros(16_000, np.float32)]


def example_inputs(encoder: TorchEncoder) -> tuple[torch.Tensor, ...]:
    batch = encoder.collate(encoder.prepare(sample_waves()[:2]))
    return tuple(batch[name] for name in encoder.graph_inputs)


def own_waves(examples: Sequence[Any]) -> list[np.ndarray]:
    """The adapter's stored examples ({"audio": base64, "label"}), decoded as they were when
    it was created (they passed the limits then)."""
    items = [e for e in examples if isinstance(e, dict) and isinstance(e.get("audio"), str)]
    return decode_audio(items, AudioLimits(max_request_seconds=1e12), where="examples") \
        if items else []


def parity_cases(encoder: TorchEncoder, examples: Sequence[Any] = (),
                 unlabeled: Sequence[Any] = ()) -> list[Case]:
    """The adapter's own clips (mixed lengths: padding and masks), fixed odd clips and a
    batch of one (audio adapters store no unlabeled inputs)."""
    own = encoder.prepare(own_waves(examples))
    cases: list[Case] = [(f"examples[{i}:{i + 16}]", feed_of(encoder, own[i:i + 16]))
                         for i in range(0, len(own), 16)]
    sample = encoder.prepare(sample_waves())
    cases.append(("sample_odd_lengths", feed_of(encoder, sample)))
    cases.append(("batch_1", feed_of(encoder, sample[:1])))
    return cases


def front_end_parity(encoder: TorchEncoder, examples: Sequence[Any] = ()) -> dict[str, Any]:
    """``speech_frames`` on fresh sessions of the files the bundle ships, against the served
    encoder's ``prepare``: what the README computes is what the adapter was trained on."""
    import onnxruntime as ort

    spec = encoder.describe_preprocessing()
    mel, emb = (ort.InferenceSession((encoder.model_dir / spec[k]).read_bytes(),
                                     providers=["CPUExecutionProvider"])
                for k in ("mel_model", "embedding_model"))
    waves = own_waves(examples)[:32] + sample_waves()
    served = encoder.prepare(waves)
    diff = max(float(np.abs(speech_frames(w, mel, emb, spec["min_samples"]) - s.numpy()).max())
               for w, s in zip(waves, served))
    if diff > 1e-5:
        raise ValueError(f"the bundle's front end differs from the served one by {diff:.3g}")
    return {"rows": len(waves), "max_abs_diff": diff}


def manifest_extra(encoder: TorchEncoder, examples: Sequence[Any] = ()) -> dict[str, Any]:
    return {"modality": "audio", "preprocessing": encoder.describe_preprocessing(),
            "front_end_parity": front_end_parity(encoder, examples)}


def _read_wav(path):
    """A 16-bit PCM WAV -> 16 kHz mono float32 in [-1, 1] (the stdlib's wave + numpy; for
    FLAC/OGG or other rates use soundfile + soxr, as the service does)."""
    import wave

    with wave.open(path) as w:
        assert w.getsampwidth() == 2 and w.getframerate() == 16000, "16-bit PCM at 16 kHz"
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
    return (x.astype(np.float32) / 32768.0).mean(axis=1)


def readme(manifest: dict[str, Any]) -> str:
    a, p = manifest["adapter"], manifest["preprocessing"]
    return f"""# {a['ref']}: ONNX audio classifier exported by Tailor

Backbone {manifest['backbone']['name']} (sha256 {manifest['backbone']['sha256'][:12]}...):
openWakeWord's mel front end (`{p['mel_model']}`) and Google's speech-embedding CNN
(`{p['embedding_model']}`), frozen, then `model.onnx`: mean pooling of the {p['dim']}-d frame
embeddings + L2 norm + the adapter's head. Opset {manifest['opset']}, quantization:
{manifest['quantization']['mode']}. Parity at export time is in `manifest.json` (`parity`:
onnxruntime against PyTorch; `front_end_parity`: the code below against the service).

Input: {p['sample_rate']} Hz mono float32 in [-1, 1]. `model.onnx` takes `frames` (float32,
[batch, steps, {p['dim']}]) and `mask` ([batch, steps], 1 for real steps, 0 for padding).
Outputs: `probabilities` and `logits` ([batch, {len(manifest['labels'])}], label order in
`labels.json`). Needs only `pip install onnxruntime numpy` (no torch):

```python
import json

import numpy as np
import onnxruntime as ort

LABELS = json.load(open("labels.json"))
SPEC = json.load(open("manifest.json"))["preprocessing"]
mel, emb, head = (ort.InferenceSession(f, providers=["CPUExecutionProvider"])
                  for f in (SPEC["mel_model"], SPEC["embedding_model"], "model.onnx"))

{inspect.getsource(speech_frames)}

{inspect.getsource(_read_wav)}

paths = ["first.wav", "second.wav"]
rows = [speech_frames(_read_wav(p), mel, emb, SPEC["min_samples"]) for p in paths]
steps = max(len(r) for r in rows)
frames = np.zeros((len(rows), steps, SPEC["dim"]), np.float32)
mask = np.zeros((len(rows), steps), np.float32)
for i, r in enumerate(rows):
    frames[i, :len(r)], mask[i, :len(r)] = r, 1.0
probs, logits = head.run(["probabilities", "logits"], {{"frames": frames, "mask": mask}})
for path, row in zip(paths, probs):
    print(path, "->", LABELS[int(np.argmax(row))], dict(zip(LABELS, row.round(4))))
```
"""

