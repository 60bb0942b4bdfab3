"""What a LoRA job's worker process costs before it trains, cold vs forked from a warm parent.

    python -m benchmarks.research.warm_worker [--runs 5]
    python -m benchmarks.research.warm_worker --jobs 5   # the service's way, cold vs warm

Every LoRA job (and every ``auto`` background job) starts ``python -m adapters.worker_main``
(adapters/training/worker.py): a fresh interpreter that imports torch and transformers and
loads the backbone before its first step. The CI suite runs ~25-30 such jobs, and the
machine is saturated, so that start-up is CI time; a user waits for it at every job.

This measures the candidate fix without changing the service: multiprocessing's
``forkserver`` with torch, transformers and the project's kinds preloaded (imports only: no
torch op runs in the fork server, so no thread pool exists when it forks), against the cold
start, both up to the same point: the backbone loaded and one forward run. Per run: wall
seconds from the request to "ready", the child's own CPU seconds, and the fork server's RSS
(what a serving pod would hold for it). Prints a markdown table (medians [min-max]).

``--jobs N`` measures what was built from it (adapters/forkserver.py, TAILOR_TRAIN_WARM):
N LoRA jobs (TREC, 8 x 6 examples, 1 epoch) through the engine's job runner and training
workers, as the service runs them, with ``WorkerConfig(warm=False)`` then ``warm=True``,
interleaved job by job: submit -> succeeded seconds, and the machine's busy CPU seconds
over each job (/proc/stat; keep the machine otherwise quiet).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import time

import psutil

# transformers loads its models lazily: the BERT modules (and what they pull in: dynamo,
# distributed tensors, ...) are named, or the forked child would still import them
PRELOAD = ["torch", "transformers", "transformers.modeling_utils",
           "transformers.models.bert.modeling_bert", "transformers.models.auto.modeling_auto",
           "transformers.models.auto.tokenization_auto", "safetensors.torch",
           "adapters.encoders", "adapters.encoders.text", "adapters.kinds", "adapters.kinds.lora",
           "adapters.worker_main"]
COLD = ("import json, resource, time; t0 = float(__import__('sys').argv[1]); "
        "import adapters.worker_main, torch; from adapters.encoders import open_encoder; "
        "from adapters.kinds import get_kind; get_kind('lora'); e = open_encoder(); e.embed(['x']); "
        "u = resource.getrusage(resource.RUSAGE_SELF); "
        "print(json.dumps({'ready_s': time.time() - t0, 'cpu_s': u.ru_utime + u.ru_stime}))")


def _warm_child(t0: float, conn) -> None:
    import adapters.worker_main  # noqa: F401 - preloaded: already imported
    import torch  # noqa: F401
    from adapters.encoders import open_encoder
    from adapters.kinds import get_kind

    get_kind("lora")
    e = open_encoder()
    e.embed(["x"])
    u = resource.getrusage(resource.RUSAGE_SELF)
    conn.send({"ready_s": time.time() - t0, "cpu_s": u.ru_utime + u.ru_stime})
    conn.close()


def cold(runs: int) -> list[dict]:
    out = []
    for _ in range(runs):
        r = subprocess.run([sys.executable, "-c", COLD, repr(time.time())], capture_output=True,
                           text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


def warm(runs: int) -> tuple[list[dict], float, float]:
    """Runs forked from a fork server with PRELOAD imported; the first job's wall seconds
    (which also start the fork server and run its imports) and its RSS (MiB) are returned
    too."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    out = []
    for _ in range(runs + 1):  # the first also starts the fork server (its imports)
        a, b = ctx.Pipe()
        p = ctx.Process(target=_warm_child, args=(time.time(), b))
        p.start()
        out.append(a.recv())
        p.join()
    me = psutil.Process()
    servers = [c for c in me.children() if "forkserver" in " ".join(c.cmdline())]
    rss = max((c.memory_info().rss for c in servers), default=0) / 2**20
    return out[1:], out[0]["ready_s"], rss


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def _busy_s() -> float:
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def jobs(n: int) -> int:
    import tempfile
    from pathlib import Path

    from adapters import Tailor
    from adapters.encoders import open_encoder
    from adapters.storage import AdapterStore
    from adapters.training.jobs import JobManager
    from adapters.training.payloads import WorkerConfig
    from benchmarks.datasets import trec_coarse

    bb = open_encoder()
    load0 = os.getloadavg()[0]
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as d:
        engines = {warm: Tailor(bb, AdapterStore(Path(d) / str(warm), bb.identity),
                                jobs=JobManager(Path(d) / str(warm) / "jobs"),
                                worker=WorkerConfig(warm=warm)) for warm in (False, True)}
        for seed in range(n):
            train, _ = trec_coarse().few_shot(8, seed=seed)
            for warm, engine in engines.items():
                t0, c0 = time.perf_counter(), _busy_s()
                rec = engine.create_adapter("default", f"t{seed}", "lora", train,
                                            {"seed": seed, "epochs": 1})
                done = engine.wait_job("default", rec["job"]["id"], timeout=600)
                assert done["status"] == "succeeded", done
                times[warm].append((time.perf_counter() - t0, _busy_s() - c0))
        for engine in engines.values():
            engine.jobs.close()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {n} jobs each, interleaved, "
          f"1-minute load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| training worker | submit -> succeeded, s | machine CPU s per job |")
    print("|---|---|---|")
    for warm, label in ((False, "cold (`TAILOR_TRAIN_WARM=false`)"), (True, "warm (default)")):
        ts = times[warm]
        print(f"| {label}, first job | {ts[0][0]:.2f} | {ts[0][1]:.2f} |")
        print(f"| {label}, jobs 2-{n} | {spread([t for t, _ in ts[1:]])} | "
              f"{spread([c for _, c in ts[1:]])} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=0, help="LoRA jobs through the engine, cold vs warm")
    args = ap.parse_args(argv)
    if args.jobs:
        return jobs(args.jobs)
    load0 = os.getloadavg()[0]
    c = cold(args.runs)
    w, started, rss = warm(args.runs)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.runs} runs each, "
          f"1-minute load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| worker start, to backbone loaded + one forward | wall s | the child's CPU s |")
    print("|---|---|---|")
    print(f"| cold: `python -m adapters.worker_main` as today | {spread([r['ready_s'] for r in c])} "
          f"| {spread([r['cpu_s'] for r in c])} |")
    print(f"| forked from a warm fork server ({len(PRELOAD)} modules imported, PRELOAD) "
          f"| {spread([r['ready_s'] for r in w])} | {spread([r['cpu_s'] for r in w])} |")
    print(f"\nthe first job of a serving process also starts the fork server: {started:.2f} s; "
          f"the fork server's RSS while idle: {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
