"""adapters/lease_queue.py (trainer-pool prototype): jobs in the shared store, claimed by any
number of trainer processes with leases. A job runs once; processes racing for one job get
it once; a trainer killed mid-job loses its lease and the job runs again (or fails with why
after the attempts); a stale trainer can neither renew, publish nor finish."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from adapters.errors import Conflict, InvalidExamples, JobNotFound, Overloaded
from adapters.lease_queue import (CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, LeaseLost,
                                  LeaseQueue, run_one)

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


def test_run_one_reports_domain_errors_and_bugs(q):
    submit(q, 3)

    def bad_examples(job, hb):
        raise InvalidExamples("every label needs 2 examples")

    def bug(job, hb):
        raise ZeroDivisionError("oops")

    assert run_one(q, "t", bad_examples).error == {"code": "invalid_examples",
                                                  "message": "every label needs 2 examples"}
    assert run_one(q, "t", bug).error["code"] == "internal_error"
    published = []
    rec = run_one(q, "t", lambda job, hb: lambda: published.append(job.id) or {"v": 1})
    assert rec.status == SUCCEEDED and published == [rec.id] and rec.result == {"v": 1}
    assert run_one(q, "t", bug) is None  # nothing left


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


def _trainer(root: str, out) -> None:
    q = LeaseQueue(root, lease_s=5)
    me = f"p{os.getpid()}"
    while True:
        rec = run_one(q, me, lambda job, hb: (time.sleep(0.01), lambda: {"by": me})[1])
        if rec is None:
            if q.counts()[QUEUED] == 0:
                return
            continue
        out.put((rec.id, me))


def test_four_trainers_run_every_job_exactly_once(tmp_path):
    q = LeaseQueue(tmp_path / "q", lease_s=5)
    jobs = submit(q, 40)
    out = FORK.Queue()
    procs = [FORK.Process(target=_trainer, args=(str(tmp_path / "q"), out)) for _ in range(4)]
    for p in procs:
        p.start()
    ran = [out.get(timeout=60) for _ in range(len(jobs))]
    for p in procs:
        p.join(30)
    assert sorted(j for j, _ in ran) == sorted(j.id for j in jobs)  # each once
    for job in jobs:
        rec = q.get("acme", job.id)
        assert rec.status == SUCCEEDED and len(rec.attempts) == 1
        assert rec.result["by"] == rec.attempts[0].owner
    assert len({me for _, me in ran}) > 1


def _stuck_trainer(root: str) -> None:
    q = LeaseQueue(root, lease_s=1.0)
    run_one(q, f"doomed-{os.getpid()}", lambda job, hb: time.sleep(3600))


def test_a_trainer_killed_mid_job_loses_its_lease_and_the_job_runs_again(tmp_path):
    root = tmp_path / "q"
    q = LeaseQueue(root, lease_s=1.0, max_attempts=2)
    (job,) = submit(q)
    doomed = FORK.Process(target=_stuck_trainer, args=(str(root),))
    doomed.start()
    deadline = time.monotonic() + 30
    while q.get("acme", job.id).status != RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(2.5)  # it renews its 1 s lease meanwhile: nobody else may take the job
    assert q.claim("thief") is None
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join()
    t0 = time.monotonic()
    rec = None
    while rec is None:
        rec = run_one(q, "survivor", lambda job, hb: lambda: {"ok": True})
        assert time.monotonic() - t0 < 5, "the killed trainer's lease never expired"
        time.sleep(0.1)
    took = time.monotonic() - t0
    assert rec.status == SUCCEEDED and took <= 1.5
    assert [a.outcome for a in rec.attempts] == ["lease_expired", SUCCEEDED]
    assert rec.attempts[0].owner.startswith("doomed-")
