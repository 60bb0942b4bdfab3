"""OpenAI-compatible embeddings (issue 22): what a LoRA adapter's tuned embeddings buy in
retrieval, and what /v1/embeddings costs next to /v1/embed.

    python -m benchmarks.bench_openai                  # 3 sets, 400 held-out texts each
    python -m benchmarks.bench_openai --quick          # 1 set, fewer texts

One server, started as `make serve` starts it (``bentoml serve``, default settings). For each
labeled set a LoRA adapter is trained through the API on 8 examples per label; then held-out
texts are embedded through ``POST /v1/embeddings`` with ``model`` = the backbone and with
``model`` = the adapter, and each text is a query against the others (leave-one-out):
1-NN accuracy (the nearest text has the query's label) and recall@10 (share of the 10
nearest with the query's label). Then throughput, one text per request, /v1/embed and
/v1/embeddings (model = the backbone) alternated at c=1 and c=64 (medians).
Writes benchmarks/results/openai.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_peers import encode_requests, load, start, stop, tailor_spec, text_sets
from benchmarks.common import machine, write_section

SETS = ("trec_coarse", "sms_spam", "bbc_news")
K = 10


def knn_scores(emb: np.ndarray, labels: list[str], k: int = K) -> tuple[float, float]:
    """Leave-one-out 1-NN accuracy and recall@k of same-label neighbours, by cosine
    (embeddings are L2-normalised)."""
    sim = emb @ emb.T  # [texts, texts]
    np.fill_diagonal(sim, -np.inf)
    y = np.asarray(labels)
    nearest = np.argsort(-sim, axis=1)[:, :k]  # [texts, k]
    same = y[nearest] == y[:, None]
    return float(same[:, 0].mean()), float(same.mean())


def embeddings(client, model: str, texts: list[str], batch: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(texts), batch):
        r = client.post("/v1/embeddings", json={"model": model, "input": texts[i:i + batch]})
        r.raise_for_status()
        out += [d["embedding"] for d in r.json()["data"]]
    return np.asarray(out, dtype=np.float32)


def retrieval(url: str, set_name: str, n_test: int, seed: int = 0) -> dict:
    import httpx

    from benchmarks import datasets
    from service.client import Client

    train, test = getattr(datasets, set_name)().few_shot(8, seed=seed, max_test=n_test, max_chars=400)
    texts, labels = [t for t, _ in test], [lab for _, lab in test]
    t0 = time.perf_counter()
    with Client(url) as c:
        pending = c.create_adapter(f"r-{set_name.replace('_', '-')}", train, kind="lora")
        job = c.wait(pending.job, timeout=3600)
    if job.status != "succeeded":
        raise RuntimeError(f"LoRA training failed on {set_name}: {job}")
    train_s = time.perf_counter() - t0
    with httpx.Client(base_url=url, timeout=600) as h:
        backbone = h.get("/v1/models").json()["data"][0]["id"]
        base = knn_scores(embeddings(h, backbone, texts), labels)
        tuned = knn_scores(embeddings(h, job.result["adapter"], texts), labels)
    return {"set": set_name, "labels": len(set(labels)), "test": len(texts), "train_s": train_s,
            "adapter": job.result["adapter"], "base": base, "tuned": tuned}


def openai_requests(port: int, model: str, texts: list[str]) -> list[bytes]:
    out = []
    for t in texts:
        data = json.dumps({"model": model, "input": [t]}).encode()
        out.append(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: "
                   b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (port, len(data), data))
    return out


def throughput(spec, model: str, sets: dict[str, list[str]], rounds: int) -> list[tuple]:
    rows = []
    for set_name, texts in sets.items():
        embed_reqs = encode_requests(spec, texts)
        oa_reqs = openai_requests(spec.port, model, texts)
        asyncio.run(load(spec.port, embed_reqs[:64], 8))  # warm-up
        asyncio.run(load(spec.port, oa_reqs[:64], 8))
        for c in (1, 64):
            n = len(texts) if c == 64 else min(len(texts), 200)
            e, o = [], []
            for i in range(rounds):  # alternated A-B, B-A: the machine's load moves both alike
                for reqs, rates in ((embed_reqs, e), (oa_reqs, o))[::1 if i % 2 == 0 else -1]:
                    rates.append(asyncio.run(load(spec.port, reqs[:n], c))[0])
            ratios = [b / a for a, b in zip(e, o)]
            rows.append((set_name, c, statistics.median(e), statistics.median(o),
                         statistics.median(ratios), min(ratios), max(ratios)))
    return rows


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--test", type=int, default=400, help="held-out texts per set")
    p.add_argument("--texts", type=int, default=600, help="texts per throughput set")
    p.add_argument("--rounds", type=int, default=6, help="throughput pairs per row")
    p.add_argument("--only-throughput", action="store_true", help="skip the retrieval part")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    sets = SETS[:1] if args.quick else SETS
    n_test, n_texts = (150, 200) if args.quick else (args.test, args.texts)
    store = Path(tempfile.mkdtemp(prefix="tailor-openai-"))
    logdir = Path(tempfile.mkdtemp(prefix="tailor-openai-logs-"))
    spec = tailor_spec("Tailor, default (as `make serve`)", store)
    run = start(spec, logdir)
    url = f"http://127.0.0.1:{spec.port}"
    try:
        found = [] if args.only_throughput else [retrieval(url, s, n_test) for s in sets]
        import httpx

        model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        speed = throughput(spec, model, text_sets(n_texts), args.rounds)
    finally:
        stop(run)
    load_avg = os.getloadavg()
    md = ["## OpenAI-compatible embeddings: retrieval with a LoRA adapter, and throughput (issue 22)",
          "", f"Machine: {machine()}; load average {load_avg[0]:.1f} / {load_avg[1]:.1f} / "
          f"{load_avg[2]:.1f} at the end (shared machine). Server as `make serve`, default settings."]
    if found:
        md += ["", "### Retrieval: backbone vs a LoRA adapter's tuned embeddings, through /v1/embeddings",
              "", f"LoRA adapter trained through the API on 8 examples per label (default options); "
              f"held-out texts (max 400 chars), each a leave-one-out query against the others. "
              f"1-NN: the nearest text has the query's label; recall@{K}: share of the {K} nearest "
              "with the query's label.", "",
              f"| set | labels | texts | 1-NN backbone | 1-NN LoRA | gain | recall@{K} backbone | "
              f"recall@{K} LoRA | gain | LoRA trained in |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in found:
        (b1, bk), (t1, tk) = r["base"], r["tuned"]
        md.append(f"| {r['set']} | {r['labels']} | {r['test']} | {b1:.3f} | {t1:.3f} | "
                  f"{(t1 - b1) * 100:+.1f} pt | {bk:.3f} | {tk:.3f} | {(tk - bk) * 100:+.1f} pt | "
                  f"{r['train_s']:.0f} s |")
    md += ["", "### Throughput: /v1/embeddings (model = the backbone) vs /v1/embed",
           "", f"One text per request; the two routes alternated {args.rounds} times per row "
           "(A-B, B-A, ...; medians, and the per-pair ratio's median and min-max). c=1: 200 "
           "requests, c=64: all.", "",
           "| texts | c | /v1/embed texts/s | /v1/embeddings texts/s | ratio of medians | "
           "per-pair ratio: median | min-max |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for s, c, e, o, ratio, lo, hi in speed:
        md.append(f"| {s} | {c} | {e:.1f} | {o:.1f} | {o / e:.2f}x | {ratio:.2f}x | {lo:.2f}-{hi:.2f} |")
    text = "\n".join(md) + "\n"
    write_section("openai", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
