"""Background jobs (training of job kinds such as LoRA): a bounded queue, a fixed number of
runners, states persisted as JSON next to the store so that a restart reports what it
interrupted.

A job is data: its kind, tenant, adapter name and a JSON-able ``payload`` (what to train).
The process that runs jobs gives the manager one ``run(job) -> result dict`` at ``start``
(the ``Tailor`` facade's executor); ``run`` reports progress with ``job.report(step, total,
loss)``, checks ``job.cancel_requested`` and raises ``Cancelled`` to stop, and calls
``job.begin_publish()`` right before it makes its result visible: after that a cancel is
refused (409) instead of racing the publish, and no global lock is held across the store's
fsyncs.

States: queued -> running -> succeeded | failed | cancelled. Job files live at
``<root>/<id>.json`` and are written atomically (temp file + rename).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import queue
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..validation import shorten
from ..errors import Conflict, JobNotFound, Overloaded, TailorError

log = logging.getLogger("tailor.jobs")

ACTIVE = ("queued", "running")
# Job ids are uuid4 hex (32 characters). Anything else is not looked up at all: not in memory,
# and not as a file name (a 300-character id failed with ENAMETOOLONG, a 500, not a 404).
JOB_ID_RE = re.compile(r"[0-9a-f]{32}")


class Cancelled(Exception):
    """Raised by a job's work when it saw ``cancel_requested``."""


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22), or
    None where that cannot be read (not Linux, process gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parens
    return fields[19] if len(fields) > 19 else None


def _owner() -> str:
    """host:pid:start-time of this process. The start time tells a live owner from a new
    process that got the dead owner's pid: after a container restart, pids start over."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or ''}"


def _owner_gone(owner: str) -> bool:
    """True when the process that owned a job is known to be dead: this host, pid not alive
    or alive but started at another time (a reused pid), or this very process (a record from
    before it existed). A job owned by another host (a replica sharing the store) is left
    alone. Also reads the older ``host:pid`` form."""
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True  # a record from before this process existed
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's: only the start time can tell
    now = _start_time(int(pid))
    return bool(started and now and started != now)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class JobRecord:
    """What GET /v1/jobs/{id} answers."""

    id: str
    kind: str
    tenant: str
    adapter: str
    status: str = "queued"
    progress: dict[str, int] = field(default_factory=lambda: {"step": 0, "total": 0})
    loss: float | None = None
    error: dict[str, str] | None = None
    result: dict[str, Any] | None = None
    owner: str = field(default_factory=lambda: _owner())  # host:pid:start-time of its process
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("tenant")
        d.pop("owner")
        return d


class Job:
    """A record plus its payload and cancel flag (in memory only)."""

    def __init__(self, record: JobRecord, payload: dict[str, Any], manager: "JobManager"):
        self.record = record
        self.payload = payload
        self._manager = manager
        self.cancel_requested = threading.Event()
        self.publishing = False
        self._last_save = 0.0

    def begin_publish(self) -> None:
        """Called by the work right before publishing its result: raises ``Cancelled`` if a
        cancel came first; afterwards cancel answers 409 (the result is on its way)."""
        with self._manager.lock:
            if self.cancel_requested.is_set():
                raise Cancelled("cancelled before publishing")
            self.publishing = True

    def report(self, step: int, total: int, loss: float | None) -> None:
        with self._manager.lock:
            self.record.progress = {"step": int(step), "total": int(total)}
            self.record.loss = None if loss is None else round(float(loss), 6)
            if time.monotonic() - self._last_save > 0.5 or step == total:
                self._last_save = time.monotonic()
                self._manager._save(self.record)


class JobManager:
    """Runs jobs on ``concurrency`` background threads; at most ``max_queued`` wait."""

    KEEP_FINISHED = 256  # finished jobs kept in memory; older ones are read from their files

    def __init__(self, root: str | Path, *, max_queued: int = 8, concurrency: int = 1,
                 retry_after_s: int = 30, run: Callable[[Job], dict[str, Any]] | None = None):
        if max_queued < 1 or concurrency < 1:
            raise ValueError(f"max_queued and concurrency must be >= 1, got {max_queued}, {concurrency}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        self.lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._queued = 0
        self._recover()
        self._run: Callable[[Job], dict[str, Any]] | None = None
        self._threads = [threading.Thread(target=self._loop, name=f"tailor-job-{i}", daemon=True)
                         for i in range(concurrency)]
        if run is not None:
            self.start(run)

    @property
    def started(self) -> bool:
        return self._run is not None

    def start(self, run: Callable[[Job], dict[str, Any]]) -> None:
        """Start the runners with this process's executor (once)."""
        if self._run is not None:
            raise RuntimeError("the job manager is already started")
        self._run = run
        for t in self._threads:
            t.start()

    # -- persistence ------------------------------------------------------------------------
    def _path(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    def _save(self, rec: JobRecord) -> None:
        tmp = self.root / f".{rec.id}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(asdict(rec), indent=2, sort_keys=True))
        os.replace(tmp, self._path(rec.id))

    def _recover(self) -> None:
        """Jobs that were queued or running when their process stopped did not finish: say so.
        Runs before this manager accepts jobs, so none of its own are on disk yet."""
        for tmp in self.root.glob(".*.tmp"):  # a record write cut short by a crash
            with contextlib.suppress(FileNotFoundError):
                if time.time() - tmp.stat().st_mtime > 60:  # not a replica's write in flight
                    tmp.unlink()
        for path in self.root.glob("*.json"):
            try:
                rec = JobRecord(**json.loads(path.read_text()))
            except (ValueError, TypeError) as e:
                log.warning("unreadable job file %s: %s", path, e)
                continue
            if rec.status in ACTIVE and _owner_gone(rec.owner):
                rec.status = "failed"
                rec.error = {"code": "interrupted", "message": "interrupted by a restart of the "
                             "server before it finished; nothing was published. Submit it again"}
                rec.finished_at = _now()
                self._save(rec)

    def _read(self, job_id: str) -> JobRecord | None:
        try:
            return JobRecord(**json.loads(self._path(job_id).read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    # -- API ----------------------------------------------------------------------------------
    def submit(self, kind: str, tenant: str, adapter: str, payload: dict[str, Any]) -> JobRecord:
        with self.lock:
            if self._queued >= self.max_queued:
                raise Overloaded(f"{self._queued} training jobs are already waiting (limit "
                                 f"{self.max_queued}, TAILOR_JOB_QUEUE_SIZE); retry later",
                                 headers={"Retry-After": str(self.retry_after_s)})
            rec = JobRecord(id=uuid.uuid4().hex, kind=kind, tenant=tenant, adapter=adapter)
            job = Job(rec, payload, self)
            self._jobs[rec.id] = job
            self._queued += 1
            self._save(rec)
        self._queue.put(job)
        return JobRecord(**asdict(rec))

    def get(self, tenant: str, job_id: str) -> JobRecord:
        """A copy of the job's record; another tenant's job is 404, as if it did not exist."""
        with self.lock:
            known = isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id)
            job = self._jobs.get(job_id) if known else None
            rec = JobRecord(**asdict(job.record)) if job else (self._read(job_id) if known else None)
        if rec is None or rec.tenant != tenant:
            raise JobNotFound(f"job {shorten(job_id)} does not exist; the answer to POST /v1/adapters "
                              "names its job")
        return rec

    def active(self, tenant: str) -> list[JobRecord]:
        """Copies of this process's queued and running jobs of ``tenant``, oldest first."""
        with self.lock:
            return [JobRecord(**asdict(j.record)) for j in self._jobs.values()
                    if j.record.tenant == tenant and j.record.status in ACTIVE]

    def cancel(self, tenant: str, job_id: str) -> JobRecord:
        rec = self.get(tenant, job_id)
        with self.lock:
            job = self._jobs.get(job_id)
            if job is None or job.record.status not in ACTIVE:
                raise Conflict(f"job {job_id} is {rec.status}; only queued or running jobs can be cancelled")
            if job.publishing:
                raise Conflict(f"job {job_id} has finished training and is publishing its adapter; "
                               "delete the new version instead (DELETE /v1/adapters/{name}?version=N)")
            job.cancel_requested.set()
            if job.record.status == "queued":
                self._finish(job, "cancelled")
            return JobRecord(**asdict(job.record))

    def wait(self, tenant: str, job_id: str, timeout: float = 60.0) -> JobRecord:
        """Poll until the job is finished (for notebooks and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            rec = self.get(tenant, job_id)
            if rec.status not in ACTIVE or time.monotonic() > deadline:
                return rec
            time.sleep(0.1)

    def close(self) -> None:
        """Stop the runners after the job in hand (tests)."""
        for job in list(self._jobs.values()):
            job.cancel_requested.set()
        for _ in self._threads:
            self._queue.put(None)

    # -- runners ------------------------------------------------------------------------------
    def _finish(self, job: Job, status: str, *, error: dict[str, str] | None = None,
                result: dict[str, Any] | None = None) -> None:
        with self.lock:
            if job.record.status == "queued":
                self._queued -= 1
            job.record.status = status
            job.record.error = error
            job.record.result = result
            job.record.finished_at = _now()
            self._save(job.record)
            finished = [k for k, j in self._jobs.items() if j.record.status not in ACTIVE]
            for k in finished[:max(0, len(finished) - self.KEEP_FINISHED)]:
                del self._jobs[k]  # still answered from its file

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self.lock:
                if job.record.status != "queued":  # cancelled while waiting
                    continue
                self._queued -= 1
                job.record.status = "running"
                job.record.started_at = _now()
                self._save(job.record)
            assert self._run is not None
            try:
                result = self._run(job)
            except Cancelled:
                self._finish(job, "cancelled")
            except TailorError as e:
                self._finish(job, "failed", error={"code": e.code, "message": e.message})
            except Exception as e:  # a bug in training: report it, keep the runner alive
                log.exception("job %s failed", job.record.id)
                self._finish(job, "failed", error={"code": "internal_error",
                                                   "message": f"training failed: {e}"})
            else:
                self._finish(job, "succeeded", result=result)
