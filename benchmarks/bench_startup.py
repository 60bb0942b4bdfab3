"""What one `bentoml serve` start costs, for two commits side by side.

    python -m benchmarks.bench_startup BEFORE AFTER [--rounds 5] [--runtime auto]

The test suite starts about fifty real servers, so a start's CPU is CI time. Each ref is
checked out in a temporary git worktree and run with this checkout's virtual environment;
the rounds alternate A, B, B, A, ... so that other jobs on a shared machine hit both alike.
Per round and tree:

- import: a fresh ``python -c "import service.service"``: wall seconds of the import, the
  process's CPU seconds and peak RSS, and which heavy modules (torch, transformers, onnx,
  onnxruntime) it loaded. This is what BentoML's CLI process (the supervisor) pays before it
  starts the worker, which imports the service again and builds the engine;
- serve: `bentoml serve` (PyTorch fp32 pinned, a fresh store) until /readyz answers 200: wall
  seconds, the CPU seconds of every process of the server (user + system of each, polled every
  0.1 s), and the RSS of the CLI process and of the worker at ready.

``--runtime auto``: the same, but a FIRST start as `make serve` does it (TAILOR_RUNTIME=auto
on a fresh store): the serve row then includes the runtime measurement in its child process.

Prints a markdown table (medians, [min-max]) to paste into RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from benchmarks.common import (alternating_rounds, checkout, free_port, paired_table, pinned_env,
                               remove_checkout, stop_group)

HEAVY = ("torch", "transformers", "onnx", "onnxruntime")
IMPORT = ("import json, resource, sys, time; t = time.perf_counter(); import service.service; "
          "wall = time.perf_counter() - t; u = resource.getrusage(resource.RUSAGE_SELF); "
          f"print(json.dumps({{'wall': wall, 'cpu': u.ru_utime + u.ru_stime, "
          f"'rss': u.ru_maxrss / 1024, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))")


class Tree:
    def __init__(self, ref: str, work: Path, n: int, runtime: str = "torch"):
        self.runtime = runtime
        self.dir = work / f"tree-{n}"
        self.rev = checkout(ref, self.dir)
        self.work, self.name = work, f"{n}-{self.rev}"
        self.rows: dict[str, list[float]] = {k: [] for k in (
            "import_s", "import_cpu", "import_rss", "ready_s", "start_cpu", "cli_rss", "worker_rss")}
        self.heavy: set[str] = set()

    def env(self, n: int) -> dict[str, str]:
        env = pinned_env(self.work / f"store-{self.name}-{n}", self.work / f"home-{self.name}-{n}")
        return {**env, "TAILOR_RUNTIME": self.runtime}

    def measure_import(self, n: int) -> None:
        out = subprocess.run([sys.executable, "-c", IMPORT], cwd=self.dir, env=self.env(n),
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        self.rows["import_s"].append(r["wall"])
        self.rows["import_cpu"].append(r["cpu"])
        self.rows["import_rss"].append(r["rss"])
        self.heavy |= set(r["heavy"])

    def measure_start(self, n: int, timeout: float = 300) -> None:
        port = free_port()
        t0 = time.perf_counter()
        with open(self.work / f"server-{self.name}-{n}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", "service.service:TailorService",
                 "--port", str(port), "--host", "127.0.0.1", "--working-dir", str(self.dir)],
                cwd=self.dir, env=self.env(n), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        # pid -> its own latest CPU seconds. Not ``children_*``: a child sampled alive and
        # then reaped would count twice (auto's measuring child: 20 s counted 40 in 2 of 3
        # first starts, 2026-12-07); a child living under one 0.1 s poll is missed instead.
        cpu: dict[int, float] = {}
        root = psutil.Process(proc.pid)
        try:
            while True:
                if time.perf_counter() - t0 > timeout or proc.poll() is not None:
                    raise RuntimeError(f"{self.rev}: server did not get ready (see its log)")
                procs = [root, *root.children(recursive=True)]
                for p in procs:
                    try:
                        c = p.cpu_times()
                        cpu[p.pid] = c.user + c.system
                    except psutil.Error:
                        pass
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            self.rows["ready_s"].append(time.perf_counter() - t0)
            self.rows["start_cpu"].append(sum(cpu.values()))
            self.rows["cli_rss"].append(root.memory_info().rss / 2**20)
            self.rows["worker_rss"].append(max(_rss(p) for p in procs[1:]) / 2**20)
        finally:
            stop_group(proc, timeout=60)

    def close(self) -> None:
        remove_checkout(self.dir)


def _rss(p: psutil.Process) -> float:
    """RSS in bytes; 0 for a process gone since it was listed (e.g. the runtime measurement's
    child of a first start)."""
    try:
        return p.memory_info().rss
    except psutil.Error:
        return 0.0


LABELS = {"import_s": "`import service.service`, wall s", "import_cpu": "... its process, CPU s",
          "import_rss": "... its process, peak RSS MiB", "ready_s": "`bentoml serve` to /readyz 200, s",
          "start_cpu": "... CPU s of all its processes", "cli_rss": "... CLI process RSS at ready, MiB",
          "worker_rss": "... worker RSS at ready, MiB"}


def table(a: Tree, b: Tree) -> list[str]:
    return paired_table(LABELS, a.rev, a.rows, b.rev, b.rows) + [
        f"| heavy modules after the import | {', '.join(sorted(a.heavy)) or 'none'} "
        f"| {', '.join(sorted(b.heavy)) or 'none'} | | |"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runtime", default="torch", help="TAILOR_RUNTIME of both trees (auto: a "
                    "first start, with the runtime measurement)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        trees = [Tree(args.before, Path(tmp), 0, args.runtime),
                 Tree(args.after, Path(tmp), 1, args.runtime)]
        load = alternating_rounds(trees, args.rounds, lambda t, n: t.measure_import(n),
                                  lambda t, n: t.measure_start(n))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, TAILOR_RUNTIME={args.runtime}, "
          f"{args.rounds} rounds, "
          f"1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end")
    print("\n".join(table(*trees)))
    for t in trees:
        print(t.rev, json.dumps({k: [round(v, 2) for v in vs] for k, vs in t.rows.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
