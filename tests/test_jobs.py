"""The background job manager: states, progress, cancel, bounded queue, restart recovery.
Pure bookkeeping (each test job's payload carries a small function that the test's executor
calls), so no model is loaded here."""
from __future__ import annotations

import json
import threading

import pytest

from adapters.errors import Conflict, JobNotFound, Overloaded
from adapters.training.jobs import Cancelled, JobManager


def RUN(job):
    return job.payload["work"](job)


def _wait_status(m: JobManager, job_id: str, status: str, tenant: str = "t") -> None:
    import time

    for _ in range(200):
        if m.get(tenant, job_id).status == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"job never reached {status}: {m.get(tenant, job_id)}")


def test_job_runs_with_progress_and_is_persisted(tmp_path):
    m = JobManager(tmp_path, max_queued=2, run=RUN)

    def work(job):
        for s in range(1, 4):
            job.report(s, 3, 1.0 / s)
        return {"adapter": "x@1"}

    rec = m.submit("lora_train", "t", "x", {"work": work})
    assert rec.status == "queued"
    done = m.wait("t", rec.id, timeout=10)
    assert done.status == "succeeded" and done.progress == {"step": 3, "total": 3}
    assert done.loss == pytest.approx(1 / 3, abs=1e-5) and done.result == {"adapter": "x@1"}
    assert done.started_at and done.finished_at
    on_disk = json.loads((tmp_path / f"{rec.id}.json").read_text())
    assert on_disk["status"] == "succeeded"
    m.close()


def test_failure_is_reported_not_raised(tmp_path):
    m = JobManager(tmp_path, run=RUN)
    rec = m.submit("lora_train", "t", "x", {"work": lambda job: 1 / 0})
    done = m.wait("t", rec.id, timeout=10)
    assert done.status == "failed" and done.error["code"] == "internal_error"
    m.close()


def test_cancel_running_and_queued_jobs(tmp_path):
    m = JobManager(tmp_path, max_queued=3, concurrency=1, run=RUN)
    started = threading.Event()

    def slow(job):
        started.set()
        while not job.cancel_requested.wait(0.01):
            pass
        raise Cancelled("stop")

    running = m.submit("lora_train", "t", "a", {"work": slow})
    queued = m.submit("lora_train", "t", "b", {"work": lambda job: {"never": "runs"}})
    assert started.wait(5)
    assert [(r.adapter, r.status) for r in m.active("t")] == [("a", "running"), ("b", "queued")]
    assert m.active("other-tenant") == []
    assert m.cancel("t", queued.id).status == "cancelled"
    m.cancel("t", running.id)
    _wait_status(m, running.id, "cancelled")
    assert m.get("t", queued.id).status == "cancelled"
    assert m.active("t") == []  # finished jobs are no longer listed as training
    with pytest.raises(Conflict):
        m.cancel("t", running.id)  # already finished
    m.close()


def test_full_queue_answers_overloaded_with_retry_after(tmp_path):
    m = JobManager(tmp_path, max_queued=1, concurrency=1, run=RUN)
    gate = threading.Event()
    first = m.submit("lora_train", "t", "a", {"work": lambda job: gate.wait(5) and {}})
    _wait_status(m, first.id, "running")
    m.submit("lora_train", "t", "b", {"work": lambda job: {}})
    with pytest.raises(Overloaded) as e:
        m.submit("lora_train", "t", "c", {"work": lambda job: {}})
    assert e.value.status == 429 and "Retry-After" in e.value.headers
    gate.set()
    m.close()


def test_restart_reports_interrupted_jobs_as_failed(tmp_path):
    m = JobManager(tmp_path, max_queued=2, run=RUN)
    gate = threading.Event()
    running = m.submit("lora_train", "t", "a", {"work": lambda job: gate.wait(5) and {}})
    _wait_status(m, running.id, "running")
    queued = m.submit("lora_train", "t", "b", {"work": lambda job: {}})
    # a replica on another host sharing the folder must not fail this live job
    other = tmp_path / "abcdefabcdefabcdefabcdefabcdefab.json"
    rec = json.loads((tmp_path / f"{running.id}.json").read_text())
    other.write_text(json.dumps({**rec, "id": "abcdefabcdefabcdefabcdefabcdefab", "owner": "another-host:1"}))
    # a new manager on the same folder = the server after a restart (owner gone)
    after = JobManager(tmp_path, run=RUN)
    assert after.get("t", "abcdefabcdefabcdefabcdefabcdefab").status == "running"
    for job_id in (running.id, queued.id):
        rec = after.get("t", job_id)
        assert rec.status == "failed" and rec.error["code"] == "interrupted"
    gate.set()
    m.close()
    after.close()


@pytest.mark.parametrize("tenant, job_id", [("x", None), ("t", "../../etc/passwd"), ("t", "ffff"), ("t", "f" * 31), ("t", "f" * 33)])
def test_unknown_or_foreign_job_is_404(tmp_path, tenant, job_id):
    m = JobManager(tmp_path, run=RUN)
    rec = m.submit("lora_train", "t", "a", {"work": lambda job: {}})
    with pytest.raises(JobNotFound):
        m.get(tenant, job_id or rec.id)
    m.close()


def test_finished_jobs_leave_memory_but_stay_readable(tmp_path, monkeypatch):
    monkeypatch.setattr(JobManager, "KEEP_FINISHED", 1)
    m = JobManager(tmp_path, run=RUN)
    ids = [m.submit("lora_train", "t", "a", {"work": lambda job: {"n": 1}}).id for _ in range(3)]
    for i in ids:
        m.wait("t", i, timeout=10)
    assert len(m._jobs) == 1
    assert [m.get("t", i).status for i in ids] == ["succeeded"] * 3
    m.close()


def test_restart_fails_a_job_whose_owner_pid_now_belongs_to_another_process(tmp_path):
    # After a container restart pids start over: the dead owner's pid may be some other live
    # process. Its start time differs, so the job still reads as interrupted; a job whose
    # owner really is alive (pid and start time match) is left alone.
    import os
    import socket
    import subprocess
    import sys

    from adapters.training.jobs import _start_time

    if _start_time(os.getpid()) is None:
        pytest.skip("needs /proc")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        host, pid = socket.gethostname(), other.pid
        base = {"kind": "lora_train", "tenant": "t", "adapter": "a", "status": "running"}
        (tmp_path / "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.json").write_text(json.dumps(
            {**base, "id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "owner": f"{host}:{pid}:{int(_start_time(pid)) - 1}"}))
        (tmp_path / "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.json").write_text(json.dumps(
            {**base, "id": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "owner": f"{host}:{pid}:{_start_time(pid)}"}))
        (tmp_path / ".cccc.0123.tmp").write_text("{")  # a record write cut short
        os.utime(tmp_path / ".cccc.0123.tmp", (0, 0))
        m = JobManager(tmp_path, run=RUN)
        assert m.get("t", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").status == "failed"
        assert m.get("t", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").error["code"] == "interrupted"
        assert m.get("t", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb").status == "running"
        assert not (tmp_path / ".cccc.0123.tmp").exists()
        m.close()
    finally:
        other.kill()
        other.wait()


def test_a_job_that_began_publishing_can_no_longer_be_cancelled(tmp_path):
    """The publish (with its fsyncs) runs outside the manager's lock: a cancel either lands
    before ``begin_publish`` (nothing published) or is refused with 409 after it."""
    m = JobManager(tmp_path, run=RUN)
    publishing, release = threading.Event(), threading.Event()

    def work(job):
        job.begin_publish()
        publishing.set()
        release.wait(5)
        return {"adapter": "a@1"}

    rec = m.submit("lora_train", "t", "a", {"work": work})
    assert publishing.wait(5)
    with pytest.raises(Conflict) as e:
        m.cancel("t", rec.id)
    assert "publishing" in e.value.message
    release.set()
    assert m.wait("t", rec.id, timeout=5).status == "succeeded"

    cancelled_first = threading.Event()

    def late(job):
        cancelled_first.wait(5)
        job.begin_publish()  # raises Cancelled: the cancel came first
        return {"never": "published"}

    rec = m.submit("lora_train", "t", "b", {"work": late})
    _wait_status(m, rec.id, "running")
    m.cancel("t", rec.id)
    cancelled_first.set()
    _wait_status(m, rec.id, "cancelled")
    m.close()
