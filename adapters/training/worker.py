"""Training in a separate worker process, so that training cannot starve inference: the
parent-side driver. The worker's own side is ``adapters/worker_main.py``.

The server's inference threads keep all their cores; the worker runs at a lower CPU
priority (``nice``) with a fixed number of torch threads, loads its own copy of the
backbone (the served one is never touched) and talks to the server over pipes:

- stdin: one JSON line with the job (kind, stage, examples, options, descriptions, unlabeled
  texts, backbone path, output file),
  then it is held open; EOF (the server died) makes the worker exit at once.
- stdout: JSON lines ``{"progress": [step, total, loss]}``, then ``{"done": meta}`` or
  ``{"error": {"code", "message", "status"}}``.
- the trained tensors go to a safetensors file the server named (never pickle).

Cancelling kills the process: nothing was published, because only the server publishes,
after the worker said "done". A worker killed from outside (the OOM killer) raises
``interrupted``, which the job runner retries while attempts are left; one stopped with
SIGTERM raises ``stopped``: BentoML's supervisor stops a worker's children that way when the
server shuts down (circus ``stop_children``), and the job is handed back unspent.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TailorError
from ..storage import Artifact
from .jobs import Cancelled, Job


class TrainingFailed(TailorError):
    status = 422
    code = "training_failed"


@dataclass(frozen=True)
class WorkerConfig:
    """How training worker processes run (TAILOR_TRAIN_THREADS, TAILOR_TRAIN_NICE)."""

    threads: int = 1
    nice: int = 10


def train_in_subprocess(job: Job, *, request: dict[str, Any], backbone_path: str | None,
                        limits: dict[str, int], tmp_dir: Path,
                        config: WorkerConfig = WorkerConfig()) -> Artifact:
    """Train in a worker process. ``request``: what to train, as data (kind, stage,
    examples, options, label_descriptions, unlabeled). Returns the artifact; raises
    Cancelled or TailorError."""
    from safetensors.torch import load_file

    tmp_dir.mkdir(parents=True, exist_ok=True)
    out = tmp_dir / f"train-{uuid.uuid4().hex}.safetensors"
    spec = {**request, "backbone_path": backbone_path, "limits": limits, "out": str(out),
            "threads": config.threads, "nice": config.nice}
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    errlog = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty worker never blocks
    proc = subprocess.Popen([sys.executable, "-m", "adapters.worker_main"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=errlog, env=env, text=True)
    watcher = threading.Thread(target=_kill_on_cancel, args=(job, proc), daemon=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(spec) + "\n")
        proc.stdin.flush()
        watcher.start()
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:  # a library printed to stdout: not ours, skip it
                continue
            if not isinstance(msg, dict):
                continue
            if "progress" in msg:
                job.report(*msg["progress"])
            elif "done" in msg:
                return Artifact.from_meta(msg["done"], load_file(str(out)))
            elif "error" in msg:
                e = msg["error"]
                err = TrainingFailed(e["message"], code=e["code"])
                err.status = int(e.get("status", 422))
                raise err
        if job.cancel_requested.is_set():
            raise Cancelled("cancelled")
        if proc.wait() == -signal.SIGTERM:  # BentoML stops a worker's children with it
            raise TrainingFailed("the training worker was stopped with the server (SIGTERM); "
                                 "the job goes back to the queue", code="stopped")
        if proc.wait() < 0:  # killed by a signal: the OOM killer, an operator
            raise TrainingFailed(f"the training worker process was killed (signal {-proc.wait()}"
                                 f"{', probably out of memory' if proc.wait() == -9 else ''}); "
                                 "nothing was published", code="interrupted")
        errlog.seek(0)
        stderr = errlog.read()[-2000:]
        raise RuntimeError(f"the training worker exited with {proc.wait()}: {stderr}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        errlog.close()
        out.unlink(missing_ok=True)


def _kill_on_cancel(job: Job, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        if job.cancel_requested.wait(0.2):
            proc.kill()
            return
