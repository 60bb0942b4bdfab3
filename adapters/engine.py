"""Tailor's domain facade: one frozen backbone, a store, a registry and a batcher.

Usable from a notebook without a server::

    from adapters import Tailor
    t = Tailor.open(store_root="./store")
    t.create_adapter("default", "topics", "head", examples)
    t.predict("default", "topics", ["some text"])

The service calls the ``a*`` coroutines, which send rows through the micro-batcher so that
concurrent requests for different adapters share one backbone forward.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from .backbone import Backbone
from .batcher import MicroBatcher
from .batching import group_rows
from .config import ADAPTER_KINDS, Limits, parse_ref, validate_name
from .errors import InvalidRequest, TooLarge
from .registry import AdapterRegistry, LoadedAdapter
from .store import AdapterStore
from .trainer import train_head, validate_text

Row = tuple[LoadedAdapter | None, str]


def adapter_record(m: dict[str, Any]) -> dict[str, Any]:
    """The public view of a stored version (what GET /v1/adapters/{name} answers)."""
    return {
        "name": m["name"],
        "version": m["version"],
        "ref": f"{m['name']}@{m['version']}",
        "kind": m["kind"],
        "status": "ready",
        "labels": m["labels"],
        "multi_label": bool(m.get("multi_label")),
        "options": m.get("options", {}),
        "metrics": m.get("metrics", {}),
        "warnings": m.get("warnings", []),
        "backbone": m["backbone"],
        "size_bytes": m.get("size_bytes", 0),
        "created_at": m["created_at"],
    }


def format_prediction(adapter: LoadedAdapter, probs: torch.Tensor) -> dict[str, Any]:
    """probs [labels] -> {"label", "score", "scores"} (+ "labels" for multi-label)."""
    values = [float(p) for p in probs.tolist()]
    best = max(range(len(values)), key=values.__getitem__)
    out: dict[str, Any] = {"label": adapter.labels[best], "score": values[best],
                           "scores": dict(zip(adapter.labels, values))}
    if adapter.multi_label:
        out["labels"] = [lab for lab, p in zip(adapter.labels, values) if p >= adapter.threshold]
    return out


class Tailor:
    def __init__(self, backbone: Backbone, store: AdapterStore, *, limits: Limits = Limits(),
                 cache_size: int = 256, max_batch_rows: int = 64, max_wait_ms: float = 20.0,
                 max_queued_rows: int = 4096, max_queue_wait_s: float = 30.0):
        self.backbone = backbone
        self.store = store
        self.registry = AdapterRegistry(store, cache_size)
        self.limits = limits
        self.batcher: MicroBatcher[Row, torch.Tensor] = MicroBatcher(
            self.run_rows, max_rows=max_batch_rows, max_wait_ms=max_wait_ms,
            max_queued_rows=max(max_queued_rows, max_batch_rows), max_queue_wait_s=max_queue_wait_s)

    @classmethod
    def open(cls, store_root: str | Path, backbone_path: str | Path | None = None,
             **kwargs: Any) -> "Tailor":
        backbone = Backbone(backbone_path)
        return cls(backbone, AdapterStore(store_root, backbone.identity), **kwargs)

    # -- the batched forward ----------------------------------------------------------------
    def run_rows(self, rows: list[Row]) -> list[torch.Tensor]:
        """One backbone pass over all rows (length-sorted chunks), then each row through its
        own adapter's head. Rows of LoRA adapters get their low-rank deltas inside that same
        pass. Rows without an adapter get their embedding."""
        loras = [a.lora if a is not None else None for a, _ in rows]
        emb = self.backbone.embed([text for _, text in rows],
                                  loras if any(w is not None for w in loras) else None)  # [rows, dim]
        out: list[torch.Tensor] = list(emb)
        keys = [id(a) if a is not None else None for a, _ in rows]
        for key, idx in group_rows(keys).items():
            if key is None:
                continue
            adapter = rows[idx[0]][0]
            probs = adapter.head.probabilities(emb[idx])  # [group rows, labels]
            for i, p in zip(idx, probs):
                out[i] = p
        return out

    # -- validation -------------------------------------------------------------------------
    def check_inputs(self, inputs: Any) -> list[str]:
        if not isinstance(inputs, list) or not inputs:
            raise InvalidRequest("inputs must be a non-empty list of strings")
        if len(inputs) > self.limits.max_inputs:
            raise TooLarge(f"{len(inputs)} inputs in one request; the limit is {self.limits.max_inputs} "
                           "(TAILOR_MAX_INPUTS). Split the request")
        return [validate_text(t, f"inputs[{i}]", self.limits) for i, t in enumerate(inputs)]

    def resolve(self, tenant: str, ref: str) -> LoadedAdapter:
        name, version = parse_ref(ref)
        return self.registry.get(tenant, name, version)

    # -- sync API (notebooks, CLI, tests) ----------------------------------------------------
    def create_adapter(self, tenant: str, name: str, kind: str, examples: Any,
                       options: dict[str, Any] | None = None) -> dict[str, Any]:
        validate_name(name)
        self.store.check_room(tenant, name)  # before training: the limit is a 4xx at once
        if kind not in ADAPTER_KINDS:
            raise InvalidRequest(f"kind {kind!r} is not supported; use one of {list(ADAPTER_KINDS)}")
        if kind == "lora":  # in-process and blocking (notebooks); the service uses LoraJobs
            from .lora_trainer import train_lora

            lora_art = train_lora(self.backbone, examples, options, self.limits)
            m = self.store.publish(tenant, name, kind="lora", tensors=lora_art.tensors(),
                                   meta=lora_art.meta(),
                                   examples=examples if isinstance(examples, list) else None)
            return adapter_record(m)
        art = train_head(self.backbone.embed, examples, options, self.limits)
        m = self.store.publish(tenant, name, kind=art.kind, tensors=art.tensors(), meta={
            "labels": art.labels, "multi_label": art.multi_label, "options": art.options,
            "metrics": art.metrics, "warnings": art.warnings},
            examples=examples if isinstance(examples, list) else None)
        return adapter_record(m)

    def predict(self, tenant: str, ref: str, inputs: Any) -> dict[str, Any]:
        texts = self.check_inputs(inputs)
        adapter = self.resolve(tenant, ref)
        probs = self.run_rows([(adapter, t) for t in texts])
        return {"adapter": adapter.ref, "predictions": [format_prediction(adapter, p) for p in probs]}

    def embed(self, inputs: Any) -> dict[str, Any]:
        texts = self.check_inputs(inputs)
        return _embeddings(self.run_rows([(None, t) for t in texts]))

    def list_adapters(self, tenant: str) -> list[dict[str, Any]]:
        out = []
        for name in self.store.names(tenant):
            try:
                out.append(adapter_record(self.store.manifest(tenant, name)))
            except Exception:  # deleted meanwhile by another replica
                continue
        return out

    def get_adapter(self, tenant: str, ref: str) -> dict[str, Any]:
        name, version = parse_ref(ref)
        rec = adapter_record(self.store.manifest(tenant, name, version))
        rec["versions"] = self.store.versions(tenant, name)
        return rec

    def delete_adapter(self, tenant: str, name: str, version: int | None = None) -> list[int]:
        validate_name(name)
        removed = self.store.delete(tenant, name, version)
        self.registry.forget(tenant, name, removed)
        return removed

    # -- async API (the service) -------------------------------------------------------------
    async def apredict(self, tenant: str, ref: str, inputs: Any) -> dict[str, Any]:
        texts = self.check_inputs(inputs)
        adapter = self.resolve(tenant, ref)
        probs = await self.batcher.submit([(adapter, t) for t in texts])
        return {"adapter": adapter.ref, "predictions": [format_prediction(adapter, p) for p in probs]}

    async def aembed(self, inputs: Any) -> dict[str, Any]:
        texts = self.check_inputs(inputs)
        return _embeddings(await self.batcher.submit([(None, t) for t in texts]))


def _embeddings(rows: Sequence[torch.Tensor]) -> dict[str, Any]:
    vecs = [[float(v) for v in r.tolist()] for r in rows]
    return {"embeddings": vecs, "dim": len(vecs[0]) if vecs else 0}
