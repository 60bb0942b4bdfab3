"""The job queue, file lease queue vs PostgreSQL (TAILOR_QUEUE_URL), side by side in one run:

- submit -> claim: one submit, then one claim of that job by a trainer (the queue's own
  cost);
- submit -> running: what a user sees: a serving JobManager (concurrency 0) submits, an idle
  trainer JobManager in the same process but not told (as another process would not be)
  starts the job: the file queue waits for the trainer's 1 s poll, PostgreSQL wakes it
  (LISTEN/NOTIFY);
- throughput: 200 jobs, 4 trainer threads each with its own queue object, as 4 trainer
  processes would have: claim, renew with progress, begin_publish, finish (no training).

    python -m benchmarks.bench_queue          # prints a markdown table (benchmarks/RESULTS.md)

PostgreSQL is the tests' real server (tests/pgserver.py, fsync off as in the tests).
"""
from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

from adapters.training.jobs import JobManager
from adapters.training.queue import open_queue
from tests.pgserver import PgServer

N_LATENCY = 200
N_JOBS = 200
TRAINERS = 4
PAYLOAD = {"examples": [{"text": f"example text number {i}", "label": f"l{i % 4}"}
                        for i in range(48)], "options": {"epochs": 2}}


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1e3


def latency(open_q) -> list[float]:
    q = open_q()
    out = []
    for i in range(N_LATENCY):
        t = time.perf_counter()
        q.submit("lora_train", "acme", f"a{i}", PAYLOAD)
        lease = q.claim("trainer")
        out.append(time.perf_counter() - t)
        q.finish(lease, {})
    q.close()
    return out


def seen_by_user(root: Path, url: str | None, n: int = 20) -> list[float]:
    started: dict[str, float] = {}
    serve = JobManager(root, queue_url=url, concurrency=0, max_queued=1000)
    train = JobManager(root, queue_url=url, max_queued=1000,
                       run=lambda job: started.__setitem__(job.id, time.perf_counter()) or {})
    out = []
    time.sleep(1.5)  # the trainer is idle, between polls
    for _ in range(n):
        t = time.perf_counter()
        rec = serve.submit("lora_train", "acme", "c", PAYLOAD)
        while rec.id not in started:
            time.sleep(0.001)
        out.append(started[rec.id] - t)
        time.sleep(0.3)  # not in step with the poll
    serve.close()
    train.close()
    return out


def throughput(open_q) -> float:
    q = open_q()
    for i in range(N_JOBS):
        q.submit("lora_train", "acme", f"b{i}", PAYLOAD)

    def trainer(k: int) -> None:
        mine = open_q()
        while (lease := mine.claim(f"trainer-{k}")) is not None:
            lease = mine.renew(lease, {"step": 1, "total": 2}, 0.5)
            mine.finish(mine.begin_publish(lease), {"adapter": "x@1"})
        mine.close()
    t = time.perf_counter()
    threads = [threading.Thread(target=trainer, args=(k,)) for k in range(TRAINERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    assert q.counts() == {"queued": 0, "running": 0}
    q.close()
    return N_JOBS / elapsed


def main() -> None:
    server = PgServer()
    tmp = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    try:
        backends = {}
        for name in ("files", "postgres"):
            url = server.database() if name == "postgres" else None
            root = tmp / name
            backends[name] = (lambda url=url, root=root: open_queue(
                url, root, lease_s=30, max_attempts=2, max_queued=None))
        rows = {name: {"lat": [], "tput": [], "seen": []} for name in backends}
        for _ in range(2):  # interleaved: one, then the other, twice
            for name, open_q in backends.items():
                rows[name]["lat"] += latency(open_q)
                rows[name]["tput"].append(throughput(open_q))
                url = None if name == "files" else server.database()
                rows[name]["seen"] += seen_by_user(tmp / f"{name}-seen", url)
        print("| queue | submit -> claim p50 | p99 | submit -> running (trainer idle) p50 | p99 "
              "| jobs/s (4 trainers, no training) |")
        print("|---|---|---|---|---|---|")
        for name, r in rows.items():
            print(f"| {name} | {_pct(r['lat'], 0.5):.2f} ms | {_pct(r['lat'], 0.99):.2f} ms | "
                  f"{_pct(r['seen'], 0.5):.0f} ms | {_pct(r['seen'], 0.99):.0f} ms | "
                  f"{statistics.median(r['tput']):.0f} |")
    finally:
        server.close()


if __name__ == "__main__":
    main()
