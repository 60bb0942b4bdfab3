"""The job runner on the shared store: states, progress, cancel, the bounded queue, a
submit-only process beside trainer processes, shutdown hand-back, retries after a lost
trainer or a killed training process, fencing of a stalled trainer. Pure bookkeeping: each
job's JSON payload names a small function of this module that the executor calls, so no
model is loaded here. Real processes race and are killed with SIGKILL at the end."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import threading
import time

import pytest

from adapters.errors import Conflict, InvalidExamples, JobNotFound, Overloaded, TailorError
from adapters.training import lease_queue
from adapters.training.jobs import Cancelled, JobManager

FORK = mp.get_context("fork")
GATE = threading.Event()
PUBLISHED: list[tuple[str, int]] = []  # (job id, attempt) of every publish in this process
STOPPED: list[str] = []


def _progress(job):
    for s in range(1, 4):
        job.report(s, 3, 1.0 / s)
    return {"adapter": "x@1"}


def _until_cancelled(job):
    while not job.cancel_requested.wait(0.01):
        pass
    raise Cancelled("stop")


def _publish(job):
    job.begin_publish()
    PUBLISHED.append((job.id, len(job.record.attempts)))
    return {"attempt": len(job.record.attempts)}


def _killed_once(job):  # the training process was killed (OOM) on the first attempt
    if len(job.record.attempts) == 1:
        raise TailorError("the training worker process was killed (signal 9)", code="interrupted")
    return _publish(job)


def _stall_once(job):  # the first attempt stalls past its lease (its heartbeat is stuck)
    if len(job.record.attempts) == 1:
        job.renew = lambda *a, **k: None
        time.sleep(1.5)
    return _publish(job)


def _stopped_once(job):  # the supervisor stopped the training process (server shutdown)
    if not STOPPED:
        STOPPED.append(job.id)
        raise TailorError("stopped with the server (SIGTERM)", code="stopped")
    return _publish(job)


WORK = {
    "stopped_once": _stopped_once,
    "progress": _progress,
    "bug": lambda job: 1 / 0,
    "bad": lambda job: (_ for _ in ()).throw(InvalidExamples("every label needs 2 examples")),
    "until_cancelled": _until_cancelled,
    "gate": lambda job: GATE.wait(10) and {},
    "publish": _publish,
    "killed_once": _killed_once,
    "stall_once": _stall_once,
    "quick": lambda job: {"by": os.getpid()},
}


def RUN(job):
    return WORK[job.payload["work"]](job)


@pytest.fixture(autouse=True)
def _reset():
    GATE.clear()
    PUBLISHED.clear()
    STOPPED.clear()
    yield
    GATE.set()


def _wait_status(m: JobManager, job_id: str, status: str, tenant: str = "t", timeout=10) -> None:
    deadline = time.monotonic() + timeout
    while m.get(tenant, job_id).status != status:
        assert time.monotonic() < deadline, f"job never reached {status}: {m.get(tenant, job_id)}"
        time.sleep(0.02)


def test_job_runs_with_progress_and_is_persisted_in_the_store(tmp_path):
    m = JobManager(tmp_path, max_queued=2, run=RUN)
    rec = m.submit("lora_train", "t", "x", {"work": "progress"})
    assert rec.status == "queued"
    done = m.wait("t", rec.id, timeout=10)
    assert done.status == "succeeded" and done.progress == {"step": 3, "total": 3}
    assert done.loss == pytest.approx(1 / 3, abs=1e-5) and done.result == {"adapter": "x@1"}
    view = done.public()
    assert view["started_at"] and view["finished_at"] and view["attempts"] == 1
    on_disk = json.loads((tmp_path / "done" / f"{rec.id}.json").read_text())
    assert on_disk["status"] == "succeeded" and "payload" not in on_disk
    assert not (tmp_path / "payloads" / f"{rec.id}.json").exists()  # removed when finished
    m.close()


def test_failures_are_reported_not_raised_and_not_retried(tmp_path):
    m = JobManager(tmp_path, run=RUN)
    bug = m.submit("lora_train", "t", "x", {"work": "bug"})
    bad = m.submit("lora_train", "t", "y", {"work": "bad"})
    assert m.wait("t", bug.id, timeout=10).error["code"] == "internal_error"
    done = m.wait("t", bad.id, timeout=10)
    assert done.status == "failed" and done.error == {"code": "invalid_examples",
                                                      "message": "every label needs 2 examples"}
    assert done.public()["attempts"] == 1
    m.close()


def test_cancel_running_and_queued_jobs(tmp_path):
    m = JobManager(tmp_path, max_queued=3, concurrency=1, run=RUN)
    running = m.submit("lora_train", "t", "a", {"work": "until_cancelled"})
    _wait_status(m, running.id, "running")
    queued = m.submit("lora_train", "t", "b", {"work": "quick"})
    assert [(r.adapter, r.status) for r in m.active("t")] == [("a", "running"), ("b", "queued")]
    assert m.active("other-tenant") == []
    assert m.cancel("t", queued.id).status == "cancelled"
    m.cancel("t", running.id)
    _wait_status(m, running.id, "cancelled")
    assert m.active("t") == []  # finished jobs are no longer listed as training
    with pytest.raises(Conflict):
        m.cancel("t", running.id)  # already finished
    m.close()


def test_full_queue_answers_overloaded_with_a_spread_retry_after(tmp_path):
    m = JobManager(tmp_path, max_queued=1, concurrency=1, retry_after_s=30, run=RUN)
    first = m.submit("lora_train", "t", "a", {"work": "gate"})
    _wait_status(m, first.id, "running")
    m.submit("lora_train", "t", "b", {"work": "quick"})  # a running job does not count
    values = set()
    for _ in range(30):
        with pytest.raises(Overloaded) as e:
            m.submit("lora_train", "t", "c", {"work": "quick"})
        values.add(int(e.value.headers["Retry-After"]))
    assert e.value.status == 429 and min(values) >= 30 and max(values) <= 45 and len(values) > 3
    GATE.set()
    m.close()


def test_a_submit_only_process_queues_and_a_trainer_runs(tmp_path):
    """TAILOR_ROLE=serve beside TAILOR_ROLE=train: the serving side never runs a job; what it
    queued, the trainer runs; both read the same records."""
    serve = JobManager(tmp_path, concurrency=0, run=RUN)
    rec = serve.submit("lora_train", "t", "a", {"work": "publish"})
    time.sleep(0.5)
    assert serve.get("t", rec.id).status == "queued" and PUBLISHED == []
    train = JobManager(tmp_path, concurrency=1, run=RUN)
    assert serve.wait("t", rec.id, timeout=10).status == "succeeded"
    assert PUBLISHED == [(rec.id, 1)]
    train.close()
    serve.close()


def test_close_hands_a_running_job_back_without_spending_an_attempt(tmp_path):
    m = JobManager(tmp_path, run=RUN, max_attempts=1)
    rec = m.submit("lora_train", "t", "a", {"work": "until_cancelled"})
    _wait_status(m, rec.id, "running")
    m.close()
    back = m.get("t", rec.id)
    assert back.status == "queued" and back.attempts == []
    WORK["until_cancelled"], saved = _publish, WORK["until_cancelled"]
    try:
        again = JobManager(tmp_path, run=RUN, max_attempts=1)
        done = again.wait("t", rec.id, timeout=10)
        assert done.status == "succeeded" and done.public()["attempts"] == 1
        again.close()
    finally:
        WORK["until_cancelled"] = saved


def test_a_training_process_stopped_with_the_server_hands_the_job_back_unspent(tmp_path,
                                                                             monkeypatch):
    """BentoML's supervisor SIGTERMs a worker's children when the server stops: the job goes
    back to the queue without spending an attempt, and this process claims nothing for a
    while (its shutdown hook follows)."""
    from adapters.training import jobs

    monkeypatch.setattr(jobs, "STOPPING_PAUSE_S", 1.0)
    m = JobManager(tmp_path, run=RUN, max_attempts=1, poll_s=0.05)
    rec = m.submit("lora_train", "t", "a", {"work": "stopped_once"})
    _wait_status(m, rec.id, "queued")
    time.sleep(0.5)
    assert m.get("t", rec.id).status == "queued" and m.get("t", rec.id).attempts == []
    done = m.wait("t", rec.id, timeout=10)  # resumed after the pause: runs it, attempt 1 of 1
    assert done.status == "succeeded" and done.public()["attempts"] == 1
    m.close()


@pytest.mark.parametrize("attempts, status", [(2, "succeeded"), (1, "failed")])
def test_a_killed_training_process_is_retried_while_attempts_are_left(tmp_path, attempts, status):
    m = JobManager(tmp_path, run=RUN, max_attempts=attempts)
    rec = m.submit("lora_train", "t", "a", {"work": "killed_once"})
    done = m.wait("t", rec.id, timeout=10)
    assert done.status == status and done.public()["attempts"] == attempts
    if status == "failed":
        assert done.error["code"] == "interrupted" and "signal 9" in done.error["message"]
        assert PUBLISHED == []
    else:
        assert PUBLISHED == [(rec.id, 2)]
    m.close()


def test_a_stalled_trainer_is_fenced_off_and_publishes_nothing(tmp_path):
    """Its lease expires while it is stuck; another trainer runs the job; when the stalled
    one wakes up, begin_publish refuses it: one publish, by the second attempt."""
    first = JobManager(tmp_path, run=RUN, lease_s=0.5, poll_s=0.1)
    rec = first.submit("lora_train", "t", "a", {"work": "stall_once"})
    _wait_status(first, rec.id, "running")
    second = JobManager(tmp_path, run=RUN, lease_s=0.5, poll_s=0.1)
    done = second.wait("t", rec.id, timeout=10)
    time.sleep(1.5)  # the stalled attempt wakes up meanwhile and is refused
    assert done.status == "succeeded" and PUBLISHED == [(rec.id, 2)]
    assert [a.outcome for a in second.get("t", rec.id).attempts] == ["lease_expired", "succeeded"]
    first.close()
    second.close()


@pytest.mark.parametrize("tenant, job_id", [("x", None), ("t", "../../etc/passwd"), ("t", "ffff"),
                                            ("t", "f" * 31), ("t", "f" * 33)])
def test_unknown_or_foreign_job_is_404(tmp_path, tenant, job_id):
    m = JobManager(tmp_path, concurrency=0)
    rec = m.submit("lora_train", "t", "a", {"work": "quick"})
    with pytest.raises(JobNotFound):
        m.get(tenant, job_id or rec.id)


def test_a_job_that_began_publishing_can_no_longer_be_cancelled(tmp_path):
    """The publish (with its fsyncs) runs outside any lock: a cancel either lands before
    ``begin_publish`` (nothing published) or is refused with 409 after it."""
    m = JobManager(tmp_path, run=RUN)
    publishing, release = threading.Event(), threading.Event()

    def work(job):
        job.begin_publish()
        publishing.set()
        release.wait(5)
        return {"adapter": "a@1"}

    WORK["hold"] = work
    rec = m.submit("lora_train", "t", "a", {"work": "hold"})
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

    WORK["late"] = late
    rec = m.submit("lora_train", "t", "b", {"work": "late"})
    _wait_status(m, rec.id, "running")
    m.cancel("t", rec.id)
    cancelled_first.set()
    _wait_status(m, rec.id, "cancelled")
    m.close()


class Heard:
    def __init__(self):
        self.states, self.durations = [], []

    def job_state(self, job_id, kind, state):
        self.states.append(state)

    def job_duration(self, kind, seconds):
        self.durations.append((kind, seconds))


def test_the_observer_hears_every_state_and_the_duration(tmp_path):
    heard = Heard()
    m = JobManager(tmp_path, run=RUN, events=heard)
    rec = m.submit("lora_train", "t", "a", {"work": "progress"})
    m.wait("t", rec.id, timeout=10)
    m.close()
    assert heard.states == ["queued", "running", "succeeded"]
    assert [k for k, _ in heard.durations] == ["lora_train"] and heard.durations[0][1] >= 0


# -- real processes ----------------------------------------------------------------------------
def _trainer(root: str, lease_s: float) -> None:
    m = JobManager(root, run=RUN, lease_s=lease_s, poll_s=0.05)
    while True:
        time.sleep(3600)


def _start_trainers(root, n, lease_s=5.0):
    procs = [FORK.Process(target=_trainer, args=(str(root), lease_s), daemon=True)
             for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def _kill(procs):
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join()


def test_four_trainer_processes_run_every_job_exactly_once(tmp_path):
    serve = JobManager(tmp_path, concurrency=0, max_queued=100)
    jobs = [serve.submit("lora_train", "t", f"a{i}", {"work": "quick"}) for i in range(40)]
    procs = _start_trainers(tmp_path, 4)
    try:
        done = [serve.wait("t", j.id, timeout=60) for j in jobs]
    finally:
        _kill(procs)
    assert all(d.status == "succeeded" and len(d.attempts) == 1 for d in done)
    ran_by = {d.result["by"] for d in done}
    assert ran_by <= {p.pid for p in procs} and len(ran_by) > 1  # they really shared the work


@pytest.mark.parametrize("same_host", [True, False])
def test_a_trainer_killed_mid_job_loses_the_job_to_another(tmp_path, monkeypatch, same_host):
    """kill -9 of a trainer process mid-job. On the same host the dead pid is seen: the job
    is taken back while the dead trainer's lease still runs (a 60 s lease, so no other path
    can free it within the wait). On another node (simulated: its death cannot be seen from
    here) only the lease running out frees it (a 1 s lease). Which path recovered the job is
    read from the record (when the lost attempt ended against when its lease ran out), never
    from a stopwatch."""
    lease_s = 60.0 if same_host else 1.0
    serve = JobManager(tmp_path, concurrency=0)
    rec = serve.submit("lora_train", "t", "a", {"work": "gate"})  # never finishes there
    (doomed,) = _start_trainers(tmp_path, 1, lease_s=lease_s)
    try:
        _wait_status(serve, rec.id, "running", timeout=30)
        time.sleep(1.5)  # it renews its lease meanwhile (a 1 s one too): nobody may take the job
        assert serve.queue.claim("thief") is None
    finally:
        _kill([doomed])
    lost = json.loads((tmp_path / "pending" / f"{rec.id}.json").read_text())  # as it died
    if not same_host:
        monkeypatch.setattr(lease_queue, "owner_gone", lambda owner: False)
    WORK["gate"], saved = _publish, WORK["gate"]
    try:
        survivor = JobManager(tmp_path, run=RUN, lease_s=1.0, poll_s=0.05)
        done = serve.wait("t", rec.id, timeout=45)  # generous: a loaded machine is no failure
        survivor.close()
    finally:
        WORK["gate"] = saved
    assert done.status == "succeeded" and PUBLISHED == [(rec.id, 2)], done
    first, second = done.attempts
    assert (first.outcome, second.outcome) == ("lease_expired", "succeeded")
    # owners are host:pid:start:nonce: the dead trainer's attempt, then the survivor's (here)
    assert first.owner == lost["lease_owner"] and first.owner.split(":")[1] == str(doomed.pid)
    assert second.owner.split(":")[1] == str(os.getpid())
    if same_host:  # taken back before its lease ran out: only the dead pid could tell
        assert first.ended_at < lost["lease_expires_at"], (first, lost["lease_expires_at"])
    else:  # taken back only once the lease had run out
        assert first.ended_at >= lost["lease_expires_at"], (first, lost["lease_expires_at"])
