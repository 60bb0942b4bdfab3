"""The S3 adapter store against the folder store, side by side in one run (issue 21).

    python -m benchmarks.bench_store                 # ~5 min on 2 busy cores
    python -m benchmarks.bench_store --quick

Design:
- S3 is a real SeaweedFS on loopback (tests/s3server.py, the hash-pinned wheel), so network
  time is a local round trip: a remote bucket adds its latency to every cold number.
- Cold load: ``AdapterRegistry.get`` of an adapter the process has never seen (the store's
  manifest, checksum-verified files, the kind's loader), head and LoRA (rank 8 on query and
  value of all 6 layers), in turns: folder store / S3 with an empty local cache (a new
  replica: list + manifest + files over the network) / S3 with the files in the local cache
  (a new worker on a replica that has them: list + manifest over the network).
- Create: ``POST /v1/adapters`` of a head adapter (16 BBC examples: training included, the
  store's part is its publish) through two real ``bentoml serve``, one per store, in turns.
- Predict: 64 closed-loop clients, one short text per request over 16 adapters, on each
  server in alternating passes (ABBAAB...) once the adapters are loaded; the ratio S3 /
  folder of the median passes.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_peers import ServerSpec, free_port, load, pct, start, stop
from benchmarks.common import machine, write_section

LAYERS = [f"encoder.layer.{k}.attention.self.{t}" for k in range(6) for t in ("query", "value")]


def artifact(kind: str, g):
    import torch

    from adapters.encoders.lora import LoraSpec
    from adapters.storage.manifest import Artifact

    tensors = {"head.weight": torch.randn(4, 384, generator=g), "head.bias": torch.zeros(4)}
    lora = None
    if kind == "lora":
        for layer in LAYERS:
            tensors[f"lora.{layer}.A"] = torch.randn(8, 384, generator=g) / 20
            tensors[f"lora.{layer}.B"] = torch.randn(384, 8, generator=g) / 20
        lora = LoraSpec(rank=8, alpha=16.0, targets=("query", "value"))
    return Artifact(kind=kind, labels=["a", "b", "c", "d"], tensors=tensors, options={}, metrics={},
                    lora=lora)


def cold_loads(s3, n: int, work: Path) -> dict[tuple[str, str], list[float]]:
    """(store, kind) -> seconds per cold registry.get."""
    import torch

    from adapters.encoders.base import BackboneIdentity, weights_sha256
    from adapters.encoders.text import default_model_path
    from adapters.kinds.base import load_adapter
    from adapters.serving.registry import AdapterRegistry
    from adapters.storage import open_store

    identity = BackboneIdentity("all-MiniLM-L6-v2", weights_sha256(default_model_path()))
    url = f"s3://{s3.bucket()}/bench"
    folder = open_store(None, work / "folder", identity)
    writer = open_store(url, work / "writer", identity)
    g = torch.Generator().manual_seed(0)
    for kind in ("head", "lora"):
        for i in range(n):
            a = artifact(kind, g)
            folder.publish("t", f"{kind}-{i}", a)
            writer.publish("t", f"{kind}-{i}", a)
    out: dict[tuple[str, str], list[float]] = {}
    for i in range(n):
        for kind in ("head", "lora"):
            empty = open_store(url, work / f"replica-{kind}-{i}", identity)  # nothing cached
            cached = open_store(url, work / "writer", identity)  # files on disk, nothing in memory
            for label, store in (("folder", folder), ("s3, empty cache", empty),
                                 ("s3, files cached", cached)):
                registry = AdapterRegistry(store, load_adapter)
                t = time.perf_counter()
                registry.get("t", f"{kind}-{i}")
                out.setdefault((label, kind), []).append(time.perf_counter() - t)
    return out


def requests_for(port: int, names: list[str], texts: list[str], n: int) -> list[bytes]:
    out = []
    for i in range(n):
        data = json.dumps({"adapter": names[i % len(names)], "inputs": [texts[i % len(texts)]]}).encode()
        out.append(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (port, len(data), data))
    return out


def main(argv: list[str] | None = None) -> str:
    import httpx

    from benchmarks.bench_peers import text_sets
    from benchmarks.datasets import bbc_news
    from tests.s3server import SeaweedS3

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    n_cold, n_create, passes, n_req = (10, 10, 2, 800) if args.quick else (30, 12, 10, 800)
    work = Path(tempfile.mkdtemp(prefix="tailor-bench-store-"))
    s3 = SeaweedS3(work / "weed").start()
    os.environ.update(s3.env())
    load_before = os.getloadavg()
    try:
        cold = cold_loads(s3, n_cold, work)
        bentoml = str(Path(sys.executable).parent / "bentoml")
        specs = {}
        for label, env in (("folder", {}), ("s3", {"TAILOR_STORE_URL": f"s3://{s3.bucket()}/bench"})):
            port = free_port()
            specs[label] = ServerSpec(label, [bentoml, "serve", "service.service:TailorService",
                                              "--port", str(port)],
                                      {"TAILOR_STORE_PATH": str(work / f"srv-{label}"),
                                       "BENTOML_DO_NOT_TRACK": "True", "TAILOR_RUNTIME": "torch", **env},
                                      "/readyz", "/v1/predict", None, None, port)
        running = {label: start(spec, work) for label, spec in specs.items()}
        try:
            bbc = bbc_news()
            train, _ = bbc.few_shot(4, seed=3, max_test=10, max_chars=600)
            create_s: dict[str, list[float]] = {label: [] for label in specs}
            names = [f"a{i}" for i in range(16)]
            for i in range(max(n_create, len(names))):
                for label, spec in specs.items():
                    t = time.perf_counter()
                    r = httpx.post(f"http://127.0.0.1:{spec.port}/v1/adapters", timeout=120, json={
                        "name": names[i % len(names)], "examples": train})
                    r.raise_for_status()
                    if i < n_create:
                        create_s[label].append(time.perf_counter() - t)
            texts = text_sets(400)["short"]
            rates: dict[str, list[float]] = {label: [] for label in specs}
            for label, spec in specs.items():  # warm: every adapter loaded
                asyncio.run(load(spec.port, requests_for(spec.port, names, texts, 128), 16))
            for i in range(passes):  # F S, S F, F S, ...: neither always goes first
                for label, spec in list(specs.items())[::1 if i % 2 == 0 else -1]:
                    rate, _ = asyncio.run(load(spec.port, requests_for(spec.port, names, texts, n_req), 64))
                    rates[label].append(rate)
        finally:
            for r in running.values():
                stop(r)
    finally:
        s3.stop()
    return report(cold, create_s, rates, n_cold, n_create, n_req, load_before, os.getloadavg())


def report(cold, create_s, rates, n_cold, n_create, n_req, load_before, load_after) -> str:
    ms = lambda xs, q: f"{pct(xs, q) * 1000:.1f}"  # noqa: E731
    lines = ["## Adapters in S3 (issue 21): the S3 store vs the folder store, side by side", "",
             f"Machine: {machine()}. Load average {load_before[0]:.1f} at the start, "
             f"{load_after[0]:.1f} at the end (other work shared the machine). S3: SeaweedFS "
             "4.48 on loopback (`python -m benchmarks.bench_store`).", "",
             f"Cold load (`AdapterRegistry.get` of an adapter the process has never seen; {n_cold} "
             "adapters of each kind, in turns):", "",
             "| store | kind | p50 ms | p99 ms |", "|---|---|---|---|"]
    for (label, kind), xs in cold.items():
        lines.append(f"| {label} | {kind} | {ms(xs, 0.5)} | {ms(xs, 0.99)} |")
    lines += ["", f"Create (`POST /v1/adapters`, head, 16 examples, training included; {n_create} "
              "each, in turns):", "", "| store | p50 ms | p99 ms |", "|---|---|---|"]
    for label, xs in create_s.items():
        lines.append(f"| {label} | {ms(xs, 0.5)} | {ms(xs, 0.99)} |")
    folder, s3 = statistics.median(rates["folder"]), statistics.median(rates["s3"])
    paired = [b / a for a, b in zip(rates["folder"], rates["s3"])]  # pass i of each, adjacent
    lines += ["", f"Predict at concurrency 64 ({n_req} requests a pass over 16 loaded adapters, "
              "alternating passes, median pass):", "",
              "| store | requests/s (passes) |", "|---|---|",
              *(f"| {label} | {statistics.median(xs):.1f} ({', '.join(f'{x:.1f}' for x in xs)}) |"
                for label, xs in rates.items()),
              "", f"S3 / folder: **{s3 / folder:.2f}x** of the median passes; median of the "
              f"ratios of the passes run back to back: **{statistics.median(paired):.2f}x** "
              "(goal >= 0.95x)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    md = main()
    print(md)
    print("written to", write_section("store", md))
