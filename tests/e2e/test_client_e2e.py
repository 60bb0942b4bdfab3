"""The typed Python client (service/client.py) against a real `bentoml serve`: the README's
walkthrough, a LoRA job waited with progress, listed and cancelled, the CLI on the client,
and the async client (the client without a server: tests/unit/service/test_client.py)."""
from __future__ import annotations

import asyncio
import json
import zipfile

import pytest

from benchmarks.datasets import trec_coarse
from service import cli
from service import client as typed
from service.client import AsyncClient, Client, TailorAPIError
from tests.conftest import Server

pytestmark = pytest.mark.e2e

EXAMPLES = [{"text": t, "label": lab} for t, lab in [
    ("I was charged twice this month", "billing"), ("Please refund the duplicate payment", "billing"),
    ("My invoice shows the wrong amount", "billing"), ("The app crashes when I open settings", "bug"),
    ("Login button does nothing on Android", "bug"), ("Error 500 when uploading a photo", "bug")]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("client-e2e") / "store").start()
    yield s
    s.stop()


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
