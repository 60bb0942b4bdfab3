"""A fork server for training workers: ``python -m adapters.forkserver --fd N MODULE...``.

It imports the given modules once (torch, the backbone's modules, the kinds: what a
training worker needs), then forks one child per request, which calls ``main()`` of the
requested module with the request's pipes as its stdin, stdout and stderr. A job's worker
then starts in ~0.25 s and ~0.26 CPU s instead of ~3.8 s and ~4.0 CPU s of a fresh
interpreter's imports (benchmarks/research/warm_worker.py, benchmarks/RESULTS.md).

Why our own and not ``multiprocessing``'s forkserver: its children re-import the parent's
``__main__`` (spawn's preparation data), which in the service is BentoML's worker module;
and the training worker's protocol is pipes and an exit status (``adapters/child.py``), which
this keeps: the child is the same ``main()`` a cold ``python -m`` runs.

The parent (``adapters.child.ForkServer``) holds the other end of a SOCK_SEQPACKET socket,
fd ``N`` here. Messages are JSON, one per packet:

- parent -> server: ``{"id": i, "module": m}`` with three file descriptors (SCM_RIGHTS): the
  child's stdin, stdout and stderr;
- server -> parent: ``{"id": i, "pid": p}`` once forked, then ``{"exit": p, "status": s}``
  when that child ends (``s`` as ``Popen.returncode``: negative for a signal).

EOF on the socket means the parent died or closed it: the server kills its children and
exits; the children also exit on their own when their stdin, held by the parent, closes.
The server ignores SIGTERM, which its children get when the service stops (``main`` says
why).
Nothing here runs a torch operation before forking: torch's thread pools start on the first
one, and a forked child would inherit a pool without its threads.
"""
from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import sys
import traceback


def _send(sock: socket.socket, msg: dict) -> None:
    sock.send(json.dumps(msg).encode())


def _run_child(module: str, fds: list[int], keep_out: list[int]) -> None:
    """In the forked child: the request's pipes as fds 0-2, then ``module.main()``. Never
    returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd in keep_out:
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        sys.argv = [module]
        try:
            importlib.import_module(module).main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - the parent reads it from stderr
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--fd":
        sys.exit("usage: python -m adapters.forkserver --fd N MODULE...")
    sock = socket.socket(fileno=int(args[1]))
    for name in args[2:]:
        importlib.import_module(name)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
    # When the server stops, its supervisor SIGTERMs the worker's children: a training
    # worker so stopped reports -15, and its job goes back to the queue unspent ("stopped").
    # The fork server stays to report that status, and exits when its parent does.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    children: set[int] = set()

    def stop() -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(0)

    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        try:
            ready, _, _ = select.select([sock, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            try:
                _send(sock, {"exit": pid, "status": os.waitstatus_to_exitcode(status)})
            except OSError:
                stop()
        if sock in ready:
            try:
                msg, fds, _, _ = socket.recv_fds(sock, 65536, 3)
            except OSError:
                stop()
            if not msg:
                stop()
            req = json.loads(msg)
            pid = os.fork()
            if pid == 0:
                _run_child(req["module"], fds, [sock.fileno(), wake_r, wake_w])
            for fd in fds:
                os.close(fd)
            children.add(pid)
            try:
                _send(sock, {"id": req["id"], "pid": pid})
            except OSError:
                stop()


if __name__ == "__main__":
    main()
