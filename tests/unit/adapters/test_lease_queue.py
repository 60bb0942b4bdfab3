"""adapters/training/lease_queue.py: jobs in the shared store, claimed by any number of
trainer processes with leases. A job runs once; processes racing for one job get it once; a
trainer killed mid-job loses its lease and the job runs again (or fails with why after the
attempts); a stale trainer can neither renew, publish nor finish. (The job runner on top of
it, with real trainer processes, is tested in tests/unit/adapters/test_jobs.py.)"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from adapters.errors import Conflict, JobNotFound, Overloaded
from adapters.training import lease_queue
from adapters.training.lease_queue import Cancelled, LeaseLost, LeaseQueue
from adapters.states import JobState

QUEUED, RUNNING, SUCCEEDED = JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED
FAILED, CANCELLED = JobState.FAILED, JobState.CANCELLED

FORK = mp.get_context("fork")  # the test process has imported everything already: cheap


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def q(tmp_path, clock):
    return LeaseQueue(tmp_path / "queue", lease_s=30, max_attempts=2, clock=clock)


def submit(q, n=1, kind="lora", tenant="acme"):
    return [q.submit(kind, tenant, f"adapter{i}", {"examples": [{"text": "t", "label": "a"}]})
            for i in range(n)]


def test_a_job_is_claimed_run_and_finished(q):
    (job,) = submit(q)
    assert q.counts() == {QUEUED: 1, RUNNING: 0}
    lease = q.claim("trainer-1")
    assert lease.job.id == job.id and lease.job.status == RUNNING
    assert q.claim("trainer-2") is None  # nothing else to run
    assert q.counts() == {QUEUED: 0, RUNNING: 1}
    q.renew(lease, {"step": 3, "total": 10})
    assert q.get("acme", job.id).progress == {"step": 3, "total": 10}
    done = q.finish(q.begin_publish(lease), {"adapter": "adapter0@1"})
    assert done.status == SUCCEEDED and done.result == {"adapter": "adapter0@1"}
    rec = q.get("acme", job.id)
    assert rec.status == SUCCEEDED and len(rec.attempts) == 1
    assert rec.attempts[0].owner == "trainer-1" and rec.attempts[0].outcome == SUCCEEDED
    assert q.counts() == {QUEUED: 0, RUNNING: 0}
    with pytest.raises(JobNotFound):
        q.get("globex", job.id)  # another tenant's job is 404, as a missing one
    with pytest.raises(LeaseLost):
        q.finish(lease)  # finished already


def test_oldest_first_and_by_kind(q, clock):
    jobs = []
    for kind in ("lora", "export", "lora"):
        clock.t += 1
        jobs += submit(q, kind=kind)
    assert q.claim("t", kinds=["export"]).job.id == jobs[1].id
    assert q.claim("t").job.id == jobs[0].id
    assert q.claim("t").job.id == jobs[2].id


def test_an_expired_lease_is_retried_and_the_stale_trainer_is_fenced_off(q, clock):
    (job,) = submit(q)
    stale = q.claim("trainer-a")
    clock.t += 29
    stale = q.renew(stale)  # renewing keeps it
    clock.t += 29
    assert q.claim("trainer-b") is None  # still held
    clock.t += 2  # 31 s after the last renewal: the lease has expired
    fresh = q.claim("trainer-b")
    assert fresh.job.id == job.id and len(fresh.job.attempts) == 2
    for call in (q.renew, q.begin_publish, q.finish, q.cancelled):
        with pytest.raises(LeaseLost):
            call(stale)
    q.finish(fresh, {"ok": True})
    rec = q.get("acme", job.id)
    assert [(a.owner, a.outcome) for a in rec.attempts] == [("trainer-a", "lease_expired"),
                                                            ("trainer-b", SUCCEEDED)]


def test_after_the_last_attempt_the_job_fails_with_the_reason(q, clock):
    (job,) = submit(q)
    for owner in ("trainer-a", "trainer-b"):
        assert q.claim(owner).job.id == job.id
        clock.t += 31
    assert q.claim("trainer-c") is None  # settles the expired lease: no attempts left
    rec = q.get("acme", job.id)
    assert rec.status == FAILED and rec.error["code"] == "interrupted"
    assert "trainer-b" in rec.error["message"] and "attempt 2 of 2" in rec.error["message"]


def test_a_job_lost_while_publishing_fails_instead_of_publishing_twice(q, clock):
    (job,) = submit(q)
    q.begin_publish(q.claim("trainer-a"))
    clock.t += 31
    assert q.claim("trainer-b") is None
    rec = q.get("acme", job.id)
    assert rec.status == FAILED and "while publishing" in rec.error["message"]


def test_cancel_queued_running_and_orphaned(q, clock):
    a, b, c = submit(q, 3)
    assert q.cancel("acme", a.id).status == CANCELLED
    leases = {lease.job.id: lease for lease in (q.claim("t1"), q.claim("t2"))}
    assert set(leases) == {b.id, c.id}  # a was never claimed
    lease_b = leases[b.id]
    assert q.cancel("acme", b.id).cancel_requested
    assert q.renew(lease_b).job.cancel_requested  # the trainer learns it at its next renewal
    assert q.cancelled(lease_b).status == CANCELLED
    q.cancel("acme", c.id)  # its trainer died: the expiry cancels it, no retry
    clock.t += 31
    assert q.claim("t3") is None and q.get("acme", c.id).status == CANCELLED
    with pytest.raises(Conflict):
        q.cancel("acme", c.id)


def test_the_queue_bound_and_a_clean_release(tmp_path, clock):
    q = LeaseQueue(tmp_path / "q", max_queued=2, clock=clock)
    submit(q, 2)
    with pytest.raises(Overloaded):
        submit(q)
    lease = q.claim("t")
    submit(q)  # a running job does not count as waiting
    released = q.release(lease)  # shutting down: back to the queue, no attempt spent
    assert released.status == QUEUED and released.attempts == []


def test_a_retry_spends_an_attempt_and_the_last_one_fails_with_the_reason(q):
    (job,) = submit(q)
    again = q.retry(q.claim("t1"), "interrupted", "the training worker process was killed")
    assert again.status == QUEUED and [a.outcome for a in again.attempts] == ["retried"]
    final = q.retry(q.claim("t2"), "interrupted", "the training worker process was killed")
    assert final.status == FAILED and final.error["code"] == "interrupted"
    assert final.error["message"].startswith("the training worker process was killed")
    assert "TAILOR_JOB_ATTEMPTS" in final.error["message"]


def test_a_cancel_before_publishing_wins_and_after_it_is_refused(q):
    a, b = submit(q, 2)
    leases = {lease.job.id: lease for lease in (q.claim("t"), q.claim("t"))}
    lease_a, lease_b = leases[a.id], leases[b.id]
    q.cancel("acme", a.id)
    with pytest.raises(Cancelled):
        q.begin_publish(lease_a)
    q.begin_publish(lease_b)
    with pytest.raises(Conflict) as e:
        q.cancel("acme", b.id)
    assert "publishing" in e.value.message


def test_a_dead_holder_on_this_host_does_not_wait_out_its_lease(q, monkeypatch):
    (job,) = submit(q)
    q.claim("somehost:1:2:abc")
    assert q.claim("t2") is None  # alive (as far as anyone can tell): its lease holds
    monkeypatch.setattr(lease_queue, "owner_gone", lambda owner: owner == "somehost:1:2:abc")
    lease = q.claim("t2")  # gone: taken back at once, as attempt 2
    assert lease.job.id == job.id and [a.outcome for a in lease.job.attempts] == ["lease_expired", None]


def test_full_queue_retry_after_spreads(tmp_path, clock):
    q = LeaseQueue(tmp_path / "q", max_queued=1, retry_after_s=30, clock=clock)
    submit(q)
    values = set()
    for _ in range(40):
        with pytest.raises(Overloaded) as e:
            submit(q)
        values.add(int(e.value.headers["Retry-After"]))
    assert min(values) >= 30 and max(values) <= 45 and len(values) > 5


def test_the_payload_is_kept_apart_and_reaches_the_trainer(q, tmp_path):
    (job,) = submit(q)
    record = (tmp_path / "queue" / "pending" / f"{job.id}.json").read_text()
    assert "examples" not in record  # claims read every record: they stay small
    assert q.claim("t").job.payload == {"examples": [{"text": "t", "label": "a"}]}
    (lost,) = submit(q)
    (tmp_path / "queue" / "payloads" / f"{lost.id}.json").unlink()  # lost with the volume
    assert q.claim("t") is None
    rec = q.get("acme", lost.id)
    assert rec.status == FAILED and "payload" in rec.error["message"]


def test_public_view_and_a_record_from_before_the_queue(q, tmp_path):
    import json

    (job,) = submit(q)
    view = q.get("acme", job.id).public()
    assert view["status"] == "queued" and view["attempts"] == 0 and view["adapter"] == "adapter0"
    assert view["created_at"].endswith("+00:00") and "payload" not in view and "tenant" not in view
    old = {"id": "ab" * 16, "kind": "lora_train", "tenant": "acme", "adapter": "x",
           "status": "running", "progress": {"step": 1, "total": 4}, "loss": 0.5, "error": None,
           "result": None, "owner": "h:1", "created_at": "2026-01-01T00:00:00.000+00:00",
           "started_at": None, "finished_at": None}
    (tmp_path / "queue" / f"{old['id']}.json").write_text(json.dumps(old))
    rec = q.get("acme", old["id"])
    assert rec.status == FAILED and rec.error["code"] == "interrupted"
    with pytest.raises(JobNotFound):
        q.get("globex", old["id"])


# -- real processes --------------------------------------------------------------------------------
def _race(root: str, rounds: int, barrier, out) -> None:
    q = LeaseQueue(root)
    me = f"p{os.getpid()}"
    for r in range(rounds):
        barrier.wait()
        lease = LeaseQueue(f"{root}/{r}").claim(me)
        out.put((r, me, lease.job.id if lease else None))


def test_two_processes_racing_for_one_job_get_it_once(tmp_path):
    rounds = 25
    for r in range(rounds):
        submit(LeaseQueue(tmp_path / str(r)))
    barrier, out = FORK.Barrier(2), FORK.Queue()
    procs = [FORK.Process(target=_race, args=(str(tmp_path), rounds, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in range(2 * rounds)]
    for p in procs:
        p.join(30)
    for r in range(rounds):
        won = [job for rr, _, job in results if rr == r and job is not None]
        assert len(won) == 1, (r, results)
    winners = {me for _, me, job in results if job is not None}
    assert len(winners) == 2  # both processes won some rounds: they really raced
