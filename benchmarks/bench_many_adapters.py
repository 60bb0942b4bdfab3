"""Many adapters: Zipf traffic over 10,000 adapters of 100 tenants, default cache (issue 12).

    python -m benchmarks.bench_many_adapters                       # 10,000 adapters, 4,000 requests
    python -m benchmarks.bench_many_adapters --adapters 1000 --requests 1000   # a quick run

Design:
- Store: 100 tenants x (adapters / 100) adapters, 90% head adapters (heads trained on real
  8-shot data of 4 public sets, copied with a little noise so that every adapter differs) and
  10% LoRA adapters (rank 8 on query/value, non-identity), published straight into an
  ``AdapterStore`` (HTTP creation of 10,000 adapters would take an hour and measures
  something else). Cached between runs under --store.
- Server: ``bentoml serve`` as ``make serve`` runs it, default settings (TAILOR_CACHE_SIZE
  256), with 100 API keys (one per tenant) so requests are authenticated as in production.
- Traffic: each request predicts ONE short text with an adapter drawn from a Zipf law over
  all adapters (p ~ 1/rank^s, s = 1.0, ranks shuffled across tenants), closed loop at
  concurrency 64 (pre-encoded keep-alive client of bench_peers).
- Reported: texts/s, p50/p99 latency of all requests, of requests whose adapter was
  resident and of those that needed a cold load (classified by replaying the request order
  through an LRU of the cache size on the client side), distinct adapters touched, and the
  worker's resident memory (VmRSS before/after, VmHWM peak).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_peers import ServerSpec, free_port, load, pct, start, stop
from benchmarks.common import machine, write_section

TENANTS = 100
LORA_SHARE = 0.1


def populate(store_root: Path, n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """-> [(tenant, name, kind)] in publication order; reuses a store built before."""
    import torch

    from adapters.encoders.base import BackboneIdentity, weights_sha256
    from adapters.encoders.lora import LoraSpec
    from adapters.encoders.text import default_model_path
    from adapters.storage.manifest import Artifact
    from adapters.storage.store import AdapterStore

    marker = store_root / f".populated-{n}-{seed}"
    rng = random.Random(seed)
    plan = []
    for i in range(n):
        tenant = f"tenant{i % TENANTS:03d}"
        kind = "lora" if rng.random() < LORA_SHARE else "head"
        plan.append((tenant, f"{kind}-{i:05d}", kind))
    if marker.exists():
        return plan
    identity = BackboneIdentity("all-MiniLM-L6-v2", weights_sha256(default_model_path()))
    store = AdapterStore(store_root, identity, max_adapters_per_tenant=max(1000, n // TENANTS + 1))
    g = torch.Generator().manual_seed(seed)
    spec = LoraSpec(rank=8, alpha=16.0, targets=("query", "value"))
    layers = [f"encoder.layer.{k}.attention.self.{t}" for k in range(6) for t in ("query", "value")]
    for tenant, name, kind in plan:
        labels = [f"label{j}" for j in range(2 + rng.randrange(5))]
        tensors = {"head.weight": torch.randn(len(labels), 384, generator=g) * 3,
                   "head.bias": torch.randn(len(labels), generator=g) * 0.1}
        lora = None
        if kind == "lora":
            for layer in layers:
                tensors[f"lora.{layer}.A"] = torch.randn(8, 384, generator=g) / 20
                tensors[f"lora.{layer}.B"] = torch.randn(384, 8, generator=g) / 20
            lora = spec
        store.publish(tenant, name, Artifact(kind=kind, labels=labels, tensors=tensors,
                                             options={}, metrics={}, lora=lora))
    marker.touch()
    return plan


def zipf_order(n_adapters: int, n_requests: int, s: float, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_adapters + 1, dtype=np.float64)
    p = ranks ** -s
    p /= p.sum()
    perm = rng.permutation(n_adapters)  # rank -> adapter, across tenants
    return [int(perm[r]) for r in rng.choice(n_adapters, size=n_requests, p=p)]


def lru_cold(order: list[int], capacity: int) -> list[bool]:
    cache: collections.OrderedDict[int, None] = collections.OrderedDict()
    cold = []
    for a in order:
        if a in cache:
            cache.move_to_end(a)
            cold.append(False)
        else:
            cold.append(True)
            cache[a] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return cold


def cold_loads(store_root: Path, plan: list[tuple[str, str, str]], n: int = 300) -> dict[str, list[float]]:
    """Seconds per cold ``AdapterRegistry.get`` by kind, in this process."""
    from adapters.encoders.base import BackboneIdentity, weights_sha256
    from adapters.encoders.text import default_model_path
    from adapters.kinds.base import load_adapter
    from adapters.serving.registry import AdapterRegistry
    from adapters.storage.store import AdapterStore

    identity = BackboneIdentity("all-MiniLM-L6-v2", weights_sha256(default_model_path()))
    registry = AdapterRegistry(AdapterStore(store_root, identity), load_adapter, capacity=n + 1)
    out: dict[str, list[float]] = {}
    for tenant, name, kind in random.Random(7).sample(plan, min(n, len(plan))):
        t = time.perf_counter()
        registry.get(tenant, name)
        out.setdefault(kind, []).append(time.perf_counter() - t)
    return out


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _worker_pid(root: int) -> int:
    """The BentoML worker: the largest process under the server (by resident memory)."""
    best, rss = root, 0
    for pid in [root, *_descendants(root)]:
        try:
            r = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except OSError:
            continue
        if r > rss:
            best, rss = pid, r
    return best


def main(argv: list[str] | None = None) -> str:
    import sys

    from benchmarks.bench_peers import text_sets

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--adapters", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=4_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--zipf", type=float, default=1.0)
    p.add_argument("--store", default="/tmp/tailor-many-store-12b")
    args = p.parse_args(argv)
    store = Path(args.store)
    reused = (store / f".populated-{args.adapters}-0").exists()
    t0 = time.perf_counter()
    plan = populate(store, args.adapters)
    populate_s = time.perf_counter() - t0
    keys = {f"tenant{i:03d}": secrets.token_urlsafe(24) for i in range(TENANTS)}
    port = free_port()
    spec = ServerSpec("tailor", [str(Path(sys.executable).parent / "bentoml"), "serve",
                                 "service.service:TailorService", "--port", str(port)],
                      {"TAILOR_STORE_PATH": str(store), "BENTOML_DO_NOT_TRACK": "True",
                       "TAILOR_API_KEYS": ",".join(f"{k} {t}" for t, k in keys.items())},
                      "/readyz", "/v1/predict", None, None, port)
    texts = text_sets(600)["short"]
    order = zipf_order(len(plan), args.requests, args.zipf, seed=1)
    import json

    reqs = []
    for i, a in enumerate(order):
        tenant, name, _ = plan[a]
        data = json.dumps({"adapter": name, "inputs": [texts[i % len(texts)]]}).encode()
        reqs.append(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
                    % (port, keys[tenant].encode(), len(data), data))
    run = start(spec, Path(tempfile.mkdtemp(prefix="tailor-many-logs-")))
    try:
        worker = _worker_pid(run.proc.pid)
        asyncio.run(load(port, reqs[:64], 8))  # warm-up (its adapters become resident too)
        before = rss_kib(worker)
        lat_by_request = [0.0] * len(reqs)
        rate, lat = asyncio.run(load(port, reqs, args.concurrency, lat_by_request))
        after = rss_kib(worker)
    finally:
        stop(run)
    # the server's LRU sees (nearly) the send order: replay it to classify each request
    cold = lru_cold(order, 256)
    lat_cold = [x for x, c in zip(lat_by_request, cold) if c]
    lat_warm = [x for x, c in zip(lat_by_request, cold) if not c]
    loads = cold_loads(store, plan)
    kinds = collections.Counter(plan[a][2] for a in order)
    ms = lambda xs, q: f"{1000 * pct(xs, q):.0f}" if xs else "-"  # noqa: E731
    md = ["## Many adapters: Zipf traffic over %d adapters of %d tenants (issue 12)" % (len(plan), TENANTS), "",
          f"Machine: {machine()}; store {'reused' if reused else f'populated in {populate_s:.0f} s'} "
          f"({LORA_SHARE:.0%} LoRA, first population of 10,000: ~5 min); server as "
          f"`make serve` with 100 API keys, default cache 256; {args.requests} single-text predict "
          f"requests, Zipf s={args.zipf}, concurrency {args.concurrency}; {len(set(order))} distinct "
          f"adapters touched; rows: {kinds['head']} head, {kinds['lora']} LoRA.", "",
          "| requests | share | p50 ms | p99 ms |", "|---|---:|---:|---:|",
          f"| all | 100% | {ms(lat, .5)} | {ms(lat, .99)} |",
          f"| adapter resident (LRU replay) | {len(lat_warm) / len(lat):.0%} | {ms(lat_warm, .5)} | {ms(lat_warm, .99)} |",
          f"| cold load needed | {len(lat_cold) / len(lat):.0%} | {ms(lat_cold, .5)} | {ms(lat_cold, .99)} |", "",
          "Cold load in process (AdapterRegistry.get on a fresh registry: store lookup, manifest, "
          "checksums, safetensors, head/LoRA tensors), 300 random adapters:", "",
          "| kind | loads | p50 ms | p99 ms |", "|---|---:|---:|---:|",
          *[f"| {k} | {len(v)} | {1000 * pct(v, .5):.2f} | {1000 * pct(v, .99):.2f} |" for k, v in loads.items()], "",
          f"Throughput: **{rate:.1f} texts/s**. Worker memory: VmRSS {before.get('VmRSS', 0) / 1024:.0f} MiB "
          f"before -> {after.get('VmRSS', 0) / 1024:.0f} MiB after, peak (VmHWM) {after.get('VmHWM', 0) / 1024:.0f} MiB.", ""]
    text = "\n".join(md)
    write_section("many_adapters", text)
    return text


if __name__ == "__main__":
    import sys

    print(main(sys.argv[1:]))
