"""Background jobs (training of job kinds such as LoRA), kept in a queue that every process
shares, so that any process can queue them and any number of trainer processes can run
them (``queue.py``: the files of the shared store by default, or PostgreSQL; leases,
attempts, fencing).

A job is data: its kind, tenant, adapter name and a JSON ``payload`` (what to train). A
process that runs jobs gives the manager one ``run(job) -> result dict`` at ``start`` (the
``Tailor`` facade's executor) and ``concurrency`` runner threads claim queued jobs from the
store; ``concurrency=0`` only queues (``TAILOR_ROLE=serve``). ``run`` reports progress with
``job.report(step, total, loss)``, watches ``job.cancel_requested`` and raises ``Cancelled``
to stop, and calls ``job.begin_publish()`` right before it makes its result visible: after
that a cancel is refused (409) instead of racing the publish, and no lock is held across the
store's fsyncs. While ``run`` works, a heartbeat renews the job's lease; a lost lease (this
process was stalled past it and another attempt took over) sets ``cancel_requested`` and the
result is thrown away. A queue that is briefly unreachable (PostgreSQL restarting) is
waited out while the lease lasts: the heartbeat tries again, and the calls that settle a
job (``begin_publish``, finish...) are retried until the lease would have expired.

States: queued -> running -> succeeded | failed | cancelled; a running job whose trainer
died goes back to queued (a new attempt) or fails with the reason. On shutdown (``close``) a
running job is handed back without spending an attempt.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import TailorError, Unavailable
from ..events import NO_EVENTS, Events
from .owner import owner_id
from .queue import JobQueue, open_queue
from .records import JOB_ID_RE, Cancelled, Lease, LeaseLost, QueuedJob
from ..states import ACTIVE, JobState

log = logging.getLogger("tailor.jobs")

JobRecord = QueuedJob  # what get/submit/cancel answer; ``.public()`` is the HTTP view
__all__ = ["ACTIVE", "JOB_ID_RE", "Cancelled", "Job", "JobManager", "JobRecord", "JobState"]

REPORT_EVERY_S = 1.0  # progress reaches the store (and renews the lease) at most this often
STOPPING_PAUSE_S = 15.0  # no new claims for this long after a training process was stopped


class Job:
    """A job this process holds a lease on, as the executor sees it."""

    def __init__(self, lease: Lease, manager: "JobManager"):
        self.lease = lease
        self.record = lease.job
        self.payload = lease.job.payload
        self._manager = manager
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()  # the lease is gone: stop, publish nothing
        self.publishing = False
        self._lock = threading.Lock()  # one renewal at a time (heartbeat vs report)
        self._last_report = 0.0

    @property
    def id(self) -> str:
        return self.record.id

    def renew(self, progress: dict[str, int] | None = None, loss: float | None = None) -> None:
        with self._lock:
            if self.lost.is_set():
                return
            try:
                self.lease = self._manager.queue.renew(self.lease, progress, loss)
            except LeaseLost:
                log.warning("job %s: lease lost (this trainer stalled past it); stopping, "
                            "publishing nothing", self.id)
                self.lost.set()
                self.cancel_requested.set()
                return
            except (OSError, Unavailable) as e:  # the lease has slack: the next beat retries
                log.warning("job %s: could not renew the lease (%s)", self.id, e)
                return
            if self.lease.job.cancel_requested:
                self.cancel_requested.set()

    def report(self, step: int, total: int, loss: float | None) -> None:
        now = time.monotonic()
        if now - self._last_report >= REPORT_EVERY_S or step == total:
            self._last_report = now
            self.renew({"step": int(step), "total": int(total)},
                       None if loss is None else round(float(loss), 6))

    def begin_publish(self) -> None:
        """Called by the work right before publishing its result: raises ``Cancelled`` if a
        cancel came first (or ``LeaseLost``); afterwards cancel answers 409."""
        with self._lock:
            if self.cancel_requested.is_set():
                raise Cancelled("cancelled before publishing")
            self.lease = self._manager.patient(self._manager.queue.begin_publish, self.lease)
            self.publishing = True


class JobManager:
    """Queues jobs in the queue ``queue_url`` names, or else in the folder ``root`` (shared
    by every process of a store), and, once started, runs them on ``concurrency`` threads.
    At most ``max_queued`` jobs wait (429 beyond)."""

    def __init__(self, root: str | Path, *, queue_url: str | None = None, max_queued: int = 8,
                 concurrency: int = 1, lease_s: float = 30.0, max_attempts: int = 2,
                 retry_after_s: float = 30.0, poll_s: float = 1.0, events: Events = NO_EVENTS,
                 run: Callable[[Job], dict[str, Any]] | None = None):
        if max_queued < 1 or concurrency < 0:
            raise ValueError(f"need max_queued >= 1 and concurrency >= 0, got {max_queued}, "
                             f"{concurrency}")
        self.queue: JobQueue = open_queue(queue_url, root, lease_s=lease_s,
                                          max_attempts=max_attempts, max_queued=max_queued,
                                          retry_after_s=retry_after_s)
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.events = events
        self._run: Callable[[Job], dict[str, Any]] | None = None
        self._running: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._paused_until = 0.0
        self._threads = [threading.Thread(target=self._loop, name=f"tailor-job-{i}", daemon=True)
                         for i in range(concurrency)]
        if run is not None:
            self.start(run)

    @property
    def started(self) -> bool:
        return self._run is not None

    def start(self, run: Callable[[Job], dict[str, Any]]) -> None:
        """Start the runners with this process's executor (once; none with concurrency 0)."""
        if self._run is not None:
            raise RuntimeError("the job manager is already started")
        self._run = run
        for t in self._threads:
            t.start()
        if self._threads:  # a job queued by another process wakes the runners at once
            threading.Thread(target=self._listen, name="tailor-job-wakeups", daemon=True).start()

    def _listen(self) -> None:
        try:
            for _ in self.queue.wakeups(self._stop):
                self._wake.set()
        except Exception:  # noqa: BLE001 - the runners poll all the same
            log.exception("job runner: no wake-ups from the job queue in %s; polling",
                          self.queue.where)

    def patient(self, call: Callable[..., Any], lease: Lease, *args: Any) -> Any:
        """``call(lease, *args)``, retried while the queue is unreachable and the lease may
        still hold (a database restarting); after that the lease decides (LeaseLost)."""
        deadline = time.monotonic() + self.queue.lease_s
        pause = 0.1
        while True:
            try:
                return call(lease, *args)
            except Unavailable as e:
                if time.monotonic() + pause > deadline:
                    raise LeaseLost(f"job {lease.job.id}: the queue stayed unreachable for "
                                    f"the whole lease ({e.message})") from e
                log.warning("job %s: the queue is unreachable (%s); retrying", lease.job.id,
                            e.message)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    # -- API (any process) ----------------------------------------------------------------------
    def submit(self, kind: str, tenant: str, adapter: str, payload: dict[str, Any]) -> JobRecord:
        rec = self.queue.submit(kind, tenant, adapter, payload)
        self.events.job_state(rec.id, kind, JobState.QUEUED)
        self._wake.set()
        return rec

    def get(self, tenant: str, job_id: str) -> JobRecord:
        """The job's record; another tenant's job is 404, as if it did not exist."""
        return self.queue.get(tenant, job_id)

    def active(self, tenant: str) -> list[JobRecord]:
        """Queued and running jobs of ``tenant`` (submitted by any process), oldest first."""
        return self.queue.active(tenant)

    def of_tenant(self, tenant: str) -> list[JobRecord]:
        """Every job of ``tenant`` (any state, any process), newest first."""
        return self.queue.of_tenant(tenant)

    def page(self, tenant: str, **filters: Any) -> tuple[list[JobRecord], str | None]:
        """One page of ``tenant``'s jobs, newest first, and the next page's cursor."""
        return self.queue.page(tenant, **filters)

    def counts(self) -> dict[str, int]:
        return self.queue.counts()

    def usage(self) -> dict[str, dict[str, int]]:
        return self.queue.usage()

    def cancel(self, tenant: str, job_id: str) -> JobRecord:
        rec = self.queue.cancel(tenant, job_id)
        if rec.status == JobState.CANCELLED:
            self.events.job_state(rec.id, rec.kind, JobState.CANCELLED)
        with self._lock:
            job = self._running.get(job_id)
        if job is not None:  # ours: stop now rather than at the next renewal
            job.cancel_requested.set()
        return rec

    def wait(self, tenant: str, job_id: str, timeout: float = 60.0) -> JobRecord:
        """Poll until the job is finished (for notebooks and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            rec = self.get(tenant, job_id)
            if rec.status not in ACTIVE or time.monotonic() > deadline:
                return rec
            time.sleep(0.1)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the runners: running jobs stop their work and are handed back to the queue
        without spending an attempt (another trainer, or this one restarted, runs them)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            for job in self._running.values():
                job.cancel_requested.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        self.queue.close()

    # -- runners --------------------------------------------------------------------------------
    def _loop(self) -> None:
        owner = owner_id()
        while not self._stop.is_set():
            if time.monotonic() < self._paused_until:  # the server is probably stopping
                self._stop.wait(self.poll_s)
                continue
            try:
                lease = self.queue.claim(owner)
                if lease is not None:
                    self._execute(Job(lease, self))
                    continue
            except Unavailable as e:  # the database is restarting: one line, no traceback
                log.warning("job runner: %s", e.message)
            except Exception:  # noqa: BLE001 - the store hiccupped: the runner must live on
                log.exception("job runner: cannot use the job queue in %s; retrying",
                              self.queue.where)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _execute(self, job: Job) -> None:
        kind, t0 = job.record.kind, time.monotonic()
        with self._lock:
            self._running[job.id] = job
        self.events.job_state(job.id, kind, JobState.RUNNING)
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job, done), daemon=True,
                                name=f"tailor-lease-{job.id[:8]}")
        beat.start()
        try:
            final = self._settle(job, done)
        finally:
            done.set()
            with self._lock:
                del self._running[job.id]
            beat.join()
        if final is not None:
            self.events.job_state(job.id, kind, final.status)
            if final.status.finished:
                self.events.job_duration(kind, time.monotonic() - t0)

    def _heartbeat(self, job: Job, done: threading.Event) -> None:
        """Renew the lease every third of it until the job is settled."""
        while not done.wait(self.queue.lease_s / 3) and not job.lost.is_set():
            job.renew()

    def _settle(self, job: Job, done: threading.Event) -> JobRecord | None:
        """Run the job and record how it ended; None when the lease was lost (another
        attempt owns the job now, or will)."""
        assert self._run is not None

        def lease() -> Lease:  # the latest renewal's lease; the heartbeat stops first
            done.set()
            with job._lock:
                return job.lease
        try:
            try:
                result = self._run(job)
            except Cancelled:
                if job.lost.is_set():
                    return None
                if self._stop.is_set():
                    return self.patient(self.queue.release, lease())
                return self.patient(self.queue.cancelled, lease())
            except TailorError as e:
                if job.lost.is_set():
                    return None
                if e.code == "stopped":  # SIGTERM from the supervisor: shutting down
                    self._paused_until = time.monotonic() + STOPPING_PAUSE_S
                    return self.patient(self.queue.release, lease())
                if e.code == "interrupted":  # the training process was killed, not by us
                    if self._stop.is_set():
                        return self.patient(self.queue.release, lease())
                    return self.patient(self.queue.retry, lease(), e.code, e.message)
                return self.patient(self.queue.fail, lease(), e.code, e.message)
            except LeaseLost:
                raise
            except Exception as e:  # noqa: BLE001 - a bug in training: report it, keep the runner
                log.exception("job %s failed", job.id)
                return self.patient(self.queue.fail, lease(), "internal_error",
                                    f"training failed: {e}")
            if job.lost.is_set():
                return None
            return self.patient(self.queue.finish, lease(), result)
        except LeaseLost:
            log.warning("job %s: lease lost; its outcome is another attempt's", job.id)
            return None
