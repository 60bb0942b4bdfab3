"""LoRA adapters: per-row routing in one forward, isolation between threads, store round
trip, and the backbone never changing. Real backbone (all-MiniLM-L6-v2), no mocks."""
from __future__ import annotations

import copy
import threading

import pytest
import torch

from adapters import AdapterStore, Manifest, Tailor, TextEncoder
from adapters.encoders.lora import LoraSpec, LoraWeights, plan
from adapters.heads import LinearHead
from adapters.serving import LoadedAdapter

TEXTS = ["What is the capital of France?", "win a free prize now, text STOP to 80082",
         "The league table changed after the weekend's football games and the manager left",
         "ok", "How many miles are there in a kilometre?", "Shares fell sharply on Monday",
         "Who wrote Hamlet?", "new phone, who dis", "The film won three awards at the festival"]


@pytest.fixture(scope="module")
def backbone() -> TextEncoder:
    return TextEncoder(max_batch_rows=4)  # small chunks: rows of one adapter span several forwards


@pytest.fixture(scope="module")
def checksum(backbone: TextEncoder) -> str:
    return backbone.weights_checksum()


def _adapter(name: str, lora: LoraWeights | None, labels: int = 3, seed: int = 0) -> LoadedAdapter:
    g = torch.Generator().manual_seed(seed)
    head = LinearHead(torch.randn(labels, 384, generator=g), torch.randn(labels, generator=g), "softmax")
    m = Manifest(schema_version=1, id="0" * 32, tenant="t", name=name, version=1,
                 kind="lora" if lora else "head", labels=[f"l{i}" for i in range(labels)],
                 lora=lora.spec if lora else None, backbone={"name": "b", "sha256": "0" * 64},
                 files={}, created_at="2026-01-01T00:00:00Z")
    return LoadedAdapter(m, head, lora)


@pytest.fixture(scope="module")
def loras(backbone: TextEncoder) -> list[LoraWeights]:
    """Three non-identity adapters (B != 0) of different ranks and target sets."""
    specs = [LoraSpec(rank=4, alpha=8, targets=("query", "value")),
             LoraSpec(rank=8, alpha=16, targets=("query", "value")),
             LoraSpec(rank=2, alpha=4, targets=("query", "key", "value", "dense"))]
    return [LoraWeights.init(backbone.model, s, seed=i + 1, identity=False)
            for i, s in enumerate(specs)]


def merged_embed(backbone: TextEncoder, w: LoraWeights | None, texts: list[str]) -> torch.Tensor:
    """Reference that shares no code with the routing hooks: merge B @ A into a fresh copy."""
    if w is None:
        return backbone.embed(texts)
    model = copy.deepcopy(backbone.model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in w.a:
            modules[name].weight += w.delta_weight(name)
    other = copy.copy(backbone)
    other.model = model
    return other.embed(texts)


@pytest.mark.parametrize("case", [
    # (row -> adapter index: 0..2 LoRA, 3 head-only, None bare)
    [0, 1, 2, 3, None, 0, 1, 2, None],
    [2, 2, 2, 2, 2, 2, 2, 2, 2],
    [None, 3, None, 0, 3, 1, None, 2, 0],
])
def test_mixed_batch_equals_separate_runs(backbone, loras, checksum, case):
    adapters = [_adapter(f"a{i}", w, seed=i) for i, w in enumerate(loras)] + [_adapter("head", None, seed=9)]
    engine = Tailor(backbone, store=None)  # run_rows needs no store
    rows = [(adapters[k] if k is not None else None, TEXTS[i]) for i, k in enumerate(case)]
    mixed = engine.run_rows(rows)
    for k in set(case):
        idx = [i for i, c in enumerate(case) if c == k]
        a = adapters[k] if k is not None else None
        emb = merged_embed(backbone, a.lora if a else None, [TEXTS[i] for i in idx])
        expected = a.head.probabilities(emb) if a else emb
        for j, i in enumerate(idx):
            assert torch.allclose(mixed[i], expected[j], atol=1e-5), (k, i, (mixed[i] - expected[j]).abs().max())
    assert backbone.weights_checksum() == checksum


def test_lora_changes_rows_and_bare_rows_stay_bare(backbone, loras, checksum):
    bare = backbone.embed(TEXTS)
    tuned = backbone.embed(TEXTS, [loras[1]] * len(TEXTS))
    assert (tuned - bare).abs().max() > 1e-3  # the adapter does something (the test can fail)
    assert torch.equal(backbone.embed(TEXTS), bare)  # nothing left switched on
    assert backbone.weights_checksum() == checksum


def test_concurrent_forwards_never_see_each_others_adapters(backbone, loras):
    expected = [backbone.embed(TEXTS[:4], [w] * 4) for w in loras]
    errors: list[str] = []

    def worker(k: int) -> None:
        try:
            for _ in range(4):
                got = backbone.embed(TEXTS[:4], [loras[k]] * 4)
                if not torch.allclose(got, expected[k], atol=1e-5):
                    errors.append(f"adapter {k} saw another adapter's weights")
        except Exception as e:  # a crash in a thread must fail the test too
            errors.append(f"adapter {k}: {e!r}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("keys, order, segments", [
    ([None, None], [0, 1], None),
    (["a", None, "a", "b"], [0, 2, 1, 3], [(0, 2, "a"), (3, 4, "b")]),
    (["b", "b", "b"], [0, 1, 2], [(0, 3, "b")]),
])
def test_plan_groups_rows_into_contiguous_segments(keys, order, segments):
    objs = {k: object() for k in keys if k is not None}
    got_order, routing = plan([objs[k] if k is not None else None for k in keys])
    assert got_order == order
    if segments is None:
        assert routing is None
    else:
        assert [(s, e, w) for s, e, w in routing.segments] == [(s, e, objs[k]) for s, e, k in segments]


def test_trained_lora_round_trips_through_store_and_registry(backbone, checksum, tmp_path):
    from benchmarks.datasets import trec_coarse

    train, test = trec_coarse().few_shot(4, seed=0, max_test=60)
    engine = Tailor(backbone, AdapterStore(tmp_path, backbone.identity))
    pending = engine.create_adapter("default", "q", "lora", train, {"epochs": 1, "seed": 1})
    assert pending["status"] == "training" and pending["job"]["status"] == "queued"
    job = engine.wait_job("default", pending["job"]["id"], timeout=300)  # a worker process trains
    assert job["status"] == "succeeded", job
    rec = engine.get_adapter("default", job["result"]["adapter"])
    assert rec["kind"] == "lora" and rec["version"] == 1
    assert "cv_accuracy_head_only" in rec["metrics"]
    loaded = engine.resolve("default", "q")
    assert loaded.lora is not None and loaded.lora.spec.rank == 8
    out = engine.predict("default", "q", [t for t, _ in test])
    acc = sum(p["label"] == g for p, (_, g) in zip(out["predictions"], test)) / len(test)
    assert acc > 1 / 6 + 0.15  # 6 labels: far above chance even after one epoch
    assert backbone.weights_checksum() == checksum


@pytest.mark.parametrize("counts, batch_size", [([4] * 6 + [3] * 3, 16), ([6] * 5 + [3], 16),
                                                 ([2, 3], 4), ([17], 16), ([5, 4, 8], 2)])
def test_every_training_batch_has_a_pair(counts, batch_size):
    """A batch of one row has no pair, so its contrastive loss is a constant with no gradient:
    an update to 33 examples (batches of 16, 16, 1) failed its job (found by the console's
    browser test). Every row is used once per epoch, in batches of at least 2."""
    import random

    import numpy as np

    from adapters.kinds.lora import _batches, _contrastive_loss

    y = np.repeat(np.arange(len(counts)), counts)
    batches = _batches(y, batch_size, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(len(y)))
    assert all(len(b) >= 2 for b in batches), [len(b) for b in batches]
    emb = torch.nn.functional.normalize(torch.randn(len(y), 8, requires_grad=True), dim=1)
    for b in batches:
        assert _contrastive_loss(emb[b], torch.from_numpy(y[b])).requires_grad
