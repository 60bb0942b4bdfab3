"""A training job's states, spelled once. The queue's transitions (``lease_queue.py``), the
job runner, the HTTP schema, the metrics and the command-line client all use this enum.

queued -> running -> succeeded | failed | cancelled; a running job whose trainer died goes
back to queued (a new attempt). Its own module, free of heavy imports: the command-line
client reads it too.
"""
from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """A final state: the job will not change any more."""
        return self not in ACTIVE


ACTIVE = (JobState.QUEUED, JobState.RUNNING)  # a trainer holds, or will hold, these
FINISHED = tuple(s for s in JobState if s not in ACTIVE)
