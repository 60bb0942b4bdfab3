"""Shared fixtures: the real backbone (loaded once), engines on temporary stores, and a real
`bentoml serve` process for end-to-end tests."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]

# The service's default runtime is `auto` (issue 12): at the first start on a store it builds
# onnxruntime graphs and measures them (tens of seconds on 2 cores), and may serve bf16. Test
# servers are compared with in-process fp32 engines and start on fresh stores, so `Server`
# pins PyTorch fp32 unless the test (or the shell) sets TAILOR_RUNTIME;
# tests/unit/export/test_runtime.py covers auto.
PINNED = {"TAILOR_RUNTIME": "torch"}


@pytest.fixture(scope="session")
def backbone():
    import torch

    from adapters import TextEncoder

    torch.set_num_threads(1)  # as the service does: batch-invariant forwards
    return TextEncoder(workers=2)


@pytest.fixture
def engine(backbone, tmp_path):
    from adapters import AdapterStore, Tailor

    return Tailor(backbone, AdapterStore(tmp_path / "store", backbone.identity))


def snapshot(root: Path) -> dict[str, str]:
    """Every visible file of a store with its sha256: to prove a request changed nothing."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not p.name.startswith(".lock") and not rel.startswith((".tmp", ".trash")):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def recording(errors: list, target):
    """``target`` for a ``threading.Thread`` that records any exception it raises in
    ``errors``: pytest only warns about an exception in a thread, so a test that starts one
    asserts ``errors == []`` after joining it (as tests/unit/adapters/test_lora.py does)."""
    def run(*args, **kwargs):
        try:
            target(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - every failure must reach the test
            errors.append(f"{getattr(target, '__name__', target)}: {e!r}")
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HOMES: list[Path] = []  # the servers' BENTOML_HOME folders, removed when the run ends


class Server:
    """A real `bentoml serve` of the service (or another ``service`` target), on a free port,
    with the given store and a BENTOML_HOME of its own: every `bentoml serve` start empties
    `$BENTOML_HOME/prometheus_multiproc_dir`, so a second server sharing one home would freeze
    the first's request metrics. The home is a temporary folder of its own, not beside the
    store: tests snapshot the store's parent to prove a request wrote nothing outside the
    store, and the server's metrics files change on every request. ``env`` may still set
    BENTOML_HOME."""

    def __init__(self, store: Path, env: dict[str, str] | None = None, log: Path | None = None,
                 service: str = "service.service:TailorService", prefix: list[str] | None = None):
        self.store = Path(store)
        self.env = env or {}
        self.service = service
        self.prefix = prefix or []  # e.g. unshare: run it as if on another host
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or self.store.parent / f"server-{self.port}.log"
        self.home = Path(tempfile.mkdtemp(prefix=f"bentoml-home-{self.port}-"))
        HOMES.append(self.home)
        self.proc: subprocess.Popen | None = None

    def launch(self) -> "Server":
        """Start the process and return at once (``start`` also waits for /readyz)."""
        env = {**PINNED, **os.environ, "TAILOR_STORE_PATH": str(self.store),
               "BENTOML_HOME": str(self.home), "BENTOML_DO_NOT_TRACK": "true", **self.env}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "bentoml", "serve", self.service,
             "--port", str(self.port), "--host", "127.0.0.1", "--working-dir", str(ROOT)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def start(self, timeout: float = 180.0) -> "Server":
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s; log:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)

    def pids(self) -> set[int]:
        """Every live process of this server: the supervisor, its worker (in a session of its
        own) and their children (training workers), by parent links."""
        if self.proc is None:
            return set()
        parent: dict[int, int] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                except OSError:
                    continue
                parent[int(d.name)] = int(stat.rpartition(")")[2].split()[1])
        found, todo = set(), [self.proc.pid]
        while todo:
            pid = todo.pop()
            if pid in parent and pid not in found:
                found.add(pid)
                todo += [p for p, pp in parent.items() if pp == pid]
        return found


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """One real S3-compatible server (SeaweedFS, tests/s3server.py) for the whole run; each
    user takes a bucket of its own (``s3.bucket()``)."""
    from tests.s3server import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


# The store backends an e2e server can run on: `params=STORE_BACKENDS` on a module's server
# fixture runs the module's tests on each (the same tests, not a fork), with
# `env=store_env(request)` for the server.
STORE_BACKENDS = ["file", "s3"]
# For a test whose subject is compute, not storage (accuracy, batching): the folder store only,
# on the module's same server. CI time is the budget that runs it once, not twice.
FOLDER_STORE_ONLY = pytest.mark.parametrize("server", ["file"], indirect=True)


def store_env(request) -> dict[str, str]:
    """The server settings for ``request.param``: none for the folder store; for s3 a bucket
    of its own on the run's SeaweedFS and the standard AWS variables."""
    if request.param == "file":
        return {}
    s3 = request.getfixturevalue("s3")
    return {"TAILOR_STORE_URL": f"s3://{s3.bucket()}/tailor", **s3.env()}


# -- the container smoke test runs in the background (tests/deploy/test_container_smoke.py) --
def pytest_collection_modifyitems(session, config, items):
    """Run the container test last: it only waits for the background smoke run."""
    container = [i for i in items if i.get_closest_marker("container")]
    items[:] = [i for i in items if not i.get_closest_marker("container")] + container


def pytest_collection_finish(session):
    if session.config.option.collectonly or not any(
            i.get_closest_marker("container") for i in session.items):
        return
    from tests.deploy.test_container_smoke import start_smoke

    log = Path(session.config.rootpath) / ".pytest-smoke.log"
    session.config._tailor_smoke = (start_smoke(log), log)


def pytest_unconfigure(config):
    for home in HOMES:
        shutil.rmtree(home, ignore_errors=True)
    proc = getattr(config, "_tailor_smoke", (None, None))[0]
    if proc is not None and proc.poll() is None:  # the run was cut short: do not leave it behind
        os.killpg(proc.pid, signal.SIGTERM)
