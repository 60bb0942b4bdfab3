"""What one ONNX export costs, for two commits side by side.

    python -m benchmarks.bench_export BEFORE AFTER [--rounds 4]

An export runs wherever a user asks for a bundle (`POST .../export`, `tailor export`) and in
every first start (`auto`'s measuring child builds the onnxruntime candidates' graphs); the
test suite runs about twenty. Each ref is checked out in a temporary git worktree and run
with this checkout's virtual environment; the rounds alternate A, B, B, A, ... so that other
jobs on a shared machine hit both alike. Per round and tree, a fresh interpreter opens the
default backbone on a new store, creates a head adapter (TREC, 8 examples per label) and
exports it as the service does (``export_bundle``), fp32 then int8:

- wall and CPU seconds of each export (the process's own; the first one pays the imports
  an export needs that serving does not: onnx, onnxruntime's optimizer, and before
  2026-12-07 transformers' BERT);
- the bundle's size in MB, and whether the process imported ``transformers`` at all.

Prints a markdown table (medians, [min-max]) to paste into RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (alternating_rounds, checkout, machine, paired_table,
                               remove_checkout)

ONE = r"""
import json, sys, tempfile, time
from pathlib import Path
from adapters.engine import Tailor
from benchmarks.datasets import trec_coarse
from export.bundle import export_bundle

def cpu():
    return time.process_time()

work = Path(tempfile.mkdtemp())
train, _ = trec_coarse().few_shot(8, seed=0, max_test=0)
t = Tailor.open(work / "store")
t.create_adapter("default", "trec", "head", train)
out = {}
for q in ("none", "int8"):
    w, c = time.perf_counter(), cpu()
    r = export_bundle(t.encoder, t.store, "default", "trec", quantize=q, dest_dir=work / q)
    out[q] = {"wall": time.perf_counter() - w, "cpu": cpu() - c, "mb": r.path.stat().st_size / 1e6}
out["transformers"] = any(m.split(".")[0] == "transformers" for m in sys.modules)
print(json.dumps(out))
"""

KEYS = {"none_wall": "fp32 export (first in its process), wall s", "none_cpu": "... CPU s",
        "none_mb": "... bundle MB", "int8_wall": "int8 export (second), wall s",
        "int8_cpu": "... CPU s", "int8_mb": "... bundle MB"}


class Tree:
    def __init__(self, ref: str, work: Path, n: int):
        self.dir = work / f"tree-{n}"
        self.rev = checkout(ref, self.dir)
        self.rows: dict[str, list[float]] = {k: [] for k in KEYS}
        self.transformers: set[bool] = set()

    def measure(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
        env["PYTHONPATH"] = str(self.dir)
        proc = subprocess.run([sys.executable, "-c", ONE], cwd=self.dir, env=env,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode:
            raise RuntimeError(f"{self.rev}: {proc.stderr[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        for q in ("none", "int8"):
            for k in ("wall", "cpu", "mb"):
                self.rows[f"{q}_{k}"].append(r[q][k])
        self.transformers.add(r["transformers"])

    def close(self) -> None:
        remove_checkout(self.dir)


def table(a: Tree, b: Tree) -> list[str]:
    return paired_table(KEYS, a.rev, a.rows, b.rev, b.rows) + [
        f"| imports transformers | {'yes' if True in a.transformers else 'no'} "
        f"| {'yes' if True in b.transformers else 'no'} | | |"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        trees = [Tree(args.before, Path(tmp), 0), Tree(args.after, Path(tmp), 1)]
        load = alternating_rounds(trees, args.rounds, lambda t, n: t.measure())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}, {args.rounds} "
          f"rounds, 1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end")
    print("\n".join(table(*trees)))
    for t in trees:
        print(t.rev, json.dumps({k: [round(v, 2) for v in vs] for k, vs in t.rows.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
