"""The typed Python client (service/client.py): the README's walkthrough through it against
a real `bentoml serve`, sync and async; 429 retried after its Retry-After against a real
socket; its records kept in step with the server's schemas."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.datasets import trec_coarse
from service import cli
from service import client as typed
from service import schemas
from service.client import AsyncClient, Client, TailorAPIError, TailorConnectionError
from tests.conftest import Server, free_port

EXAMPLES = [{"text": t, "label": lab} for t, lab in [
    ("I was charged twice this month", "billing"), ("Please refund the duplicate payment", "billing"),
    ("My invoice shows the wrong amount", "billing"), ("The app crashes when I open settings", "bug"),
    ("Login button does nothing on Android", "bug"), ("Error 500 when uploading a photo", "bug")]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("client-e2e") / "store").start()
    yield s
    s.stop()


@pytest.mark.e2e
def test_readme_walkthrough_through_the_client(server, tmp_path):
    with Client(server.url) as c:
        rec = c.create_adapter("tickets", EXAMPLES)
        assert isinstance(rec, typed.AdapterRecord) and rec.ref == "tickets@1"
        assert rec.labels == ["billing", "bug"] and "cv_accuracy" in rec.metrics
        out = c.predict("tickets", ["why was my card billed two times?", "the app freezes"])
        assert out.adapter == "tickets@1" and [p.label for p in out.predictions] == ["billing", "bug"]
        assert c.create_adapter("tickets", EXAMPLES).version == 2
        assert [a.ref for a in c.list_adapters().adapters] == ["tickets@2"]
        assert c.get_adapter("tickets").versions == [1, 2]
        assert c.delete_adapter("tickets", version=1).deleted_versions == [1]
        added = c.add_examples("tickets", [{"text": "My card was charged but the order failed",
                                            "label": "billing"}])
        assert added.version == 3 and added.changes["examples_added"] == 1
        sug = c.suggest("tickets", ["where is my refund?", "the app crashed twice",
                                    "can I pay by invoice?"], k=2)
        assert sug.adapter == "tickets@3" and len(sug.suggestions) == 2
        emb = c.embed(["hello"])
        assert emb.dim == 384 and len(emb.embeddings[0]) == 384
        bundle = c.export("tickets@3", tmp_path)
        assert "model.onnx" in zipfile.ZipFile(bundle).namelist()
        with pytest.raises(TailorAPIError) as e:
            c.predict("nope", ["x"])
        assert (e.value.status, e.value.code) == (404, "adapter_not_found")
        assert c.delete_adapter("tickets").deleted_versions == [2, 3]


@pytest.mark.e2e
def test_lora_job_waited_with_progress_listed_and_cancelled(server, capsys):
    train, _ = trec_coarse().few_shot(4, seed=0, max_test=10)
    seen: list[typed.JobRecord] = []
    with Client(server.url) as c:
        pending = c.create_adapter("q", train, kind="lora", options={"epochs": 1})
        assert isinstance(pending, typed.PendingAdapter)
        job = c.wait(pending.job, on_progress=seen.append, interval=0.2, timeout=300)
        assert job.status == "succeeded" and job.result["adapter"] == "q@1"
        assert seen[-1] == job and any(j.status in ("queued", "running") for j in seen)
        doomed = c.create_adapter("q2", train, kind="lora")
        assert c.cancel_job(doomed.job).status in ("cancelled", "running")
        assert c.wait(doomed.job, timeout=120).status == "cancelled"
        listed = c.list_jobs(limit=1)
        assert [j.id for j in listed.jobs] == [doomed.job.id] and listed.next == doomed.job.id
        assert [j.id for j in c.list_jobs(after=listed.next).jobs] == [job.id]
        assert [j.id for j in c.list_jobs(status="succeeded").jobs] == [job.id]
        assert c.list_jobs(adapter="q2").jobs[0].status == "cancelled"
        assert c.predict("q", ["Who wrote Hamlet?"]).adapter == "q@1"
    assert cli.main(["--url", server.url, "jobs", "--limit", "1"]) == 0  # the CLI, on the client
    assert cli.main(["--url", server.url, "jobs", "--status", "succeeded"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(j["id"], j["status"]) for j in lines] == [(doomed.job.id, "cancelled"), (job.id, "succeeded")]


@pytest.mark.e2e
def test_async_client(server):
    async def main() -> None:
        async with AsyncClient(server.url) as c:
            rec = await c.create_adapter("async-tickets", EXAMPLES)
            outs = await asyncio.gather(*(c.predict(rec.ref, [t]) for t in ("refund", "crash")))
            assert [o.predictions[0].label for o in outs] == ["billing", "bug"]
            assert (await c.get_adapter(rec.name)).version == 1
            with pytest.raises(TailorAPIError) as e:
                await c.get_job("f" * 32)
            assert e.value.code == "job_not_found"
            await c.delete_adapter(rec.name)

    asyncio.run(main())


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
    from adapters.training.states import FINISHED
    from service.client import FINAL

    assert set(FINAL) == set(FINISHED)


def test_the_client_imports_neither_torch_nor_bentoml():
    import subprocess
    import sys

    code = ("import sys, service.client; bad = {'torch', 'bentoml', 'adapters'} & set(sys.modules); "
            "sys.exit(f'imported {bad}' if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
