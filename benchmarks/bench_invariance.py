"""Batch invariance over HTTP (issue 20): concurrent mixed requests against the same
requests sent alone.

    python -m benchmarks.bench_invariance                       # default runtime, then torch-bf16
    python -m benchmarks.bench_invariance --runtimes auto       # the default only

50 head and 16 LoRA adapters (benchmarks/bench_mix.py's ``populate``: one of each trained on
TREC, the others seeded perturbations of it); a server per runtime on the same store, started
as ``make serve`` starts it (``TAILOR_RUNTIME`` set only for the forced ones). 200 one-text
/v1/predict requests cycling over the 66 adapters, over BBC News texts cut to 400 characters
and TREC questions (so batches are padded), all in flight at once, then each sent alone.
Reported per adapter kind: the largest |score together - score alone|, how many answers
differ by more than 1e-4, and label flips. Writes benchmarks/results/invariance.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

from benchmarks.bench_mix import populate
from benchmarks.bench_peers import start, stop, tailor_spec
from benchmarks.common import machine, write_section

HEADS, LORAS, REQUESTS = 50, 16, 200


async def _predict_all(port: int, jobs: list[tuple[str, str]], concurrency: int) -> list[dict]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600,
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        async def one(job):
            async with sem:
                r = await c.post("/v1/predict", json={"adapter": job[0], "inputs": [job[1]]})
                r.raise_for_status()
                return r.json()["predictions"][0]
        return await asyncio.gather(*(one(j) for j in jobs))


def measure(port: int, jobs: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    together = asyncio.run(_predict_all(port, jobs, len(jobs)))
    alone = asyncio.run(_predict_all(port, jobs, 1))
    out: dict[str, dict[str, float]] = {}
    for (name, _), got, want in zip(jobs, together, alone):
        kind = name.split("-")[0]
        d = max(abs(got["scores"][k] - want["scores"][k]) for k in want["scores"])
        row = out.setdefault(kind, {"n": 0, "max": 0.0, "over": 0, "flips": 0})
        row["n"] += 1
        row["max"] = max(row["max"], d)
        row["over"] += d > 1e-4
        row["flips"] += got["label"] != want["label"]
    return out


def main(argv: list[str] | None = None) -> str:
    from benchmarks.bench_peers import text_sets

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runtimes", default="auto,torch-bf16")
    p.add_argument("--store", default=None)
    args = p.parse_args(argv)
    store = Path(args.store or tempfile.mkdtemp(prefix="tailor-inv-"))
    names = populate(store, HEADS, LORAS)
    sets = text_sets(REQUESTS)
    texts = [t for pair in zip(sets["bbc400"], sets["short"]) for t in pair][:REQUESTS]
    jobs = [(names[i % len(names)], texts[i]) for i in range(REQUESTS)]
    logdir = Path(tempfile.mkdtemp(prefix="tailor-inv-logs-"))
    rows = []
    for runtime in args.runtimes.split(","):
        env = {} if runtime == "auto" else {"TAILOR_RUNTIME": runtime}
        spec = tailor_spec(f"Tailor {runtime}", store, **env)
        run = start(spec, logdir, timeout=1800)
        try:
            asyncio.run(_predict_all(spec.port, jobs[:70], 8))  # warm-up: adapters resident
            res = measure(spec.port, jobs)
        finally:
            stop(run)
        with open(run.log, "rb") as f:
            chose = next((ln.decode(errors="replace").split("runtime auto chose ", 1)[-1].split(" (")[0]
                          for ln in f if b"runtime auto chose" in ln), runtime)
        rows.append((runtime, chose, res))
    load = os.getloadavg()
    md = [f"## Batch invariance over HTTP (issue 20): {HEADS} head + {LORAS} LoRA adapters", "",
          f"Machine: {machine()}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end. "
          f"{REQUESTS} one-text /v1/predict requests (BBC News cut to 400 characters and TREC "
          f"questions, alternating) cycling over the {HEADS + LORAS} adapters, all in flight at "
          "once, against the same requests sent one at a time. `python -m benchmarks.bench_invariance`.", "",
          "| TAILOR_RUNTIME | served | adapters | answers | max abs score diff | answers > 1e-4 | label flips |",
          "|---|---|---|---:|---:|---:|---:|"]
    for runtime, chose, res in rows:
        for kind, r in sorted(res.items()):
            md.append(f"| {runtime} | {chose} | {kind} | {r['n']} | {r['max']:.1e} | {r['over']} | {r['flips']} |")
    text = "\n".join(md) + "\n"
    default = p.get_default("runtimes")
    # the default comparison keeps its file; other runtime lists get their own
    write_section("invariance" if args.runtimes == default else
                  "invariance_" + args.runtimes.replace(",", "_"), text)
    print(text)
    print(json.dumps({r[0]: r[2] for r in rows}))
    return text


if __name__ == "__main__":
    main()
