"""Run an exported bundle the way its README says (the README's own code, in a fresh
interpreter without torch: onnxruntime + tokenizers for text, numpy + Pillow for images,
numpy for sound) and
compare it with what the service answers.

The parity a test asserts is computed here, from the bundle's outputs and the service's
answers; the ``parity`` the exporter writes into manifest.json is what the exporter says
about itself, and a test that only reads it cannot catch an exporter that is wrong about
its own graph."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

# what each README's example feeds the model: replaced by the test's inputs
README_INPUTS = {"text": '["first text", "second text"]', "image": '["first.png", "second.jpg"]',
                 "audio": '["first.wav", "second.wav"]'}


def unzip(bundle: bytes | Path, dest: Path) -> Path:
    """The bundle (a zip file's path, or its bytes as HTTP answered them) unpacked in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(bundle) if isinstance(bundle, bytes) else bundle) as z:
        z.extractall(dest)
    return dest


def run_readme(folder: Path, inputs: list) -> np.ndarray:
    """[len(inputs), labels] probabilities from the README's code run as printed, on
    ``inputs``: texts, or encoded PNG/JPEG or WAV bytes (written beside the model as files)."""
    modality = json.loads((folder / "manifest.json").read_text()).get("modality", "text")
    if modality != "text":  # files: images, sounds
        names = []
        for i, blob in enumerate(inputs):
            (folder / f"input-{i}.{modality}").write_bytes(blob)
            names.append(f"input-{i}.{modality}")
        inputs = names
    (folder / "inputs.json").write_text(json.dumps(inputs))
    readme = (folder / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert README_INPUTS[modality] in code, "the README's example inputs moved: update tests/bundles.py"
    code = code.replace(README_INPUTS[modality], 'json.load(open("inputs.json"))')
    code += ("\nimport sys\nassert 'torch' not in sys.modules, 'the bundle must run without torch'\n"
             "json.dump(probs.tolist(), open('probs.json', 'w'))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.array(json.loads((folder / "probs.json").read_text()))


def agreement(folder: Path, inputs: list, served: list[dict]) -> dict[str, float]:
    """Run the bundle on ``inputs`` and compare with ``served``, the service's predictions of
    the same inputs (``{"label", "scores"}`` each): top-1 agreement and the largest
    difference of any probability."""
    probs = run_readme(folder, inputs)
    labels = json.loads((folder / "labels.json").read_text())
    assert probs.shape == (len(served), len(labels))
    ours = [labels[i] for i in probs.argmax(1)]
    served_probs = np.array([[p["scores"][lab] for lab in labels] for p in served])
    return {"top1_agreement": float(np.mean([a == p["label"] for a, p in zip(ours, served)])),
            "max_abs_diff": float(np.abs(probs - served_probs).max()), "rows": len(served)}
