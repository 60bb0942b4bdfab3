"""adapters/training/pg_queue.py against a real PostgreSQL (tests/pgserver.py): the same
lease semantics as the file queue (tests/unit/adapters/test_lease_queue.py). A job runs
once; trainers racing for jobs get each once; an expired lease requeues the job as a new
attempt (or fails it after the attempts); a fenced-off trainer can neither renew, publish
nor finish; cancel; listing pages; and a database restart: 503 while it is down, every job
still there after."""
from __future__ import annotations

import threading
import time

import pytest

from adapters.errors import Conflict, InvalidRequest, JobNotFound, Overloaded, Unavailable
from adapters.training.pg_queue import PgQueue
from adapters.training.records import Cancelled, LeaseLost
from adapters.states import JobState
from tests.conftest import recording

QUEUED, RUNNING, SUCCEEDED = JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED
FAILED, CANCELLED = JobState.FAILED, JobState.CANCELLED
LEASE_S = 0.6  # leases that expire within a test


@pytest.fixture
def db(pg_url):
    """The module's database, emptied before each test."""
    q = PgQueue(pg_url)
    q.counts()  # creates the table
    with q._tx() as conn:
        conn.execute("TRUNCATE tailor_jobs")
    q.close()
    return pg_url


@pytest.fixture
def q(db):
    q = PgQueue(db, lease_s=LEASE_S, max_attempts=2)
    yield q
    q.close()


def submit(q, n=1, kind="lora", tenant="acme"):
    return [q.submit(kind, tenant, f"adapter{i}", {"examples": [{"text": f"t{i}", "label": "a"}]})
            for i in range(n)]


def test_a_job_is_claimed_run_and_finished(q):
    (job,) = submit(q)
    assert q.counts() == {QUEUED: 1, RUNNING: 0}
    lease = q.claim("trainer-1")
    assert lease.job.id == job.id and lease.job.status == RUNNING
    assert lease.job.payload == {"examples": [{"text": "t0", "label": "a"}]}
    assert q.claim("trainer-2") is None  # nothing else to run
    assert q.counts() == {QUEUED: 0, RUNNING: 1}
    lease = q.renew(lease, {"step": 3, "total": 10}, 0.5)
    rec = q.get("acme", job.id)
    assert rec.progress == {"step": 3, "total": 10} and rec.loss == 0.5
    done = q.finish(q.begin_publish(lease), {"adapter": "adapter0@1"})
    assert done.status == SUCCEEDED and done.result == {"adapter": "adapter0@1"}
    rec = q.get("acme", job.id)
    assert rec.status == SUCCEEDED and rec.progress == {"step": 10, "total": 10}
    assert [(a.owner, a.outcome) for a in rec.attempts] == [("trainer-1", "succeeded")]
    assert q.counts() == {QUEUED: 0, RUNNING: 0}
    with q._tx() as conn:  # a finished job's payload (megabytes of examples) is dropped
        assert conn.execute("SELECT payload FROM tailor_jobs").fetchone()[0] is None


def test_another_tenants_job_and_bad_ids_are_404(q):
    (job,) = submit(q)
    for tenant, job_id in [("other", job.id), ("acme", "0" * 32), ("acme", "x" * 300)]:
        with pytest.raises(JobNotFound):
            q.get(tenant, job_id)
    with pytest.raises(JobNotFound):
        q.cancel("other", job.id)


def test_an_expired_lease_requeues_the_job_and_fences_off_the_old_trainer(q):
    (job,) = submit(q)
    stale = q.claim("trainer-1")
    time.sleep(LEASE_S + 0.1)  # trainer-1 stopped renewing (killed, stalled)
    fresh = q.claim("trainer-2")
    assert fresh is not None and fresh.job.id == job.id and fresh.token != stale.token
    for call in (lambda: q.renew(stale), lambda: q.begin_publish(stale),
                 lambda: q.finish(stale, {}), lambda: q.fail(stale, "x", "y"),
                 lambda: q.retry(stale, "x", "y"), lambda: q.release(stale)):
        with pytest.raises(LeaseLost):
            call()
    q.finish(fresh, {"adapter": "adapter0@1"})
    rec = q.get("acme", job.id)
    assert rec.status == SUCCEEDED
    assert [(a.owner, a.outcome) for a in rec.attempts] == [
        ("trainer-1", "lease_expired"), ("trainer-2", "succeeded")]
    assert rec.attempts[0].ended_at <= rec.attempts[1].started_at  # never two at once


def test_after_max_attempts_an_expired_job_fails_with_why(q):
    (job,) = submit(q)
    for owner in ("trainer-1", "trainer-2"):
        assert q.claim(owner) is not None
        time.sleep(LEASE_S + 0.1)
    assert q.claim("trainer-3") is None  # settles the expired lease: no attempt left
    rec = q.get("acme", job.id)
    assert rec.status == FAILED and rec.error["code"] == "interrupted"
    assert "TAILOR_JOB_ATTEMPTS" in rec.error["message"] and len(rec.attempts) == 2


def test_a_lease_lost_while_publishing_fails_the_job_rather_than_run_it_twice(q):
    (job,) = submit(q)
    q.begin_publish(q.claim("trainer-1"))
    time.sleep(LEASE_S + 0.1)
    assert q.claim("trainer-2") is None
    rec = q.get("acme", job.id)
    assert rec.status == FAILED and "while publishing" in rec.error["message"]


def test_retry_and_release(q):
    (job,) = submit(q)
    q.retry(q.claim("trainer-1"), "interrupted", "the training process was killed")
    assert q.get("acme", job.id).status == QUEUED
    q.release(q.claim("trainer-2"))  # a clean shutdown spends no attempt
    rec = q.get("acme", job.id)
    assert rec.status == QUEUED and len(rec.attempts) == 1
    q.retry(q.claim("trainer-3"), "interrupted", "killed again")
    rec = q.get("acme", job.id)
    assert rec.status == FAILED and "killed again" in rec.error["message"]


def test_cancel_queued_running_publishing_and_finished(q):
    a, b, c = submit(q, 3)
    assert q.cancel("acme", a.id).status == CANCELLED  # queued: at once
    lease = q.claim("trainer-1")
    assert lease.job.id == b.id
    assert q.cancel("acme", b.id).cancel_requested  # running: at its next renewal
    assert q.renew(lease).job.cancel_requested
    with pytest.raises(Cancelled):
        q.begin_publish(lease)
    assert q.cancelled(lease).status == CANCELLED
    q.begin_publish(q.claim("trainer-1"))
    with pytest.raises(Conflict, match="publishing"):
        q.cancel("acme", c.id)
    with pytest.raises(Conflict, match="cancelled"):
        q.cancel("acme", a.id)


def test_max_queued_answers_overloaded_with_retry_after(db):
    q = PgQueue(db, max_queued=2, retry_after_s=30)
    try:
        submit(q, 2)
        with pytest.raises(Overloaded) as e:
            submit(q)
        assert int(e.value.headers["Retry-After"]) >= 30
        q.claim("trainer-1")  # a running job no longer waits
        submit(q)
    finally:
        q.close()


def test_trainers_racing_for_jobs_get_each_once(db):
    """Four trainers, each with its own connection pool, claim 40 jobs at once."""
    queues = [PgQueue(db, lease_s=30) for _ in range(4)]
    jobs = submit(queues[0], 40)
    got: dict[int, list[str]] = {i: [] for i in range(4)}
    errors: list[str] = []

    def trainer(i):
        while (lease := queues[i].claim(f"trainer-{i}")) is not None:
            got[i].append(lease.job.id)
            queues[i].finish(lease)
    threads = [threading.Thread(target=recording(errors, trainer), args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for q in queues:
        q.close()
    assert errors == []
    claimed = [j for ids in got.values() for j in ids]
    assert sorted(claimed) == sorted(j.id for j in jobs)  # each once, none lost
    assert sum(1 for ids in got.values() if ids) >= 2  # really concurrent


def test_listing_pages_with_a_cursor_and_filters(q):
    jobs = submit(q, 5)
    submit(q, 2, tenant="other")
    q.cancel("acme", jobs[1].id)
    seen, after = [], None
    while True:
        page, after = q.page("acme", limit=2, after=after)
        seen += [j.id for j in page]
        if after is None:
            break
    assert seen == [j.id for j in reversed(jobs)]  # newest first, each once
    new = submit(q)[0]  # submitted meanwhile: does not shift the next page
    page, nxt = q.page("acme", limit=2, after=jobs[3].id)
    assert [j.id for j in page] == [jobs[2].id, jobs[1].id] and nxt == jobs[1].id
    assert new.id not in [j.id for j in page]
    page, nxt = q.page("acme", status="cancelled")
    assert [j.id for j in page] == [jobs[1].id] and nxt is None
    page, _ = q.page("acme", adapter="adapter3")
    assert [j.id for j in page] == [jobs[3].id]
    for bad in ("0" * 32, q.page("other")[0][0].id):  # unknown; another tenant's
        with pytest.raises(InvalidRequest, match="cursor"):
            q.page("acme", after=bad)
    with pytest.raises(InvalidRequest, match="cursor"):  # not in the filtered listing
        q.page("acme", status="cancelled", after=jobs[0].id)
    assert q.usage()["acme"][QUEUED] == 5 and q.usage()["other"][QUEUED] == 2


def test_a_database_restart_answers_503_then_loses_nothing(db, pg_server):
    q = PgQueue(db, lease_s=30, connect_timeout_s=1)
    jobs = submit(q, 3)
    lease = q.claim("trainer-1")
    pg_server.stop()
    try:
        pg_server.wait_down()
        for call in (lambda: submit(q), lambda: q.get("acme", jobs[0].id),
                     lambda: q.renew(lease)):
            with pytest.raises(Unavailable) as e:
                call()
            assert e.value.status == 503 and int(e.value.headers["Retry-After"]) >= 1
    finally:
        pg_server.start()
    q.finish(q.renew(lease))  # the pool reconnects; the lease held across the restart
    assert [q.get("acme", j.id).status for j in jobs] == [SUCCEEDED, QUEUED, QUEUED]
    assert {q.claim("trainer-2").job.id, q.claim("trainer-2").job.id} == {jobs[1].id, jobs[2].id}
    q.close()


# -- the job runner on PostgreSQL (adapters/training/jobs.py) -------------------------------------
def _wait_for(fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not (got := fn()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return got


def test_a_job_rides_out_a_database_restart_with_one_attempt(db, pg_server):
    """The trainer's heartbeat and its final updates retry while the lease lasts."""
    from adapters.training.jobs import JobManager

    gate, published = threading.Event(), []

    def run(job):
        job.report(1, 2, 0.5)
        gate.wait(30)
        job.begin_publish()
        published.append(job.id)
        return {"adapter": "x@1"}
    m = JobManager("unused", queue_url=db, lease_s=10, poll_s=0.1, run=run)
    try:
        rec = m.submit("lora_train", "acme", "x", {})
        _wait_for(lambda: m.get("acme", rec.id).status == RUNNING)
        pg_server.stop()
        pg_server.wait_down()
        gate.set()  # begin_publish now meets a database that is down: it waits
        time.sleep(1.0)
        pg_server.start()
        done = _wait_for(lambda: (r := m.get("acme", rec.id)).status not in (QUEUED, RUNNING) and r)
    finally:
        gate.set()
        m.close()
    assert done.status == SUCCEEDED and len(done.attempts) == 1, done
    assert published == [rec.id]


def test_a_stalled_trainer_is_fenced_off_and_the_job_published_once(db):
    """The first runner stalls past its lease (no heartbeat); the second runs the job; the
    first wakes up and its begin_publish fails: one publish, attempts one after the other."""
    from adapters.training.jobs import JobManager

    published = []

    def run(job):
        if len(job.record.attempts) == 1:
            job.renew = lambda *a, **k: None  # the heartbeat is stuck
            time.sleep(LEASE_S * 3)
        job.begin_publish()
        published.append(len(job.record.attempts))
        return {}
    first = JobManager("unused", queue_url=db, lease_s=LEASE_S, poll_s=0.05, run=run)
    rec = first.submit("lora_train", "acme", "x", {})
    _wait_for(lambda: first.get("acme", rec.id).status == RUNNING)
    second = JobManager("unused", queue_url=db, lease_s=LEASE_S, poll_s=0.05, run=run)
    try:
        done = _wait_for(lambda: (r := second.get("acme", rec.id)).status == SUCCEEDED and r)
        time.sleep(LEASE_S * 3)  # the stalled runner wakes up and tries to publish
    finally:
        first.close()
        second.close()
    assert published == [2]
    assert [a.outcome for a in done.attempts] == ["lease_expired", "succeeded"]
    assert done.attempts[0].ended_at <= done.attempts[1].started_at


def test_a_job_queued_by_another_process_wakes_an_idle_trainer(db):
    """LISTEN/NOTIFY: with a one-minute poll, the job still starts within seconds."""
    from adapters.training.jobs import JobManager

    started = threading.Event()
    serve = JobManager("unused", queue_url=db, concurrency=0)
    train = JobManager("unused", queue_url=db, poll_s=60, run=lambda job: started.set() or {})
    try:
        time.sleep(1.0)  # the trainer has polled once and is waiting
        serve.submit("lora_train", "acme", "x", {})
        assert started.wait(15), "the trainer was not woken: it waited for its poll"
    finally:
        serve.close()
        train.close()
