"""Starting a child process with a JSON spec, both sides: the training worker
(``training/worker.py`` -> ``worker_main.py``) and the runtime measurement
(``export/runtime_choice.py``) use it, so the protocol is written once.

- parent: ``spawn(module, spec)`` runs ``python -m module`` with this project importable,
  writes ``spec`` as one JSON line to its stdin and keeps stdin open; stdout carries JSON
  lines back (``Child.replies``); stderr goes to a temporary file, not a pipe, so a chatty
  child never blocks on a full pipe (``Child.stderr``).
- child: ``receive(Model)`` reads and validates the spec and from then on exits at once when
  stdin reaches EOF: the parent died or gave up, and nobody will read the result (BentoML's
  circus ``setsid()``s workers, so a child is not killed with its parent's group).
  ``send(reply)`` writes one JSON line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

T = TypeVar("T")
ROOT = str(Path(__file__).resolve().parents[1])  # where adapters/ and export/ are importable


class Child:
    """A running child process (a context manager: leaving it kills a child still running
    and waits for it)."""

    def __init__(self, module: str, spec: BaseModel | dict[str, Any]):
        text = spec.model_dump_json() if isinstance(spec, BaseModel) else json.dumps(spec)
        path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, text=True,
                                     env={**os.environ, "PYTHONPATH": path})
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # it died at once: ``wait`` and ``stderr`` say why
            pass

    def replies(self, model: type[T]) -> Iterator[T]:
        """Each stdout line that parses as ``model``, until the child closes stdout. Other
        lines (a library printing to stdout) are skipped."""
        adapter = TypeAdapter(model)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                yield adapter.validate_json(line)
            except ValidationError:
                continue

    def wait(self, timeout: float | None = None) -> int:
        """The exit status (negative: killed by that signal); ``subprocess.TimeoutExpired``
        after ``timeout`` seconds."""
        return self.proc.wait(timeout)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.running:
            self.proc.kill()

    def stderr(self, last: int | None = None) -> str:
        """What the child wrote to stderr so far (the ``last`` characters)."""
        self._err.seek(0)
        text = self._err.read()
        return text if last is None else text[-last:]

    def close(self) -> None:
        self.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:  # a broken pipe's unflushed buffer: nothing left to say
                    pass
        self._err.close()

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def spawn(module: str, spec: BaseModel | dict[str, Any]) -> Child:
    """Start ``python -m module`` with ``spec`` on its stdin (see the module docstring)."""
    return Child(module, spec)


# -- the child's side -----------------------------------------------------------------------
def receive(model: type[T]) -> T:
    """The spec the parent sent, validated as ``model`` (a pydantic model, or any type
    pydantic validates, e.g. ``dict[str, Any]``). From now on, EOF on stdin ends this
    process with status 3."""
    spec = TypeAdapter(model).validate_json(sys.stdin.readline())
    threading.Thread(target=_exit_when_parent_dies, daemon=True, name="parent-watch").start()
    return spec


def send(reply: BaseModel | dict[str, Any]) -> None:
    """One JSON line to the parent."""
    text = reply.model_dump_json() if isinstance(reply, BaseModel) else json.dumps(reply)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _exit_when_parent_dies() -> None:
    sys.stdin.read()  # blocks until the parent closes the pipe or dies
    os._exit(3)
