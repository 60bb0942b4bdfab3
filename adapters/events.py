"""What the domain reports as it works, for whoever watches (metrics): an observer protocol
with a silent default.

The registry, the batcher, the engine and the job runner call these methods; the service
passes an implementation that counts them (``service.metrics.Recorder``) through
``Tailor(events=...)`` and ``JobManager(events=...)``. The domain never imports metrics code,
and a notebook pays nothing. Implementations must be thread-safe and cheap: they are called
on the request path, from the batcher's thread and from job runner threads.
"""
from __future__ import annotations

from typing import Iterable, Protocol

from .states import JobState


class Events(Protocol):
    def cold_load(self, tenant: str, adapter: str) -> None:
        """An adapter version (``name@version``) was read from the store into the cache."""

    def cache(self, hit: bool) -> None:
        """One registry lookup: served from memory (``hit``) or loaded from the store."""

    def predictions(self, tenant: str, adapter: str, labels: Iterable[str]) -> None:
        """The top label of each row of one predict request (the label mix, for drift)."""

    def batch(self, rows: int) -> None:
        """One backbone forward over ``rows`` rows (all adapters together)."""

    def queue(self, rows: int, capacity: int | None = None) -> None:
        """Rows waiting for the backbone now, and how many it holds before refusing."""

    def job_state(self, job_id: str, kind: str, state: JobState) -> None:
        """A job entered ``state`` here."""

    def job_duration(self, kind: str, seconds: float) -> None:
        """A job that ran here finished after ``seconds`` (started to finished)."""


class NoEvents:
    """The default observer: hears everything, does nothing."""

    def cold_load(self, tenant: str, adapter: str) -> None:
        pass

    def cache(self, hit: bool) -> None:
        pass

    def predictions(self, tenant: str, adapter: str, labels: Iterable[str]) -> None:
        pass

    def batch(self, rows: int) -> None:
        pass

    def queue(self, rows: int, capacity: int | None = None) -> None:
        pass

    def job_state(self, job_id: str, kind: str, state: JobState) -> None:
        pass

    def job_duration(self, kind: str, seconds: float) -> None:
        pass


NO_EVENTS: Events = NoEvents()
