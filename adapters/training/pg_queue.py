"""The job queue in PostgreSQL (``TAILOR_QUEUE_URL=postgresql://...``): replicas and
trainers on any number of nodes share one database instead of a ReadWriteMany volume.

Same records and transitions as the file queue (``records.py``); each change is one
transaction that holds the job's row (``SELECT ... FOR UPDATE``), and ``claim`` takes the
oldest queued job with ``FOR UPDATE SKIP LOCKED``, so trainers never wait on each other.
A queued job ``NOTIFY``s the trainers (``wakeups``): an idle trainer starts it within
milliseconds instead of at its next poll. Lease times are the database's clock, so the
nodes' clocks do not matter.

Why not a queue library's own tables (measured here, benchmarks/RESULTS.md "Job queue"):
procrastinate 3.10 and pgqueuer 1.6 both claim with the same ``FOR UPDATE SKIP LOCKED`` (7.4
and 1.4 ms per enqueue + claim here, PgQueue 4.5 ms: milliseconds against jobs of tens of
seconds), but neither fences a worker (measured, benchmarks/peers/queue_libs.py):
procrastinate's ``finish_job`` and pgqueuer's ``log_jobs`` close a job by id whatever worker
holds it now, so a trainer that stalled past its heartbeat (a GC pause, a frozen VM) and
woke up would still publish and finish a job that another trainer is running: two attempts
at once, the thing this queue must rule out. Both lack a "publishing" phase (after which a
lost trainer fails the job instead of retrying it: a retry would publish a second version),
per-tenant listing with a cursor, and progress on the job row; procrastinate's stalled-job
recovery is a periodic task the application runs, and pgqueuer's re-pick of a stalled job
(``dequeue``'s ``heartbeat_timeout``) has no attempt limit. Each of these would be our own
SQL beside the library's tables: two sources of truth for one job. So the library here is
the driver, psycopg 3 with its connection pool (reconnects after a database restart, checks
a connection before lending it), and the SQL is the standard pattern in a few statements.

A database that is down or restarting: every call raises ``Unavailable`` (503 with
Retry-After on submit and reads); trainers keep their leases and retry, and a job whose
trainer could not report for longer than its lease is settled as on the file queue.
"""
from __future__ import annotations

import contextlib
import json
import threading
import uuid
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

from ..backoff import retry_after
from ..errors import Overloaded, Unavailable
from . import records
from .records import JOB_ID_RE, Lease, QueuedJob, bad_cursor, not_found
from ..states import ACTIVE, JobState

SCHEMA = """
CREATE TABLE IF NOT EXISTS tailor_jobs (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    kind text NOT NULL,
    adapter text NOT NULL,
    status text NOT NULL,
    created_at double precision NOT NULL,
    record jsonb NOT NULL,
    payload jsonb
);
CREATE INDEX IF NOT EXISTS tailor_jobs_claim ON tailor_jobs (created_at, id)
    WHERE status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS tailor_jobs_tenant ON tailor_jobs (tenant, created_at DESC, id DESC);
"""
_ACTIVE = [s.value for s in ACTIVE]
CHANNEL = "tailor_jobs"  # LISTEN/NOTIFY: a queued job wakes idle trainers at once


class PgQueue:
    def __init__(self, url: str, *, lease_s: float = 30.0, max_attempts: int = 2,
                 max_queued: int | None = None, retry_after_s: float = 30.0,
                 connect_timeout_s: float = 2.0, pool_size: int = 8):
        if lease_s <= 0 or max_attempts < 1 or (max_queued is not None and max_queued < 1):
            raise ValueError(f"need lease_s > 0, max_attempts >= 1, max_queued >= 1; got "
                             f"{lease_s}, {max_attempts}, {max_queued}")
        from psycopg_pool import ConnectionPool

        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        self.connect_timeout_s = connect_timeout_s
        self._url = url
        parts = urlsplit(url)
        self._where = f"{parts.hostname}:{parts.port or 5432}{parts.path}"
        # open without waiting: a replica starts while the database is down, and answers
        # 503 until it is back
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False,
                                    check=ConnectionPool.check_connection,
                                    kwargs={"connect_timeout": max(1, int(connect_timeout_s))},
                                    reconnect_timeout=0, name="tailor-jobs")
        self._pool.open(wait=False)
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"postgresql://{self._where}"

    def close(self) -> None:
        self._pool.close()

    # -- storage ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        """One transaction; a database that cannot be reached is ``Unavailable`` (503)."""
        import psycopg
        import psycopg_pool

        try:
            with self._pool.connection(timeout=self.connect_timeout_s) as conn:
                if not self._schema_ready:
                    self._create_schema(conn)
                with conn.transaction():
                    yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as e:
            retry = retry_after(min(self.retry_after_s, 5.0))
            raise Unavailable(f"the job database ({self.where}) cannot be reached "
                              f"({type(e).__name__}); retry in {retry} s",
                              headers={"Retry-After": str(retry)}) from e

    def _create_schema(self, conn: Any) -> None:
        with self._schema_lock, conn.transaction():
            # replicas starting together: CREATE ... IF NOT EXISTS still races in the catalog
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('tailor_jobs_schema'))")
            conn.execute(SCHEMA)
        self._schema_ready = True

    @staticmethod
    def _now(conn: Any) -> float:
        return conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]

    @staticmethod
    def _job(row: tuple[Any, ...]) -> QueuedJob:
        job = QueuedJob.from_dict(row[0])
        if len(row) > 1 and row[1] is not None:
            job.payload = row[1]
        return job

    def _select(self, conn: Any, where: str, params: tuple[Any, ...] = (), *,
                order: str = "created_at, id", tail: str = "") -> list[QueuedJob]:
        rows = conn.execute(f"SELECT record FROM tailor_jobs WHERE {where} ORDER BY {order} {tail}",
                            params).fetchall()
        return [self._job(r) for r in rows]

    def _save(self, conn: Any, job: QueuedJob) -> QueuedJob:
        """Store a record after a transition; a finished job drops its payload; a job queued
        (again) wakes the trainers on commit."""
        if job.status == JobState.QUEUED:
            conn.execute(f"NOTIFY {CHANNEL}")
        conn.execute("UPDATE tailor_jobs SET status = %s, record = %s, "
                     "payload = CASE WHEN %s THEN payload END WHERE id = %s",
                     (job.status.value, json.dumps(job.to_dict()), job.status in ACTIVE, job.id))
        return job

    def _locked(self, conn: Any, job_id: str) -> QueuedJob | None:
        row = conn.execute("SELECT record FROM tailor_jobs WHERE id = %s FOR UPDATE",
                           (job_id,)).fetchone()
        return None if row is None else self._job(row)

    def _held(self, conn: Any, lease: Lease) -> tuple[QueuedJob, float]:
        """The job if ``lease`` still holds it (the fencing check, row locked), and now."""
        job = self._locked(conn, lease.job.id)
        now = self._now(conn)
        return records.check_held(job, lease, now), now

    # -- any process -----------------------------------------------------------------------------
    def submit(self, kind: str, tenant: str, adapter: str, payload: dict[str, Any]) -> QueuedJob:
        text = json.dumps(payload)
        with self._tx() as conn:
            if self.max_queued is not None:
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('tailor_jobs_submit'))")
                queued = conn.execute("SELECT count(*) FROM tailor_jobs WHERE status = 'queued'"
                                      ).fetchone()[0]
                if queued >= self.max_queued:
                    retry = retry_after(self.retry_after_s)
                    raise Overloaded(f"{queued} training jobs are already waiting (limit "
                                     f"{self.max_queued}, TAILOR_JOB_QUEUE_SIZE); retry in "
                                     f"{retry} s", headers={"Retry-After": str(retry)})
            job = QueuedJob(id=uuid.uuid4().hex, kind=kind, tenant=tenant, adapter=adapter,
                            payload=payload, max_attempts=self.max_attempts,
                            created_at=self._now(conn))
            conn.execute("INSERT INTO tailor_jobs (id, tenant, kind, adapter, status, created_at, "
                         "record, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                         (job.id, tenant, kind, adapter, job.status.value, job.created_at,
                          json.dumps(job.to_dict()), text))
            conn.execute(f"NOTIFY {CHANNEL}")  # delivered on commit
        return job

    def get(self, tenant: str, job_id: str) -> QueuedJob:
        if not (isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id)):
            raise not_found(job_id)
        with self._tx() as conn:
            jobs = self._select(conn, "id = %s AND tenant = %s", (job_id, tenant))
        if not jobs:
            raise not_found(job_id)
        return jobs[0]

    def cancel(self, tenant: str, job_id: str) -> QueuedJob:
        self.get(tenant, job_id)  # 404 before any lock
        with self._tx() as conn:
            job = self._locked(conn, job_id)
            assert job is not None  # rows are never deleted
            records.cancel_check(job)
            if job.status == JobState.QUEUED:
                return self._save(conn, records.close(job, JobState.CANCELLED, self._now(conn)))
            job.cancel_requested = True
            return self._save(conn, job)

    def active(self, tenant: str | None = None) -> list[QueuedJob]:
        with self._tx() as conn:
            if tenant is None:
                return self._select(conn, "status = ANY(%s)", (_ACTIVE,))
            return self._select(conn, "status = ANY(%s) AND tenant = %s", (_ACTIVE, tenant))

    def of_tenant(self, tenant: str) -> list[QueuedJob]:
        with self._tx() as conn:
            return self._select(conn, "tenant = %s", (tenant,), order="created_at DESC, id DESC")

    def page(self, tenant: str, *, status: str | None = None, adapter: str | None = None,
             limit: int = 20, after: str | None = None) -> tuple[list[QueuedJob], str | None]:
        """Keyset pagination on (created_at, id): a page costs an index range, not a scan."""
        where, params = ["tenant = %s"], [tenant]
        if status is not None:
            where.append("status = %s")
            params.append(status)
        if adapter is not None:
            where.append("adapter = %s")
            params.append(adapter)
        with self._tx() as conn:
            if after is not None:
                row = conn.execute(f"SELECT created_at FROM tailor_jobs WHERE id = %s AND "
                                   f"{' AND '.join(where)}", (after, *params)).fetchone()
                if row is None:
                    raise bad_cursor(after)
                where.append("(created_at, id) < (%s, %s)")
                params += [row[0], after]
            jobs = self._select(conn, " AND ".join(where), tuple(params),
                                order="created_at DESC, id DESC", tail=f"LIMIT {int(limit) + 1}")
        page = jobs[:limit]
        return page, page[-1].id if len(jobs) > limit and page else None

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in ACTIVE}
        with self._tx() as conn:
            for status, n in conn.execute("SELECT status, count(*) FROM tailor_jobs WHERE "
                                          "status = ANY(%s) GROUP BY status", (_ACTIVE,)):
                out[status] = n
        return out

    def usage(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self._tx() as conn:
            for tenant, status, n in conn.execute(
                    "SELECT tenant, status, count(*) FROM tailor_jobs GROUP BY tenant, status"):
                out.setdefault(tenant, {s.value: 0 for s in JobState})[status] = n
        return out

    def wakeups(self, stop: threading.Event) -> Iterator[None]:
        """Yields whenever a job is queued anywhere (LISTEN on its own connection), and after
        each (re)connect (jobs may have been queued meanwhile), until ``stop`` is set. A
        database that is down is waited out; the trainers' poll covers the gaps."""
        import psycopg

        while not stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True,
                                     connect_timeout=max(1, int(self.connect_timeout_s))) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    yield
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            yield
            except psycopg.OperationalError:
                stop.wait(1.0)

    # -- trainers --------------------------------------------------------------------------------
    def claim(self, owner: str, kinds: Iterable[str] | None = None) -> Lease | None:
        """Settle the running jobs whose lease expired (or whose holder on this host is
        gone), then take the oldest queued job (of ``kinds``) with a fresh lease."""
        from .owner import owner_gone

        kinds = None if kinds is None else list(kinds)
        with self._tx() as conn:
            now = self._now(conn)
            for job in self._select(conn, "status = 'running'", tail="FOR UPDATE SKIP LOCKED"):
                if ((job.lease_expires_at is not None and job.lease_expires_at <= now)
                        or (job.lease_owner is not None and owner_gone(job.lease_owner))):
                    self._save(conn, records.expire(job, now))
            row = conn.execute(
                "SELECT record, payload FROM tailor_jobs WHERE status = 'queued' "
                "AND (%s::text[] IS NULL OR kind = ANY(%s::text[])) ORDER BY created_at, id "
                "LIMIT 1 FOR UPDATE SKIP LOCKED", (kinds, kinds)).fetchone()
            if row is None:
                return None
            job, token = self._job(row), uuid.uuid4().hex
            self._save(conn, records.start(job, owner, token, now, self.lease_s))
            return Lease(job, token, owner, job.lease_expires_at)

    def renew(self, lease: Lease, progress: dict[str, int] | None = None,
              loss: float | None = None) -> Lease:
        with self._tx() as conn:
            job, now = self._held(conn, lease)
            job.lease_expires_at = now + self.lease_s
            if progress is not None:
                job.progress, job.loss = progress, loss
            self._save(conn, job)
            return Lease(job, lease.token, lease.owner, job.lease_expires_at)

    def begin_publish(self, lease: Lease) -> Lease:
        with self._tx() as conn:
            job, now = self._held(conn, lease)
            if job.cancel_requested:
                raise records.Cancelled("cancelled before publishing")
            job.publishing = True
            job.lease_expires_at = now + self.lease_s
            self._save(conn, job)
            return Lease(job, lease.token, lease.owner, job.lease_expires_at)

    def finish(self, lease: Lease, result: dict[str, Any] | None = None) -> QueuedJob:
        with self._tx() as conn:
            job, now = self._held(conn, lease)
            if job.progress.get("total"):
                job.progress = {**job.progress, "step": job.progress["total"]}
            return self._save(conn, records.close(job, JobState.SUCCEEDED, now, result=result))

    def fail(self, lease: Lease, code: str, message: str) -> QueuedJob:
        with self._tx() as conn:
            job, now = self._held(conn, lease)
            return self._save(conn, records.close(job, JobState.FAILED, now,
                                                  error={"code": code, "message": message}))

    def retry(self, lease: Lease, code: str, message: str) -> QueuedJob:
        with self._tx() as conn:
            job, now = self._held(conn, lease)
            return self._save(conn, records.requeue(job, now, "retried", code, message))

    def cancelled(self, lease: Lease) -> QueuedJob:
        with self._tx() as conn:
            job, now = self._held(conn, lease)
            return self._save(conn, records.close(job, JobState.CANCELLED, now))

    def release(self, lease: Lease) -> QueuedJob:
        with self._tx() as conn:
            job, now = self._held(conn, lease)
            return self._save(conn, records.release(job, now))
