"""The trainer pool with real processes: one `bentoml serve` with TAILOR_ROLE=serve and two
with TAILOR_ROLE=train on one store, each trainer as if on a host of its own (its own UTS
namespace and hostname, as pods are; where `unshare` is not permitted they share this host).
Once with the job queue in the store's files (the default), once scaled out with no shared
disk: adapters in a real S3 server (TAILOR_STORE_URL, tests/s3server.py) and jobs in a real
PostgreSQL (TAILOR_QUEUE_URL, tests/pgserver.py), with a second serving replica: two
replicas and two trainers on one bucket and one database, each with a folder of its own.

- LoRA jobs queued on the serving instance all succeed, each ran once (one attempt, one
  published version), by the trainers only: the serving instance never starts a training
  process;
- a trainer is killed with SIGKILL (every process of it) in the middle of a job: its lease
  runs out, the other trainer runs the job again and it succeeds as attempt 2, the two
  attempts one after the other (never at once);
- PostgreSQL: restarted while jobs run: none lost, none run twice; stopped: a job submit and
  a job read answer 503 with Retry-After, predictions go on, and submits work once it is
  back; any replica answers for any job, lists them page by page and serves the versions
  the trainers published to the bucket;
- predictions on the serving instance answer 200 all along;
- a trainer answers only /readyz, /livez and /metrics.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from benchmarks.datasets import trec_coarse
from tests.conftest import Server, recording

pytestmark = pytest.mark.e2e

LEASE_S = 3
# PostgreSQL is restarted while jobs run, and a trainer rides out an outage shorter than its
# lease: the lease must outlast the restart with room (a 3 s lease ran a job twice in 1 of 2
# runs on a quiet machine, 2026-12-07: stop + start + the pool's reconnect + a 1 s heartbeat
# came close to 3 s). The kill -9 recovery then waits this lease instead.
PG_LEASE_S = 8
EXAMPLES = [{"text": "the striker scored twice in the final", "label": "sport"},
            {"text": "the keeper saved a late penalty", "label": "sport"},
            {"text": "bake the bread until the crust is golden", "label": "food"},
            {"text": "a recipe for lemon cake with fresh cream", "label": "food"}]


def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "--uts", "--fork", "hostname", "x"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _as_host(name: str) -> list[str]:
    return ["unshare", "--uts", "--fork", "sh", "-c", f'hostname {name} && exec "$@"', "sh"]


def _wait(fn, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s (last: {got!r})"
        time.sleep(every)


def _kill_all(server: Server) -> float:
    pids = server.pids()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    t = time.monotonic()
    server.proc.wait()
    server.log.close()
    _wait(lambda: not any(_alive(p) for p in pids), 10, "the killed trainer's processes are gone")
    return t


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _owner_pid(record: dict, attempt: int = -1) -> int:
    return int(record["attempts"][attempt]["owner"].split(":")[1])


class Records:
    """The queue's own record of a job (its attempts, owners and times), read from where the
    backend keeps it, not through the API."""

    def __init__(self, store, queue_url: str | None):
        self.store, self.url = store, queue_url

    def __call__(self, job_id: str) -> dict:
        if self.url is None:
            for where in ("done", "pending"):
                path = self.store / "jobs" / where / f"{job_id}.json"
                if path.exists():
                    return json.loads(path.read_text())
            raise AssertionError(f"no record of job {job_id}")
        import psycopg

        with psycopg.connect(self.url) as conn:
            return conn.execute("SELECT record FROM tailor_jobs WHERE id = %s", (job_id,)).fetchone()[0]


def _one_after_the_other(record: dict) -> None:
    """The job's attempts never overlapped: each ended before the next started."""
    attempts = record["attempts"]
    for a, b in zip(attempts, attempts[1:]):
        assert a["ended_at"] is not None and a["ended_at"] <= b["started_at"], attempts


@pytest.fixture(params=["files", "s3-postgres"])
def queue_url(request):
    """The job queue of the test's servers: None (files in the shared store) or a fresh
    database; with the database, adapters go to a bucket of their own (scale-out: no disk
    shared between the instances)."""
    if request.param == "files":
        return None
    return request.getfixturevalue("pg_server").database()


def test_one_server_and_two_trainers_on_one_store(tmp_path, queue_url, request):
    """Files: one serving instance and two trainers on one shared store folder. S3 +
    PostgreSQL: two serving replicas and two trainers on one bucket and one database, each
    instance with a local folder of its own (its cache), as pods without a shared volume."""
    store = tmp_path / "store"
    lease_s = PG_LEASE_S if queue_url else LEASE_S
    base = {"TAILOR_FORWARD_WORKERS": "1", "TAILOR_JOB_LEASE_S": str(lease_s),
            "TAILOR_JOB_ATTEMPTS": "2", "TAILOR_JOB_QUEUE_SIZE": "16"}
    apart = _can_unshare()
    pg = request.getfixturevalue("pg_server") if queue_url else None
    if queue_url:
        s3 = request.getfixturevalue("s3")
        base |= {"TAILOR_STORE_URL": f"s3://{s3.bucket()}/tailor", **s3.env()}

    def local(name: str):  # the instance's own folder when nothing is shared, else the store
        return tmp_path / f"local-{name}" if queue_url else store

    record = Records(store, queue_url)
    serve = Server(local("serve"), {**base, "TAILOR_ROLE": "serve"}, tmp_path / "serve.log",
                   queue_url=queue_url)
    trainers = [Server(local(f"train{i}"), {**base, "TAILOR_ROLE": "train"},
                       tmp_path / f"train{i}.log",
                       prefix=_as_host(f"trainer-{i}") if apart else None, queue_url=queue_url)
                for i in (1, 2)]
    # S3 + PostgreSQL: a second serving replica answers for the jobs the first one queued
    # and serves the adapters the trainers published
    replicas = [Server(local("serve2"), {**base, "TAILOR_ROLE": "serve"}, tmp_path / "serve2.log",
                       queue_url=queue_url)] if queue_url else []
    servers = [serve, *trainers, *replicas]
    n_jobs = 2 if queue_url else 4  # CI time: the postgres run also restarts the database;
    # 4 (not 6) keep both trainers busy: each job is a training process (~5 CPU s to start)
    train, _ = trec_coarse().few_shot(4, seed=2, max_test=0)  # 24 questions, 6 labels
    stop, answers, failures, serve_trained = threading.Event(), [0], [], []
    try:
        with ThreadPoolExecutor(len(servers)) as pool:  # warm all at once
            list(pool.map(lambda s: s.start(), servers))
        # a trainer answers only the probes and /metrics
        t = httpx.Client(base_url=trainers[0].url, timeout=30)
        assert [t.get(p).status_code for p in ("/readyz", "/livez", "/metrics")] == [200] * 3
        r = t.post("/v1/adapters", json={"name": "x", "examples": EXAMPLES})
        assert r.status_code == 404 and "TAILOR_ROLE=train" in r.json()["error"]["message"]
        assert t.get("/docs.json").status_code == 404
        c = serve.client()
        assert c.post("/v1/adapters", json={"name": "probe", "examples": EXAMPLES}).status_code == 201

        def predict_all_along():
            with httpx.Client(base_url=serve.url, timeout=30) as pc:
                while not stop.is_set():
                    r = pc.post("/v1/predict", json={"adapter": "probe", "inputs": ["a late goal"]})
                    if r.status_code == 200:
                        answers[0] += 1
                    else:
                        failures.append((r.status_code, r.text[:200]))
                    if any("adapters.worker_main" in _cmdline(p) for p in serve.pids()):
                        serve_trained.append(True)
                    # 4 a second: at 20 (0.05 s) these forwards took ~0.3 of a core from the
                    # trainers for the whole test, on a 2-core CI machine
                    time.sleep(0.25)
        # an exception in the loop (an httpx error) is recorded in failures, not only warned about
        loop = threading.Thread(target=recording(failures, predict_all_along), daemon=True)
        loop.start()

        # 1. jobs queued on the serving instance, run once each by the trainers (PostgreSQL:
        # restarted while they run)
        t0 = time.monotonic()
        jobs = []
        for i in range(n_jobs):
            r = c.post("/v1/adapters", json={"name": f"lora{i}", "kind": "lora", "examples": train,
                                             "options": {"epochs": 2}})
            assert r.status_code == 202, r.text
            jobs.append(r.json()["job"]["id"])
        if pg is not None:
            _wait(lambda: c.get(f"/v1/jobs/{jobs[0]}").json()["progress"]["step"] >= 1, 300,
                  "the first job trains")
            pg.stop()  # a fast shutdown: the trainers' connections are cut mid-job
            pg.start()
        done = [_wait(lambda j=j: (lambda rec: rec if rec["status"] not in ("queued", "running")
                                   else None)(c.get(f"/v1/jobs/{j}").json()), 600, f"job {j}")
                for j in jobs]
        jobs_s = time.monotonic() - t0
        assert [d["status"] for d in done] == ["succeeded"] * n_jobs, done
        assert [d["attempts"] for d in done] == [1] * n_jobs
        for i, d in enumerate(done):
            assert d["result"]["adapter"] == f"lora{i}@1"
            assert c.get(f"/v1/adapters/lora{i}").json()["versions"] == [1]  # published once
        records = [record(j) for j in jobs]
        ran_by = [_owner_pid(rec) for rec in records]
        worker_pids = [tr.pids() for tr in trainers]
        assert all(any(p in pids for pids in worker_pids) for p in ran_by), (ran_by, worker_pids)
        per_trainer = [sum(p in pids for p in ran_by) for pids in worker_pids]
        assert sum(per_trainer) == n_jobs
        for other in replicas:  # any replica answers for any job, and lists them page by page
            rc = other.client()
            assert [rc.get(f"/v1/jobs/{j}").json() for j in jobs] == done
            listed, after = [], None
            while True:
                page = rc.get("/v1/jobs", params={"limit": 3, **({"after": after} if after else {})}).json()
                listed += [j["id"] for j in page["jobs"]]
                if not (after := page["next"]):
                    break
            assert listed == list(reversed(jobs))
            for i in range(n_jobs):  # the trainers' LoRA versions, from the bucket
                r = rc.post("/v1/predict", json={"adapter": f"lora{i}", "inputs": ["Who wrote Hamlet?"]})
                assert r.status_code == 200 and r.json()["adapter"] == f"lora{i}@1", r.text
        finished = [_metric(tr, 'tailor_jobs_finished_total{kind="lora_train",state="succeeded"}')
                    for tr in trainers]
        assert finished == per_trainer
        assert _metric(serve, 'tailor_jobs_finished_total{kind="lora_train",state="succeeded"}') == 0

        # 2. kill -9 of the trainer holding a job in the middle of it
        # 12 steps: the kill lands after step 2, with ~8 s of training left; the retry trains
        # all 12 again (20 steps made the test 15 s longer for nothing more shown)
        r = c.post("/v1/adapters", json={"name": "killed", "kind": "lora", "examples": train,
                                         "options": {"epochs": 6}})
        job = r.json()["job"]["id"]
        _wait(lambda: (lambda j: j["status"] == "running" and j["progress"]["step"] >= 2)(
            c.get(f"/v1/jobs/{job}").json()), 300, "the long job trains")
        pending = record(job)
        (doomed,) = [tr for tr in trainers if _owner_pid(pending) in tr.pids()]
        survivor = next(tr for tr in trainers if tr is not doomed)
        t_kill = _kill_all(doomed)
        again = _wait(lambda: (lambda j: j if j["attempts"] == 2 and j["status"] == "running"
                               else None)(c.get(f"/v1/jobs/{job}").json()), 60, "the job runs again")
        recovery_s = time.monotonic() - t_kill
        final = _wait(lambda: (lambda j: j if j["status"] not in ("queued", "running") else None)(
            c.get(f"/v1/jobs/{job}").json()), 600, "the retried job finishes")
        total_s = time.monotonic() - t_kill
        assert final["status"] == "succeeded" and final["attempts"] == 2, final
        rec = record(job)
        assert [a["outcome"] for a in rec["attempts"]] == ["lease_expired", "succeeded"]
        _one_after_the_other(rec)
        assert _owner_pid(rec, 1) in survivor.pids()
        assert c.get("/v1/adapters/killed").json()["versions"] == [1]
        if pg is not None:  # 3. the database down: 503 + Retry-After, predictions go on
            pg.stop()
            pg.wait_down()
            try:
                for r in (c.post("/v1/adapters", json={"name": "later", "kind": "lora",
                                                      "examples": train}),
                          c.get(f"/v1/jobs/{job}"), c.get("/v1/jobs")):
                    assert r.status_code == 503, r.text
                    assert r.json()["error"]["code"] == "unavailable"
                    assert int(r.headers["Retry-After"]) >= 1
            finally:
                pg.start()
            r = c.post("/v1/adapters", json={"name": "later", "kind": "lora", "examples": train,
                                             "options": {"epochs": 1}})
            assert r.status_code == 202, r.text
            c.delete(f"/v1/jobs/{r.json()['job']['id']}")  # not waited for: CI time
        stop.set()
        loop.join(30)
        assert not loop.is_alive(), "the predict loop did not stop"
        print(f"\ntrainer pool ({'own hostnames' if apart else 'one host'}, queue "
              f"{'postgres, store s3' if queue_url else 'files'}): {n_jobs} LoRA jobs in "
              f"{jobs_s:.1f}s, per trainer {per_trainer}; kill -9 of a trainer mid-job (step "
              f"{pending['progress'].get('step')}): running again after {recovery_s:.1f}s (lease "
              f"{lease_s}s), succeeded {total_s:.1f}s after the kill; {answers[0]} predictions "
              f"on the serving instance meanwhile, {len(failures)} failed")
        if apart:  # another host's death cannot be seen: only the lease tells
            assert recovery_s >= lease_s - 1, recovery_s
        assert failures == [] and answers[0] > 50
        assert serve_trained == []  # the serving instance never started a training process
    finally:
        stop.set()
        for s in servers:
            s.stop()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _metric(server: Server, sample: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
