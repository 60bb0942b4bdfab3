"""Starting a child process with a JSON spec, both sides: the training worker
(``training/worker.py`` -> ``worker_main.py``) and the runtime measurement
(``export/runtime_choice.py``) use it, so the protocol is written once.

- parent: ``spawn(module, spec)`` runs ``python -m module`` with this project importable,
  writes ``spec`` as one JSON line to its stdin and keeps stdin open; stdout carries JSON
  lines back (``Child.replies``); stderr goes to a temporary file, not a pipe, so a chatty
  child never blocks on a full pipe (``Child.stderr``).
- warm: ``spawn_warm(module, spec, preload)`` gives the same ``Child``, forked from a fork
  server of this process that imported ``preload`` once (``adapters/forkserver.py``): the
  training worker starts in ~0.25 s instead of ~3.8 s of imports. ``module`` then needs a
  ``main()``, which the forked child calls as ``python -m module`` would.
- child: ``receive(Model)`` reads and validates the spec and from then on exits at once when
  stdin reaches EOF: the parent died or gave up, and nobody will read the result (BentoML's
  circus ``setsid()``s workers, so a child is not killed with its parent's group).
  ``send(reply)`` writes one JSON line.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import IO, Any, Iterator, Sequence, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

T = TypeVar("T")
ROOT = str(Path(__file__).resolve().parents[1])  # where adapters/ and export/ are importable


class Child:
    """A running child process (a context manager: leaving it kills a child still running
    and waits for it). ``Process`` starts a fresh interpreter, ``Forked`` asks a warm
    ``ForkServer``; both speak the same protocol and answer the same questions."""

    _in: IO[str]
    _out: IO[str]
    _err: IO[str]

    def _send_spec(self, spec: BaseModel | dict[str, Any]) -> None:
        text = spec.model_dump_json() if isinstance(spec, BaseModel) else json.dumps(spec)
        try:
            self._in.write(text + "\n")
            self._in.flush()
        except BrokenPipeError:  # it died at once: ``wait`` and ``stderr`` say why
            pass

    def replies(self, model: type[T]) -> Iterator[T]:
        """Each stdout line that parses as ``model``, until the child closes stdout. Other
        lines (a library printing to stdout) are skipped."""
        adapter = TypeAdapter(model)
        for line in self._out:
            try:
                yield adapter.validate_json(line)
            except ValidationError:
                continue

    def wait(self, timeout: float | None = None) -> int:
        """The exit status (negative: killed by that signal); ``subprocess.TimeoutExpired``
        after ``timeout`` seconds."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def close_stdin(self) -> None:
        """What the parent's death does: the child sees EOF and exits (status 3)."""
        try:
            self._in.close()
        except OSError:  # a broken pipe's unflushed buffer: nothing left to say
            pass

    def stderr(self, last: int | None = None) -> str:
        """What the child wrote to stderr so far (the ``last`` characters)."""
        self._err.seek(0)
        text = self._err.read()
        return text if last is None else text[-last:]

    def close(self) -> None:
        self.kill()
        self.wait()
        for f in (self._in, self._out):
            try:
                f.close()
            except OSError:  # a broken pipe's unflushed buffer: nothing left to say
                pass
        self._err.close()

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


class Process(Child):
    """``python -m module``, a fresh interpreter."""

    def __init__(self, module: str, spec: BaseModel | dict[str, Any]):
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, text=True,
                                     env=_env())
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout
        self._send_spec(spec)

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.running:
            self.proc.kill()


class ForkServer:
    """The parent's side of ``python -m adapters.forkserver`` (the protocol is described
    there): started with ``preload`` imported, it forks a child per ``start``. A reader
    thread hands the server's answers to whoever waits for them. If the server dies (the
    OOM killer), the children it forked and nobody could report on any more are killed and
    reported so (status -9), ``start`` raises ``OSError``, and the next ``spawn_warm``
    starts a new server."""

    def __init__(self, preload: Sequence[str]):
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._log = tempfile.TemporaryFile(mode="w+")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "adapters.forkserver", "--fd", str(theirs.fileno()),
                 *preload], stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                pass_fds=(theirs.fileno(),), env=_env())
        finally:
            theirs.close()
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._pids: dict[int, Future[int | None]] = {}  # request id -> the child's pid
        self._exits: dict[int, Future[int]] = {}  # pid -> its exit status
        self.alive = True
        threading.Thread(target=self._read, daemon=True, name="forkserver-reader").start()

    def _read(self) -> None:
        while True:
            try:
                msg = self._sock.recv(65536)
            except OSError:
                msg = b""
            if not msg:
                break
            m = json.loads(msg)
            with self._lock:
                if "pid" in m:
                    self._exits.setdefault(m["pid"], Future())
                    self._pids.pop(m["id"]).set_result(m["pid"])
                else:
                    self._exits.setdefault(m["exit"], Future()).set_result(m["status"])
        with self._lock:  # the server is gone (killed: it would have killed its children)
            self.alive = False
            for slot in self._pids.values():
                slot.set_result(None)
            for pid, status in self._exits.items():
                if not status.done():  # an orphan now: nobody would report its exit
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    status.set_result(-signal.SIGKILL)

    def start(self, module: str, fds: Sequence[int], timeout: float = 300.0) -> int:
        """Fork a child that runs ``module.main()`` with ``fds`` as its stdin, stdout and
        stderr; its pid. The first call waits for the server's imports."""
        with self._lock:
            if not self.alive:
                raise OSError("the fork server is gone")
            rid = next(self._ids)
            slot = self._pids[rid] = Future()
            socket.send_fds(self._sock, [json.dumps({"id": rid, "module": module}).encode()],
                            list(fds))
        try:
            pid = slot.result(timeout)
        except FutureTimeout:
            pid = None
        if pid is None:
            raise OSError(f"the fork server did not fork {module} "
                          f"({'gone' if not self.alive else f'{timeout:.0f} s'}): "
                          f"{self.log(last=1000)}")
        return pid

    def wait(self, pid: int, timeout: float | None = None) -> int:
        with self._lock:
            status = self._exits.setdefault(pid, Future())
        try:
            return status.result(timeout)
        except FutureTimeout:
            raise subprocess.TimeoutExpired(f"forked child {pid}", timeout or 0) from None

    def forget(self, pid: int) -> None:
        """Drop a finished child's exit status (a long-lived trainer forks thousands)."""
        with self._lock:
            status = self._exits.get(pid)
            if status is not None and status.done():
                del self._exits[pid]

    def exited(self, pid: int) -> bool:
        with self._lock:
            status = self._exits.get(pid)
        return status is not None and status.done()

    def log(self, last: int = 2000) -> str:
        self._log.seek(0)
        return self._log.read()[-last:]

    def close(self) -> None:
        """Stop the server (it kills its children) and wait for it."""
        self._sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class Forked(Child):
    """A child forked by a warm ``ForkServer``: ``module.main()`` in a process that already
    imported what it needs."""

    def __init__(self, server: ForkServer, module: str, spec: BaseModel | dict[str, Any]):
        self._server = server
        self._status: int | None = None
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        fd, path = tempfile.mkstemp(prefix="child-stderr-")
        err_w = os.open(path, os.O_WRONLY | os.O_APPEND)  # its own offset: reads never move it
        os.unlink(path)
        self._err = os.fdopen(fd, "r")
        try:
            self.pid = server.start(module, [in_r, out_w, err_w])
        except BaseException:
            for f in (in_w, out_r):
                os.close(f)
            self._err.close()
            raise
        finally:
            for f in (in_r, out_w, err_w):
                os.close(f)
        self._in, self._out = os.fdopen(in_w, "w"), os.fdopen(out_r, "r")
        self._send_spec(spec)

    def wait(self, timeout: float | None = None) -> int:
        if self._status is None:
            self._status = self._server.wait(self.pid, timeout)
            self._server.forget(self.pid)
        return self._status

    @property
    def running(self) -> bool:
        return self._status is None and not self._server.exited(self.pid)

    def kill(self) -> None:
        if self.running:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def spawn(module: str, spec: BaseModel | dict[str, Any]) -> Child:
    """Start ``python -m module`` with ``spec`` on its stdin (see the module docstring)."""
    return Process(module, spec)


_SERVERS: dict[tuple[str, ...], ForkServer] = {}
_SERVERS_LOCK = threading.Lock()


def spawn_warm(module: str, spec: BaseModel | dict[str, Any], preload: Sequence[str]) -> Child:
    """Like ``spawn``, but forked from this process's fork server for ``preload`` (started
    at the first call, and again if it died); ``module`` must have a ``main()``, which runs
    as ``python -m module`` would run it."""
    key = tuple(preload)
    with _SERVERS_LOCK:
        server = _SERVERS.get(key)
        if server is None or not server.alive or server.proc.poll() is not None:
            server = _SERVERS[key] = ForkServer(preload)
    return Forked(server, module, spec)


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
