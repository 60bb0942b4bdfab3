"""Image serving (issue 14): predict throughput over HTTP against the in-process encoder,
and a mixed load over 16 image adapters against one adapter, on a real `bentoml serve` of
the vision backbone (``make vision-backbone``).

    python -m benchmarks.bench_vision_serving    # writes results/vision_serving.{jsonl,md}

Each request carries ONE base64 PNG (28x28 Fashion-MNIST test images of classes 5-9), so
HTTP pays JSON, base64, PNG decoding and validation per image; the in-process number is the
same work without HTTP: ``decode_images`` + ``ImageEncoder.embed`` in batches of 32 (the
service's forwards are batched by its micro-batcher). 16 head adapters are created over HTTP
(4 examples per class, different seeds); "16 adapters" spreads the requests round-robin
over them, so every backbone forward carries rows of several adapters. Rows are written to
the .jsonl as they are measured.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_serving import REQUESTS, _load
from benchmarks.common import RESULTS_DIR, machine, median_time, write_section
from benchmarks.vision import fashion_mnist as fm

CONCURRENCY = (1, 16, 64)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BACKBONE = Path(os.environ.get("TAILOR_VISION_BACKBONE", "build/vision-backbone"))
OUT = RESULTS_DIR / "vision_serving.jsonl"


def png_b64(a: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _row(row: dict) -> None:
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> str:
    import httpx
    import torch

    from adapters.encoders import ImageEncoder
    from adapters.modalities.image import decode_images
    from tests.conftest import Server

    torch.set_num_threads(1)
    pool, _ = fm.few_shot_pools()
    test = fm.load("test").only(fm.FEW_SHOT_CLASSES)
    items = [{"image": png_b64(im)} for im in test.images[:REQUESTS]]
    OUT.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(Path(tmp) / "store", env={"TAILOR_BACKBONE_PATH": str(BACKBONE.resolve())})
        srv.start(timeout=300)
        try:
            with httpx.Client(base_url=srv.url, timeout=300) as c:
                adapters = []
                for i in range(16):
                    s = fm.sample_shots(pool, 4, seed=100 + i)
                    ex = [{"image": png_b64(im), "label": str(int(y))} for im, y in zip(s.images, s.labels)]
                    r = c.post("/v1/adapters", json={"name": f"img{i}", "examples": ex})
                    assert r.status_code == 201, r.text
                    adapters.append(f"img{i}")
            encoder = ImageEncoder(BACKBONE, workers=2)
            body = lambda names: (lambda i: ("/v1/predict", {  # noqa: E731
                "adapter": names[i % len(names)], "inputs": [items[i % len(items)]]}))
            asyncio.run(_load(srv.url, body(adapters), 16))  # warm-up
            rounds = []
            for rnd in range(ROUNDS):
                def inproc() -> None:
                    for i in range(0, len(items), 32):
                        encoder.embed(decode_images(items[i:i + 32]))
                rate = len(items) / median_time(inproc, repeats=1, warmup=0)
                res = {"round": rnd, "inproc": rate, "http": {}}
                _row({"round": rnd, "what": "inproc", "images_per_s": round(rate, 1)})
                for n in CONCURRENCY:
                    for label, names in (("1 adapter", adapters[:1]), ("16 adapters", adapters)):
                        r, lat = asyncio.run(_load(srv.url, body(names), n))
                        lat.sort()
                        res["http"][(label, n)] = (r, lat[len(lat) // 2] * 1000)
                        _row({"round": rnd, "what": label, "concurrency": n,
                              "images_per_s": round(r, 1), "p50_ms": round(lat[len(lat) // 2] * 1000, 1),
                              "load": round(os.getloadavg()[0], 2)})
                rounds.append(res)
        finally:
            srv.stop()
    base = statistics.median(r["inproc"] for r in rounds)
    lines = [f"Machine: {machine()}, load average {os.getloadavg()[0]:.1f} at the end (a shared "
             f"machine: other jobs ran beside it). Backbone `{BACKBONE}`; one 28x28 PNG per "
             f"request, {REQUESTS} requests per measurement, median of {ROUNDS} rounds. "
             f"In process (decode + embed, batches of 32, 2 forward workers x 1 thread): "
             f"**{base:.0f} images/s**.", "",
             "| concurrency | 1 adapter: images/s | p50 ms | 16 adapters: images/s | p50 ms | "
             "1 adapter / in-process | 16 / 1 adapter |", "|---|---|---|---|---|---|---|"]
    for n in CONCURRENCY:
        one = statistics.median(r["http"][("1 adapter", n)][0] for r in rounds)
        many = statistics.median(r["http"][("16 adapters", n)][0] for r in rounds)
        p1 = statistics.median(r["http"][("1 adapter", n)][1] for r in rounds)
        p16 = statistics.median(r["http"][("16 adapters", n)][1] for r in rounds)
        lines.append(f"| {n} | {one:.0f} | {p1:.0f} | {many:.0f} | {p16:.0f} | {one / base:.2f} | "
                     f"{many / one:.2f} |")
    md = "\n".join(lines) + "\n"
    write_section("vision_serving", md)
    return md


if __name__ == "__main__":
    t = time.perf_counter()
    print(main())
    print(f"{time.perf_counter() - t:.0f} s")
