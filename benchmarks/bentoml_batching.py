"""A baseline for the serving benchmark: the same backbone behind BentoML's own adaptive
batching (`@bentoml.api(batchable=True)`), to compare with Tailor's micro-batcher.

    bentoml serve benchmarks.bentoml_batching:BentoBatched
"""
from __future__ import annotations

import bentoml


@bentoml.service(name="bentoml-batching-baseline", workers=1)
class BentoBatched:
    def __init__(self) -> None:
        import torch

        from adapters import open_encoder

        torch.set_num_threads(1)
        self.encoder = open_encoder(workers=2)
        self.encoder.embed(["warm-up"])

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=60_000)
    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.embed(texts).tolist()
