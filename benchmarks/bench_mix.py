"""/v1/predict over 100 head + 16 LoRA adapters against /v1/embed, same server (issue 12).

    python -m benchmarks.bench_mix                   # 600 texts per set, c=1 and c=64
    python -m benchmarks.bench_mix --texts 200       # a quick run

One head and one LoRA adapter are trained for real in process (TREC, 8 examples per label;
LoRA 1 epoch), then published 100 and 16 times into the store with small seeded
perturbations of their tensors (distinct adapters for the cache and the batcher, the same
shapes as trained ones). Tailor is started as the README's ``make serve`` starts it
(``bentoml serve``, default settings: ``TAILOR_RUNTIME=auto``). Each request carries one
text; /v1/predict requests cycle over the 116 adapters (16/116 of them LoRA rows), /v1/embed
requests carry the same texts. Client, texts and sets: benchmarks/bench_peers.py.
Writes benchmarks/results/mix.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from benchmarks.bench_peers import encode_requests, load, pct, start, stop, tailor_spec, text_sets
from benchmarks.common import machine, write_section

HEADS, LORAS = 100, 16
TENANT = "default"


def populate(store_root: Path, heads: int = HEADS, loras: int = LORAS) -> list[str]:
    """The adapters' names, heads first."""
    import torch

    from adapters import Tailor
    from adapters.storage.manifest import Artifact
    from benchmarks.datasets import trec_coarse

    t = Tailor.open(store_root)
    train, _ = trec_coarse().few_shot(8, seed=0, max_test=8)
    t.create_adapter(TENANT, "head-000", "head", train)
    pending = t.create_adapter(TENANT, "lora-000", "lora", train, {"epochs": 1})
    assert t.wait_job(TENANT, pending["job"]["id"], timeout=1800)["status"] == "succeeded"
    g = torch.Generator().manual_seed(0)
    names = []
    for base, n in (("head", heads), ("lora", loras)):
        stored = t.store.load(TENANT, f"{base}-000")
        m = stored.manifest
        names.append(f"{base}-000")
        for i in range(1, n):
            tensors = {k: v + 0.01 * v.abs().mean() * torch.randn(v.shape, generator=g)
                       for k, v in stored.tensors.items()}
            t.store.publish(TENANT, f"{base}-{i:03d}", Artifact(
                kind=m.kind, labels=list(m.labels), tensors=tensors, options=dict(m.options),
                metrics=dict(m.metrics), multi_label=m.multi_label, lora=m.lora))
            names.append(f"{base}-{i:03d}")
    return names


def main(argv: list[str] | None = None) -> str:
    import os

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--texts", type=int, default=600)
    p.add_argument("--store", default=None)
    args = p.parse_args(argv)
    store = Path(args.store or tempfile.mkdtemp(prefix="tailor-mix-"))
    t0 = time.perf_counter()
    names = populate(store)
    populate_s = time.perf_counter() - t0
    sets = text_sets(args.texts)
    logdir = Path(tempfile.mkdtemp(prefix="tailor-mix-logs-"))
    spec = tailor_spec("Tailor, default (as `make serve`)", store)
    rows = []
    run = start(spec, logdir)
    try:
        for set_name, texts in sets.items():
            embed_reqs = encode_requests(spec, texts)
            predict_reqs = []
            for i, t in enumerate(texts):
                body = json.dumps({"adapter": names[i % len(names)], "inputs": [t]}).encode()
                predict_reqs.append(
                    b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: "
                    b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (spec.port, len(body), body))
            asyncio.run(load(spec.port, predict_reqs[:64], 8))  # warm-up: adapters resident
            asyncio.run(load(spec.port, embed_reqs[:64], 8))
            for c in (1, 64):
                n = len(texts) if c == 64 else min(len(texts), 200)
                e_rate, e_lat = asyncio.run(load(spec.port, embed_reqs[:n], c))
                p_rate, p_lat = asyncio.run(load(spec.port, predict_reqs[:n], c))
                rows.append((set_name, c, e_rate, pct(e_lat, .5) * 1e3, p_rate, pct(p_lat, .5) * 1e3))
    finally:
        stop(run)
    with open(run.log, "rb") as f:  # the runtime it chose
        choice = next((ln.decode(errors="replace").split("] ", 2)[-1].strip() for ln in f
                       if b"runtime auto chose" in ln), "")
    load1 = os.getloadavg()
    md = [f"## /v1/predict over {HEADS} head + {LORAS} LoRA adapters vs /v1/embed (issue 12)", "",
          f"Machine: {machine()}; load average {load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f} "
          f"at the end (shared machine: compare within a row). Store populated in {populate_s:.0f} s "
          f"(one head and one LoRA adapter trained on TREC 8 x 6, then perturbed copies). Server "
          f"as `make serve`, default settings. {choice}", "",
          "One text per request; /v1/predict cycles over the 116 adapters (16/116 LoRA). "
          "c=1: 200 requests, c=64: all.", "",
          "| texts | c | /v1/embed texts/s | p50 ms | /v1/predict texts/s | p50 ms | predict / embed |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for s, c, er, el, pr, pl in rows:
        md.append(f"| {s} | {c} | {er:.1f} | {el:.0f} | {pr:.1f} | {pl:.0f} | {pr / er:.2f}x |")
    text = "\n".join(md) + "\n"
    write_section("mix", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
