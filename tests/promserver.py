"""A real Prometheus server for end-to-end tests: Debian's ``prometheus`` binary scraping
real ``bentoml serve`` processes (tests/conftest.py's ``Server``) every ``interval``, queried
through its HTTP API as a dashboard or an alert would.

The binary comes from deploy/install-prometheus.sh (root, apt; seconds when present), which
``ensure_installed`` runs when ``prometheus`` is missing: where it cannot be installed the
test fails loudly, it is never silently skipped.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

import httpx
import yaml

from tests.conftest import TLS, free_port, stop_group

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "deploy" / "install-prometheus.sh"


def ensure_installed() -> str:
    """The path of ``prometheus`` (installing it with deploy/install-prometheus.sh first if
    needed). ``promtool`` comes in the same package."""
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        out = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"{INSTALL} failed ({out.returncode}):\n{out.stdout[-2000:]}\n"
                               f"{out.stderr[-2000:]}")
    found = shutil.which("prometheus")
    if not found:
        raise RuntimeError(f"prometheus is not on PATH after {INSTALL}")
    return found


class Prometheus:
    """``prometheus`` on a free loopback port scraping ``targets`` (``host:port``, path
    /metrics) as job ``tailor``, with its own empty TSDB under ``workdir``."""

    def __init__(self, targets: Iterable[str], workdir: Path, *, interval: str = "1s",
                 rule_files: Iterable[Path] = (), evaluation_interval: str = "1s",
                 metric_relabel_configs: list[dict] | None = None):
        self.targets = list(targets)
        self.workdir = Path(workdir)
        self.interval = interval
        self.rule_files = [str(p) for p in rule_files]
        self.evaluation_interval = evaluation_interval
        self.metric_relabel_configs = metric_relabel_configs or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "prometheus.log"

    def config(self) -> dict:
        return {
            "global": {"scrape_interval": self.interval, "scrape_timeout": self.interval,
                       "evaluation_interval": self.evaluation_interval},
            "rule_files": self.rule_files,
            "scrape_configs": [{"job_name": "tailor", "metrics_path": "/metrics",
                                "static_configs": [{"targets": self.targets}],
                                "metric_relabel_configs": self.metric_relabel_configs}],
        }

    def start(self, timeout: float = 60.0) -> "Prometheus":
        binary = ensure_installed()
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=2, verify=TLS).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_group(self.proc, timeout=20)
        self.log.close()

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP API -----------------------------------------------------------------------------
    def api(self, path: str, **params) -> dict:
        r = httpx.get(self.url + "/api/v1/" + path, params=params, timeout=10, verify=TLS)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {r.status_code} {body}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant vector: (labels, value) per series."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def values(self, expr: str, by: str) -> dict[str, float]:
        """The instant vector as {value of label ``by``: sample value}."""
        return {labels.get(by, ""): v for labels, v in self.query(expr)}

    def targets_up(self) -> list[dict]:
        return [t for t in self.api("targets")["activeTargets"] if t["health"] == "up"]

    def wait_for(self, fn: Callable[[], object], timeout: float = 30.0, every: float = 0.25):
        """Poll ``fn`` (which queries this server) until it returns something truthy; return it.
        Raises AssertionError with the last value when the time is up."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = fn()
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"not true after {timeout}s; last value: {last!r}\n{self.tail()}")
            time.sleep(every)

    def scraped_after(self, t: float, timeout: float = 30.0) -> None:
        """Wait until every target has been scraped after wall-clock time ``t``: counts sent
        before ``t`` are then in the TSDB."""
        def fresh():
            ts = self.targets_up()
            return len(ts) == len(self.targets) and all(
                _parse_time(x["lastScrape"]) > t for x in ts)
        self.wait_for(fresh, timeout)


def relabel_configs(operator_relabelings: list[dict]) -> list[dict]:
    """A ServiceMonitor's ``metricRelabelings`` (the operator's camelCase) as Prometheus's own
    ``metric_relabel_configs``: the tests run the very rules the cluster would."""
    def snake(k: str) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower()
    return [{snake(k): v for k, v in r.items()} for r in operator_relabelings]


def _parse_time(s: str) -> float:
    """RFC 3339 with nanoseconds (Prometheus's lastScrape) -> epoch seconds."""
    import datetime as dt

    s = s.replace("Z", "+00:00")
    head, _, rest = s.partition(".")
    if rest:  # trim the fraction to microseconds for fromisoformat
        frac = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(frac):]
        s = f"{head}.{frac[:6]}{tz}"
    return dt.datetime.fromisoformat(s).timestamp()
