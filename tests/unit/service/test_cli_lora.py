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
        return {"ref": "q@1", "kind": "lora", "warnings": [], "metrics": {
            "examples": 8, "per_label": {"a": 4, "b": 4}, "train_loss": 0.1, "train_seconds": 9.5,
            "cv_accuracy_head_only": 0.61}}

    out = io.StringIO()
    job = follow_job(call, "abc", out=out, interval=0)
    assert job["status"] == "succeeded"
    text = out.getvalue()
    assert "1/4" in text and "4/4" in text and "0.610" in text and "q@1 is ready" in text
    assert calls[-1] == "/v1/adapters/q@1"


@pytest.mark.parametrize("record, expect", [
    ({"kind": "lora", "metrics": {"examples": 8, "per_label": {"a": 4, "b": 4}, "train_loss": 0.1,
                                  "train_seconds": 9.5, "cv_accuracy_head_only": 0.61,
                                  "cv_accuracy_tuned": 0.9, "a_key_of_a_newer_server": 1}},
     ["head on frozen embeddings 0.610 (a lower bound", "tuned embeddings: 0.900", "trained in 9.5 s"]),
    ({"kind": "auto", "metrics": {"examples": 8, "per_label": {"a": 4, "b": 4}, "recipe": "LoRA",
                                  "estimate": 0.75, "estimate_head": 0.625, "estimate_folds": 2,
                                  "train_seconds": 3.0, "selection": {"decision": "promoted"}}},
     ["(LoRA): cross-validated accuracy 0.750, the head recipe's 0.625 on the same 2 folds"]),
    ({"kind": "head", "metrics": {"examples": 8, "per_label": {"a": 4, "b": 4}, "cv_accuracy": 0.5,
                                  "cv_folds": 4, "calibration_scale": 2.0}},
     ["quality estimate: cv_accuracy 0.500"]),
    ({"kind": "a-kind-of-a-newer-server", "metrics": {}}, []),
    ({"kind": "lora", "metrics": {"examples": "many"}}, []),  # unreadable: no lines, no crash
])
def test_quality_lines_come_from_the_kinds_metrics_model(record, expect):
    from service.cli_lora import quality_lines

    lines = quality_lines({"ref": "q@1", "warnings": ["thin data"], **record})
    assert lines[0] == "adapter q@1 is ready" and lines[-1] == "  warning: thin data"
    if not expect:
        assert lines == ["adapter q@1 is ready", "  warning: thin data"]
    for fragment in expect:
        assert any(fragment in line for line in lines), (fragment, lines)
