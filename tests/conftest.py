"""Shared fixtures: the real backbone (loaded once), engines on temporary stores, and a real
`bentoml serve` process for end-to-end tests."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import ssl
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

# httpx builds a new TLS context (certifi's CA bundle: ~21 ms of CPU here) for every Client,
# httpx.get and httpx.post that is not handed one. The suite's traffic is plain HTTP on
# loopback, and its polls and bursts built thousands of them (~40 CPU s of a CI run on 2
# cores, measured 2026-12-07): the clients made in loops pass this one (``verify=TLS``).
TLS = ssl.create_default_context()


@pytest.fixture(scope="session")
def backbone():
    import torch

    from adapters import TextEncoder

    torch.set_num_threads(1)  # as the service does: batch-invariant forwards
    return TextEncoder(workers=2)


@pytest.fixture(scope="session")
def onnx_graphs(backbone, tmp_path_factory) -> Path:
    """The folder of the backbone's onnxruntime graphs that ``auto`` measures and serves: fp32
    (the plain one and its LoRA-routed twin) and int8-rows (the same two), built ONCE per run
    by the runtimes' own builds (export/runtimes/ort.py: trace, fuse, parity checks;
    export/int8_rows.py: calibrate, quantize) under a lock that both xdist workers share.
    Three tests whose subject is not the build (the measuring child, the onnx engine's
    answers, the default runtime over HTTP) start from them with ``seed_onnx_cache``, as a
    replica finds the graphs another one built on a shared store: each had built the same
    fp32 graphs (~13 CPU s) and int8-rows graphs (~7 CPU s) itself."""
    import fcntl

    from export import int8_rows
    from export.lora_graph import DEFAULT_TARGETS
    from export.runtimes.ort import cached_graphs

    # under xdist the workers' temp folders share a parent (this run's); alone, this run's own
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "onnx-fp32-graphs"
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached_graphs(backbone, root)  # what OnnxEncoder.open builds on a miss
        plain, routed = (int8_rows.cache_path(root, backbone, t) for t in (None, DEFAULT_TARGETS))
        if not (plain.exists() and routed.exists()):  # what onnx-int8-rows builds on a miss
            int8_rows.build(backbone, plain, routed, DEFAULT_TARGETS)
    return root


def seed_onnx_cache(graphs: Path, cache_dir: Path) -> None:
    """Put the run's built graphs (``onnx_graphs``) into a runtime cache folder (a
    store's ``.onnx``): hard links, read-only to every reader."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    for graph in [*graphs.glob("*.onnx"), *graphs.glob("*.npz")]:
        os.link(graph, cache_dir / graph.name)


@pytest.fixture
def engine(backbone, tmp_path):
    from adapters import AdapterStore, Tailor

    return Tailor(backbone, AdapterStore(tmp_path / "store", backbone.identity))


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL for the whole session (tests/pgserver.py), started on first use."""
    from tests.pgserver import PgServer

    server = PgServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pg_url(pg_server) -> str:
    """A fresh database of that server for each test module."""
    return pg_server.database()


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


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Send ``sig`` to the process group a test started (``start_new_session=True``) and wait;
    SIGKILL after ``timeout`` seconds. Every real server the tests start stops this way."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Server:
    """A real `bentoml serve` of the service (or another ``service`` target), on a free port,
    with the given store and a BENTOML_HOME of its own: every `bentoml serve` start empties
    `$BENTOML_HOME/prometheus_multiproc_dir`, so a second server sharing one home would freeze
    the first's request metrics. The home is a temporary folder of its own, not beside the
    store: tests snapshot the store's parent to prove a request wrote nothing outside the
    store, and the server's metrics files change on every request. ``env`` may still set
    BENTOML_HOME. ``queue_url``: the job queue (TAILOR_QUEUE_URL; None = files in the store)."""

    def __init__(self, store: Path, env: dict[str, str] | None = None, log: Path | None = None,
                 service: str = "service.service:TailorService", prefix: list[str] | None = None,
                 queue_url: str | None = None):
        self.store = Path(store)
        self.env = {**({"TAILOR_QUEUE_URL": queue_url} if queue_url else {}), **(env or {})}
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
        try:
            return self.wait_ready(timeout)
        except RuntimeError:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 180.0) -> "Server":
        """Wait for /readyz after ``launch``; a RuntimeError with the log's tail if the process
        exits or is not ready within ``timeout``."""
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=TLS, timeout=2) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}; "
                                       f"log:\n{self.tail()}")
                try:
                    if c.get(self.url + "/readyz").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                # 0.1 s: a start takes ~4 s, and the suite starts ~50 servers; a refused
                # connection costs nothing (the client shares one TLS context)
                time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s; log:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        stop_group(self.proc, sig, timeout)
        self.log.close()
        return self.proc.returncode

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **{"verify": TLS, **kw})

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


# The configurations an e2e server can run in: `params=STORE_BACKENDS` on a module's server
# fixture runs the module's tests on each (the same tests, not a fork), with
# `env=store_env(request)` for the server: the embedded default and S3 + PostgreSQL.
STORE_BACKENDS = ["file", "s3-pg"]
# For a test whose subject is compute, not storage (accuracy, batching): the folder store only,
# on the module's same server. CI time is the budget that runs it once, not twice.
FOLDER_STORE_ONLY = pytest.mark.parametrize("server", ["file"], indirect=True)


def store_env(request) -> dict[str, str]:
    """The server settings for ``request.param``: none for the embedded default (folder store,
    file queue); for ``s3-pg``, the scale-out configuration: adapters in a bucket of its own on
    the run's SeaweedFS (with the standard AWS variables), jobs in a database of its own on
    the run's PostgreSQL."""
    if request.param == "file":
        return {}
    s3, pg = request.getfixturevalue("s3"), request.getfixturevalue("pg_server")
    return {"TAILOR_STORE_URL": f"s3://{s3.bucket()}/tailor", **s3.env(),
            "TAILOR_QUEUE_URL": pg.database()}


# -- the container smoke test runs in the background (tests/deploy/test_container_smoke.py) --
E2E_HOMES = ("tests/e2e/", "tests/deploy/test_container_smoke.py")


def pytest_collection_modifyitems(session, config, items):
    """The folder says what a test starts (tests/README.md): a test that starts a real server
    lives in tests/e2e/ and is marked e2e there, so that `make test-fast` (``-m "not e2e"``)
    and the folders agree; a mismatch stops the run. Then the order of the run (below)."""
    misplaced = [i.nodeid for i in items
                 if (i.get_closest_marker("e2e") is not None) != i.nodeid.startswith(E2E_HOMES)]
    if misplaced:
        raise pytest.UsageError("an e2e test outside tests/e2e/, or an unmarked test inside it "
                                "(move it, or mark the module `pytestmark = pytest.mark.e2e`): "
                                + ", ".join(misplaced[:10]))
    stale = [f for f in MEASURED_S if not (ROOT / f).is_file()]
    if stale:
        raise pytest.UsageError(f"MEASURED_S names files that do not exist (renamed?): {stale}")
    items.sort(key=_run_order)  # stable: a file's tests keep their order


# Longest first: `make test` spreads whole files over parallel workers (pytest-xdist,
# ``--dist loadfile --no-loadscope-reorder``) in this order, so the files that take minutes
# start first and the quick ones fill the gaps at the end (longest-processing-time-first
# scheduling). The files measured at 20 s or more lead, longest first, whatever their folder:
# ordered by folder alone, tests/unit/export's three (100, 50 and 50 s of in-process exports)
# were handed out last and one worker ran them while the other sat idle. Their seconds are
# the medians of two CI runs on fresh clones (2026-12-07, stop 27, 2 cores); a stale figure only
# costs balance. Then the rest by folder, real-server files first. The container test goes
# last: it only waits for the background smoke run.
MEASURED_S = {
    "tests/unit/export/test_onnx_export.py": 135, "tests/e2e/test_text_e2e.py": 99,
    "tests/e2e/test_fuzz.py": 90, "tests/e2e/test_trainer_pool_e2e.py": 83,
    "tests/e2e/test_crash.py": 76, "tests/e2e/test_adapt_e2e.py": 66,
    "tests/e2e/test_monitoring_e2e.py": 54, "tests/e2e/test_invariance_e2e.py": 53,
    "tests/e2e/test_s3_replicas_e2e.py": 50, "tests/unit/export/test_invariance.py": 50,
    "tests/unit/export/test_runtime.py": 44, "tests/e2e/test_lora_e2e.py": 43,
    "tests/e2e/test_update_check_e2e.py": 39, "tests/e2e/test_onnx_runtime_e2e.py": 37,
    "tests/e2e/test_load.py": 33, "tests/e2e/test_console_e2e.py": 29,
    "tests/e2e/test_image_e2e.py": 28, "tests/unit/adapters/test_s3_store.py": 21,
    "tests/e2e/test_client_e2e.py": 21, "tests/e2e/test_audio_e2e.py": 19,
}
FOLDER_ORDER = ("tests/e2e/", "tests/asgi/", "tests/deploy/", "tests/unit/")


def _run_order(item) -> tuple[int, float, int]:
    if item.get_closest_marker("container"):
        return (1, 0, 0)
    path = item.nodeid.split("::", 1)[0]
    return (0, -MEASURED_S.get(path, 0),
            next((n for n, f in enumerate(FOLDER_ORDER) if path.startswith(f)), len(FOLDER_ORDER)))


def _start_smoke(config) -> None:
    from tests.deploy.test_container_smoke import start_smoke

    config._tailor_smoke = start_smoke(Path(config.rootpath))


def pytest_collection_finish(session):
    """Start the container smoke run when collection selects its test: here in a plain run; in
    a parallel run every worker collects, so the controller starts it, once, below."""
    config = session.config
    if config.option.collectonly or hasattr(config, "workerinput"):
        return
    if any(i.get_closest_marker("container") for i in session.items):
        _start_smoke(config)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """The xdist controller: a worker's collection includes the container test."""
    config = node.config
    if (not config.option.collectonly and getattr(config, "_tailor_smoke", None) is None
            and any("test_container_smoke.py::" in i for i in ids)):
        _start_smoke(config)


def pytest_unconfigure(config):
    for home in HOMES:
        shutil.rmtree(home, ignore_errors=True)
    proc = getattr(config, "_tailor_smoke", None)
    if proc is not None and proc.poll() is None:  # the run was cut short: do not leave it behind
        os.killpg(proc.pid, signal.SIGTERM)
