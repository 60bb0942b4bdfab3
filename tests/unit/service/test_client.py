"""The typed Python client (service/client.py) without a Tailor server: 429 retried after its
Retry-After against a real socket, bounded retries, its records kept in step with the
server's schemas (the walkthrough against a real `bentoml serve` is
tests/e2e/test_client_e2e.py)."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service import client as typed
from service import schemas
from service.client import AsyncClient, Client, TailorAPIError, TailorConnectionError
from tests.conftest import free_port

class _Scripted(BaseHTTPRequestHandler):
    """Answers the scripted (status, headers, body) in order, the last one forever."""

    script: list[tuple[int, dict[str, str], dict]] = []
    seen: list[float] = []

    def do_GET(self) -> None:
        type(self).seen.append(time.monotonic())
        status, headers, body = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def scripted():
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _Scripted)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Scripted.seen = []
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


BUSY = (429, {"Retry-After": "1"}, {"error": {"code": "overloaded", "message": "queue full"}})
JOB = {"id": "a" * 32, "kind": "lora_train", "adapter": "q", "status": "running",
       "progress": {"step": 1, "total": 4}, "created_at": "2026-01-01T00:00:00+00:00"}


def test_429_is_retried_after_its_retry_after(scripted):
    _, url = scripted
    _Scripted.script = [BUSY, (200, {}, JOB)]
    job = Client(url).get_job("a" * 32)
    assert job.status == "running" and job.progress.step == 1
    assert len(_Scripted.seen) == 2 and _Scripted.seen[1] - _Scripted.seen[0] >= 0.95


class _KeepAlive(_Scripted):
    """HTTP/1.1: the connection stays open between requests; records each request's port."""
    protocol_version = "HTTP/1.1"
    ports: list[int] = []

    def do_GET(self) -> None:
        type(self).ports.append(self.client_address[1])
        super().do_GET()


def test_a_connection_idle_through_a_retry_wait_is_not_reused():
    """Back from a Retry-After wait of 3 s, the retry goes on a new connection: `bentoml serve`
    (uvicorn) closes a connection idle for 5 s, and one reused as it closes fails with
    ReadError (seen in the load test); the client drops idle ones after 2 s. A request soon
    after the last one keeps its connection."""
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _KeepAlive)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Scripted.script, _KeepAlive.ports = [(429, {"Retry-After": "3"}, BUSY[2]), (200, {}, JOB)], []
    try:
        with Client(f"http://127.0.0.1:{httpd.server_address[1]}") as c:
            c.get_job("a" * 32)
            c.get_job("a" * 32)
    finally:
        httpd.shutdown()
        httpd.server_close()
    first, retried, soon = _KeepAlive.ports
    assert first != retried and retried == soon


def test_retries_are_bounded_and_the_last_error_carries_its_code(scripted):
    _, url = scripted
    _Scripted.script = [BUSY]
    with pytest.raises(TailorAPIError) as e:
        asyncio.run(AsyncClient(url, retries=2, max_retry_wait=0.1).get_job("a" * 32))
    assert (e.value.status, e.value.code, e.value.message) == (429, "overloaded", "queue full")
    assert len(_Scripted.seen) == 3  # the first try and 2 retries, each wait capped at 0.1 s


def test_unreachable_server_is_a_connection_error():
    with pytest.raises(TailorConnectionError) as e:
        Client(f"http://127.0.0.1:{free_port()}", retries=0).list_adapters()
    assert e.value.code == "connection_error" and "cannot reach" in e.value.message


@pytest.mark.parametrize("ours, theirs", [
    (typed.AdapterRecord, schemas.AdapterRecord), (typed.PendingAdapter, schemas.PendingAdapter),
    (typed.JobRecord, schemas.JobRecord), (typed.JobList, schemas.JobList),
    (typed.AdapterList, schemas.AdapterList), (typed.PredictResponse, schemas.PredictResponse),
    (typed.Prediction, schemas.Prediction), (typed.SuggestResponse, schemas.SuggestResponse),
    (typed.EmbedResponse, schemas.EmbedResponse), (typed.DeleteResponse, schemas.DeleteResponse)])
def test_client_records_have_the_servers_fields(ours, theirs):
    assert set(ours.model_fields) == set(theirs.model_fields)
    required = {n for n, f in theirs.model_fields.items() if f.is_required()}
    assert {n for n, f in ours.model_fields.items() if f.is_required()} <= required


def test_the_clients_final_job_states_are_the_servers():
    from adapters.states import FINISHED
    from service.client import FINAL

    assert set(FINAL) == set(FINISHED)


def test_the_client_imports_neither_torch_nor_bentoml():
    import subprocess
    import sys

    code = ("import sys, service.client; bad = {'torch', 'bentoml', 'adapters'} & set(sys.modules); "
            "sys.exit(f'imported {bad}' if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
