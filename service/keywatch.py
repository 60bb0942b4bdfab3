"""Watch a small file (the API key file) and hand its new content over when it changes.

Kubernetes updates a mounted Secret by writing a new timestamped directory and swapping the
``..data`` symlink to it: the file's path stays, its inode and content change, and its mtime
may not. So the watcher re-reads the file by path every ``poll_s`` seconds and compares a
sha256 of the content (a few hundred bytes: cheaper than being clever). A change is handed
over only once the same new content has been read twice in a row, so a file that someone
rewrites in place is not taken half-written.

No dependency, no inotify (which misses symlink swaps unless the directory is watched, and
is not available on every volume type).
"""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger("tailor")


class FileWatch:
    """Polls ``path``; calls ``on_change(text)`` from its own thread when the content changed
    and read the same twice. ``on_change`` decides whether to take it (and logs)."""

    def __init__(self, path: str | Path, on_change: Callable[[str], None], *,
                 poll_s: float = 1.0, initial: str | None = None):
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s}")
        self.path = Path(path)
        self.on_change = on_change
        self.poll_s = poll_s
        self._current = _digest(initial) if initial is not None else None
        self._candidate: bytes | None = None
        self._unreadable = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def check(self, *, settle: bool = True) -> bool:
        """One poll: True when ``on_change`` was called. Never raises for a missing or
        unreadable file (it is reported once and the old content stays in force).
        ``settle=False`` takes a change at first sight (the check when watching starts)."""
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            if not self._unreadable:
                log.error("%s: cannot read it (%s); keeping the keys in use", self.path,
                          getattr(e, "strerror", None) or type(e).__name__)
            self._unreadable = True
            return False
        self._unreadable = False
        digest = _digest(text)
        if digest == self._current:
            self._candidate = None
            return False
        if settle and digest != self._candidate:  # first sight: wait for one more identical read
            self._candidate = digest
            return False
        self._current, self._candidate = digest, None
        self.on_change(text)
        return True

    def start(self) -> "FileWatch":
        """Check once now (whatever changed since ``initial`` was read counts at once), then
        poll on a daemon thread. Idempotent and cheap once started."""
        if self._thread is not None:
            return self
        with self._start_lock:
            if self._thread is None:
                self.check(settle=False)
                self._thread = threading.Thread(target=self._run, name="tailor-key-watch",
                                                daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a bug in on_change must not stop the watching
                log.exception("reloading %s failed; keeping the keys in use", self.path)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()
