"""Two commits of Tailor side by side over HTTP: did a change make serving slower?

    python -m benchmarks.bench_ab BEFORE AFTER [--rounds 6] [--topic shape] [--title TEXT]

Each ref is checked out in a temporary git worktree and served by its own `bentoml serve`
(this checkout's virtual environment, PyTorch fp32 pinned with TAILOR_RUNTIME=torch so that
both serve the same runtime, each on a store of its own). Both run at once and the
measurements alternate A, B, B, A, ... so that the other jobs on a shared machine hit both
alike; only the ratios B/A mean anything there. Per round and tree:

- create: wall time of one head-adapter create (BBC News, 4 examples per label) over HTTP;
- predict c=64 and c=1: single-text predicts over 8 head adapters (bench_serving's client:
  bare asyncio streams, the requests encoded before the clock starts).

Writes results/<topic>.md, puts it in RESULTS.md (in place of the section of the same
heading, or at the end) and prints it.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks import bench_serving
from benchmarks.common import (HERE, checkout, free_port, machine, pinned_env, remove_checkout,
                               spread, stop_group, write_section)
from benchmarks.run import replace_sections
from benchmarks.datasets import bbc_news


class Tree:
    """One ref: its worktree, its server, its adapters."""

    def __init__(self, ref: str, work: Path, port: int):
        self.ref = ref
        self.dir = work / f"tree-{port}"
        self.rev = checkout(ref, self.dir)
        self.url = f"http://127.0.0.1:{port}"
        env = pinned_env(work / f"store-{self.rev}", work / f"home-{self.rev}")
        self.log = open(work / f"server-{self.rev}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "service.service:TailorService", "--port",
             str(port), "--host", "127.0.0.1", "--working-dir", str(self.dir)],
            cwd=self.dir, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.adapters: list[str] = []
        self.rows: dict[str, list[float]] = {"create_s": [], "c64": [], "c1": []}

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.rev}: server exited {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"{self.rev}: not ready after {timeout} s")

    def close(self) -> None:
        stop_group(self.proc, timeout=60)
        remove_checkout(self.dir)


def measure(tree: Tree, texts: list[str], create_examples: list[dict], n: int) -> None:
    with httpx.Client(base_url=tree.url, timeout=300) as c:
        t = time.perf_counter()
        r = c.post("/v1/adapters", json={"name": f"create-{n}", "examples": create_examples})
        assert r.status_code == 201, r.text
        tree.rows["create_s"].append(time.perf_counter() - t)
    for conc, key in ((64, "c64"), (1, "c1")):
        rate, _ = asyncio.run(bench_serving._load(tree.url, bench_serving.predict_body(
            tree.adapters, texts), conc))
        tree.rows[key].append(rate)


def table(a: Tree, b: Tree) -> list[str]:
    out = [f"| measure | A = {a.rev} | B = {b.rev} | B / A |", "|---|---|---|---|"]
    names = {"create_s": "head create over HTTP, s", "c64": "predict c=64, texts/s",
             "c1": "predict c=1, texts/s"}
    for key, label in names.items():
        ma, mb = statistics.median(a.rows[key]), statistics.median(b.rows[key])
        out.append(f"| {label} | {spread(a.rows[key])} | {spread(b.rows[key])} | {mb / ma:.2f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--topic", default="ab")
    ap.add_argument("--title", default="Two commits side by side over HTTP")
    args = ap.parse_args(argv)
    ds = bbc_news()
    create_examples, _ = ds.few_shot(4, seed=1, max_test=0, max_chars=1000)
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        work = Path(tmp)
        trees = [Tree(args.before, work, free_port()), Tree(args.after, work, free_port())]
        try:
            load_before = os.getloadavg()[0]
            for t in trees:
                t.wait_ready()
                with httpx.Client(base_url=t.url, timeout=300) as c:
                    t.adapters, texts = bench_serving.throughput_setup(c, ds)
            for n in range(args.rounds):
                order = trees if n % 2 == 0 else trees[::-1]
                for t in order:
                    measure(t, texts, create_examples, n)
                print(f"round {n + 1}/{args.rounds} load {os.getloadavg()[0]:.1f}", file=sys.stderr)
            load_after = os.getloadavg()[0]
        finally:
            for t in trees:
                t.close()
    a, b = trees
    md = [f"## {args.title}", "",
          f"Machine: {machine()}; 1-minute load average "
          f"{load_before:.1f} at the start, {load_after:.1f} at the end (2 cores: above 2, "
          "other jobs shared them, and only the ratios mean anything).", "",
          f"A = `{a.ref}` ({a.rev}), B = `{b.ref}` ({b.rev}); `python -m benchmarks.bench_ab "
          f"{a.ref} {b.ref} --rounds {args.rounds}`: both trees served at once by their own "
          "`bentoml serve` (PyTorch fp32), measured alternately (A, B, B, A, ...); each cell "
          f"the median [min-max] of {args.rounds} rounds, 256 single-text BBC News predicts over "
          "8 head adapters per predict measurement.", "", *table(a, b), ""]
    text = "\n".join(md)
    write_section(args.topic, text)
    results = HERE / "RESULTS.md"
    results.write_text(replace_sections(results.read_text(), [text]))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
