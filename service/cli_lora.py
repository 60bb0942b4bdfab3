"""Command-line progress for LoRA training jobs: poll ``GET /v1/jobs/{id}``, draw a bar,
and print the adapter's quality estimate when the job is done.

``service.cli`` calls ``follow_job`` after ``tailor create NAME --kind lora``. Ctrl-C stops
watching (the job keeps running on the server; ``DELETE /v1/jobs/{id}`` cancels it).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from adapters.states import FINISHED, JobState  # light: no torch

Call = Callable[..., Any]  # Client.call(method, path, **kw) -> parsed JSON


def render_bar(job: dict[str, Any], width: int = 30) -> str:
    """One line: ``[#######-------]  12/40  loss 0.1234  running``."""
    step, total = job["progress"]["step"], job["progress"]["total"]
    frac = step / total if total else 0.0
    filled = int(round(frac * width))
    loss = f"  loss {job['loss']:.4f}" if job.get("loss") is not None else ""
    return f"[{'#' * filled}{'-' * (width - filled)}] {step:>4}/{total:<4}{loss}  {job['status']}"


def quality_lines(record: dict[str, Any]) -> list[str]:
    """The adapter is ready: what its kind's metrics model says about it, and the warnings."""
    from adapters.errors import TailorError
    from adapters.kinds import get_kind  # the kinds load torch: only once a job succeeded

    ref = record.get("ref", record.get("name"))
    try:
        said = get_kind(record.get("kind")).metrics.read(record.get("metrics", {}), ref).describe()
    except TailorError:  # a kind this client does not know, or metrics it cannot read
        said = []
    return [f"adapter {ref} is ready", *(f"  {line}" for line in said),
            *(f"  warning: {w}" for w in record.get("warnings", []))]


def follow_job(call: Call, job_id: str, out: TextIO = sys.stderr, interval: float = 0.5,
               timeout: float = 3600.0) -> dict[str, Any]:
    """Poll a job until it ends, drawing a progress bar on ``out``. Returns the last job
    record; prints the adapter's quality estimate when it succeeded."""
    tty = out.isatty()
    last = ""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    try:
        while time.monotonic() < deadline:
            job = call("GET", f"/v1/jobs/{job_id}")
            line = render_bar(job)
            if line != last:
                out.write(("\r" + line) if tty else line + "\n")
                out.flush()
                last = line
            if job["status"] in FINISHED:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        out.write(f"\nstopped watching; the job goes on. Cancel: DELETE /v1/jobs/{job_id}\n")
        return job
    if tty:
        out.write("\n")
    if job.get("status") == JobState.SUCCEEDED:
        record = call("GET", f"/v1/adapters/{job['result']['adapter']}")
        out.write("\n".join(quality_lines(record)) + "\n")
    elif job.get("status") == JobState.FAILED:
        err = job.get("error") or {}
        out.write(f"training failed: {err.get('code')}: {err.get('message')}\n")
    elif job.get("status") == JobState.CANCELLED:
        out.write("training was cancelled; no version was published\n")
    return job
