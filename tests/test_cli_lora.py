"""The LoRA progress bar: pure rendering and the polling loop against a scripted server."""
from __future__ import annotations

import io

import pytest

from service.cli_lora import follow_job, render_bar


@pytest.mark.parametrize("step, total, loss, expect", [
    (0, 0, None, "[------------------------------]    0/0     queued"),
    (5, 10, 0.25, "[###############---------------]    5/10    loss 0.2500  running"),
    (10, 10, 0.1, "[##############################]   10/10    loss 0.1000  running"),
])
def test_render_bar(step, total, loss, expect):
    status = "queued" if total == 0 else "running"
    assert render_bar({"progress": {"step": step, "total": total}, "loss": loss, "status": status}) == expect


def test_follow_job_polls_until_done_and_prints_quality():
    states = [("queued", 0, 0), ("running", 1, 4), ("running", 4, 4), ("succeeded", 4, 4)]
    calls = []

    def call(method, path, **kw):
        calls.append(path)
        if path.startswith("/v1/jobs/"):
            st, step, total = states.pop(0) if len(states) > 1 else states[0]
            return {"status": st, "progress": {"step": step, "total": total}, "loss": 0.5,
                    "result": {"adapter": "q@1"} if st == "succeeded" else None}
        return {"ref": "q@1", "metrics": {"cv_accuracy_head_only": 0.61, "train_seconds": 9.5}, "warnings": []}

    out = io.StringIO()
    job = follow_job(call, "abc", out=out, interval=0)
    assert job["status"] == "succeeded"
    text = out.getvalue()
    assert "1/4" in text and "4/4" in text and "0.610" in text and "q@1 is ready" in text
    assert calls[-1] == "/v1/adapters/q@1"
