"""LoRA training in a separate worker process, so that training cannot starve inference.

The server's inference threads keep all their cores; the worker runs at a lower CPU
priority (``nice``) with a fixed number of torch threads, loads its own copy of the
backbone (the served one is never touched) and talks to the server over pipes:

- stdin: one JSON line with the job (examples, options, backbone path, output file), then
  it is held open; EOF (the server died) makes the worker exit at once.
- stdout: JSON lines ``{"progress": [step, total, loss]}``, then ``{"done": meta}`` or
  ``{"error": {"code", "message", "status"}}``.
- the trained tensors go to a safetensors file the server named (never pickle).

Cancelling kills the process: nothing was published, because only the server publishes,
after the worker said "done".

Run as ``python -m adapters.lora_worker``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from .errors import TailorError
from .jobs import Cancelled, Job


class TrainingFailed(TailorError):
    status = 422
    code = "training_failed"


def train_in_subprocess(job: Job, *, examples: list[dict], options: dict[str, Any],
                        backbone_path: str | None, limits: dict[str, int], tmp_dir: Path,
                        threads: int = 1, nice: int = 10) -> tuple[dict, dict]:
    """Train in a worker process. Returns (tensors, meta); raises Cancelled or TailorError."""
    from safetensors.torch import load_file

    tmp_dir.mkdir(parents=True, exist_ok=True)
    out = tmp_dir / f"lora-{uuid.uuid4().hex}.safetensors"
    spec = {"examples": examples, "options": options, "backbone_path": backbone_path,
            "limits": limits, "out": str(out), "threads": threads, "nice": nice}
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    errlog = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty worker never blocks
    proc = subprocess.Popen([sys.executable, "-m", "adapters.lora_worker"], stdin=subprocess.PIPE,
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
                return load_file(str(out)), msg["done"]
            elif "error" in msg:
                e = msg["error"]
                err = TrainingFailed(e["message"], code=e["code"])
                err.status = int(e.get("status", 422))
                raise err
        if job.cancel_requested.is_set():
            raise Cancelled("cancelled")
        if proc.wait() < 0:  # killed by a signal: the server (its process group) is stopping
            raise TrainingFailed("interrupted: the training worker was stopped (server shutdown); "
                                 "nothing was published. Submit it again", code="interrupted")
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


# -- the worker side -------------------------------------------------------------------------
def _send(msg: dict) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _exit_when_parent_dies() -> None:
    sys.stdin.read()  # blocks until the server closes the pipe or dies
    os._exit(3)


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    threading.Thread(target=_exit_when_parent_dies, daemon=True).start()
    if spec.get("nice"):
        os.nice(int(spec["nice"]))
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(max(1, int(spec.get("threads") or 1)))
    from .backbone import Backbone
    from .config import Limits
    from .lora_trainer import train_lora

    try:
        backbone = Backbone(spec.get("backbone_path"))
        art = train_lora(backbone, spec["examples"], spec["options"], Limits(**spec["limits"]),
                         progress=lambda s, t, loss: _send({"progress": [s, t, loss]}))
        save_file({k: v.contiguous() for k, v in art.tensors().items()}, spec["out"])
        _send({"done": art.meta()})
    except TailorError as e:
        _send({"error": {"code": e.code, "message": e.message, "status": e.status}})
    except Exception as e:  # noqa: BLE001 - reported to the job, the server logs it
        _send({"error": {"code": "training_failed", "message": f"training failed: {e!r}",
                         "status": 500}})


if __name__ == "__main__":
    main()
