"""Start and stop real `bentoml serve` processes for end-to-end tests.

Several servers start in parallel (each takes ~15 s to warm the backbone on 2 cores), each
on a free port, in its own process group so that stopping one stops its workers too.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def stop(self, grace_s: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start(env: dict[str, str], log: Path) -> Server:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    full_env.update(env)
    cmd = [sys.executable, "-m", "bentoml", "serve", "service.service:TailorService",
           "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(ROOT)]
    proc = subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    return Server(proc, port, log)


def wait_ready(servers: list[Server], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(servers)
    while pending:
        for s in list(pending):
            if s.proc.poll() is not None:
                raise RuntimeError(f"server on :{s.port} exited {s.proc.returncode}:\n"
                                   + s.log.read_text()[-4000:])
            try:
                if httpx.get(s.url + "/readyz", timeout=2).status_code == 200:
                    pending.remove(s)
            except httpx.HTTPError:
                pass
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout_s}s:\n"
                               + "\n".join(s.log.read_text()[-3000:] for s in pending))
        time.sleep(0.3)
