"""Command-line progress for LoRA training jobs: poll ``GET /v1/jobs/{id}``, draw a bar,
and print the adapter's quality estimate when the job is done.

``service.cli`` calls ``follow_job`` after ``tailor create NAME --kind lora``. Ctrl-C stops
watching (the job keeps running on the server; ``DELETE /v1/jobs/{id}`` cancels it).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

Call = Callable[..., Any]  # Client.call(method, path, **kw) -> parsed JSON
FINAL = ("succeeded", "failed", "cancelled")


def render_bar(job: dict[str, Any], width: int = 30) -> str:
    """One line: ``[#######-------]  12/40  loss 0.1234  running``."""
    step, total = job["progress"]["step"], job["progress"]["total"]
    frac = step / total if total else 0.0
    filled = int(round(frac * width))
    loss = f"  loss {job['loss']:.4f}" if job.get("loss") is not None else ""
    return f"[{'#' * filled}{'-' * (width - filled)}] {step:>4}/{total:<4}{loss}  {job['status']}"


def quality_lines(record: dict[str, Any]) -> list[str]:
    m = record.get("metrics", {})
    lines = [f"adapter {record.get('ref', record.get('name'))} is ready"]
    if "cv_accuracy_head_only" in m:
        lines.append(f"  quality estimate: cross-validated accuracy of a head on frozen embeddings "
                     f"{m['cv_accuracy_head_only']:.3f} (a lower bound; LoRA usually does better)")
    if "cv_accuracy_tuned" in m:
        lines.append(f"  on the tuned embeddings: {m['cv_accuracy_tuned']:.3f} (optimistic: LoRA saw "
                     "every example)")
    if "train_seconds" in m:
        lines.append(f"  trained in {m['train_seconds']:.1f} s")
    lines += [f"  warning: {w}" for w in record.get("warnings", [])]
    return lines


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
            if job["status"] in FINAL:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        out.write(f"\nstopped watching; the job goes on. Cancel: DELETE /v1/jobs/{job_id}\n")
        return job
    if tty:
        out.write("\n")
    if job.get("status") == "succeeded":
        record = call("GET", f"/v1/adapters/{job['result']['adapter']}")
        out.write("\n".join(quality_lines(record)) + "\n")
    elif job.get("status") == "failed":
        err = job.get("error") or {}
        out.write(f"training failed: {err.get('code')}: {err.get('message')}\n")
    elif job.get("status") == "cancelled":
        out.write("training was cancelled; no version was published\n")
    return job
