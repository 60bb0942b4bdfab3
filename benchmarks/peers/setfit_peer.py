"""Call SetFit (benchmarks/peers/setfit_runner.py) in its own virtual environment through a
subprocess, from the project's environment. ``SETFIT_PYTHON`` points at that environment's
interpreter (default /work/venvs/setfit/bin/python; see benchmarks/research/quality.md for
how it is made)."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

RUNNER = Path(__file__).resolve().parent / "setfit_runner.py"
DEFAULT_PYTHON = "/work/venvs/setfit/bin/python"


def setfit_python() -> str:
    return os.environ.get("SETFIT_PYTHON", DEFAULT_PYTHON)


def available() -> bool:
    return Path(setfit_python()).exists()


def run_setfit(model_path: str, train: list[dict], test_texts: list[str], seed: int,
               threads: int = 1, arguments: dict | None = None, nice: int = 0,
               timeout: float = 3600) -> dict:
    """Train SetFit's default recipe on ``train`` and predict ``test_texts``. Returns the
    runner's answer (predictions, train_seconds, predict_seconds, versions)."""
    with tempfile.TemporaryDirectory() as d:
        job, out = Path(d) / "job.json", Path(d) / "out.json"
        job.write_text(json.dumps({"model_path": str(model_path), "seed": seed, "threads": threads,
                                   "train": train, "test": test_texts,
                                   "arguments": arguments or {}}))
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_DISABLED": "true",
               "OMP_NUM_THREADS": str(threads)}
        cmd = ([*(["nice", "-n", str(nice)] if nice else []), setfit_python(), str(RUNNER),
                str(job), str(out)])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"setfit runner failed ({proc.returncode}): {proc.stderr[-3000:]}")
        return json.loads(out.read_text())
