"""Tailor's domain facade: one frozen encoder, a store, a registry, a batcher and jobs.

Usable from a notebook without a server::

    from adapters import Tailor
    t = Tailor.open(store_root="./store")
    t.create_adapter("default", "topics", "head", examples)          # trained now: the record
    pending = t.create_adapter("default", "q", "lora", examples)     # a job kind: record + job
    t.wait_job("default", pending["job"]["id"])
    t.predict("default", "topics", ["some text"])

Every kind goes through one create path: validate (``kinds.build_request``), then train in
the call or submit a job, then ``store.publish``. The service calls only this facade; its
``a*`` coroutines send rows through the micro-batcher so that concurrent requests for
different adapters share one backbone forward.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from .encoders import Encoder, open_encoder
from .errors import AdapterNotFound, CorruptAdapter, IncompatibleAdapter
from .kinds import build_request, get_kind, load_adapter
from .segments import group_rows
from .serving import AdapterRegistry, LoadedAdapter, MicroBatcher
from .storage import AdapterStore, Manifest
from .training.jobs import Job, JobManager
from .training.worker import WorkerConfig, train_in_subprocess
from .validation import Limits, parse_ref, validate_inputs, validate_name

log = logging.getLogger("tailor")

Row = tuple[LoadedAdapter | None, Any]  # (adapter or None for a bare embedding, input)
JOB_SUFFIX = "_train"  # a job's kind is "<adapter kind>_train"


def adapter_record(m: Manifest) -> dict[str, Any]:
    """The public view of a stored version (what GET /v1/adapters/{name} answers)."""
    return {
        "name": m.name,
        "version": m.version,
        "ref": m.ref,
        "kind": m.kind,
        "status": "ready",
        "labels": list(m.labels),
        "multi_label": m.multi_label,
        "options": m.options,
        "metrics": m.metrics,
        "warnings": list(m.warnings),
        "backbone": m.backbone.model_dump(),
        "size_bytes": m.size_bytes,
        "created_at": m.created_at,
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
    def __init__(self, encoder: Encoder, store: AdapterStore, *, limits: Limits = Limits(),
                 cache_size: int = 256, max_batch_rows: int = 64, max_wait_ms: float = 20.0,
                 max_queued_rows: int = 4096, max_queue_wait_s: float = 30.0,
                 jobs: JobManager | None = None, worker: WorkerConfig = WorkerConfig()):
        """``jobs``: the runner of job kinds, started here with this engine's executor unless
        its owner started it with another; by default one is made under ``<store>/jobs``
        when a job kind is first created."""
        self.encoder = encoder
        self.store = store
        self.registry = AdapterRegistry(store, load_adapter, cache_size)
        self.limits = limits
        self.worker = worker
        self.batcher: MicroBatcher[Row, torch.Tensor] = MicroBatcher(
            self.run_rows, max_rows=max_batch_rows, max_wait_ms=max_wait_ms,
            max_queued_rows=max(max_queued_rows, max_batch_rows), max_queue_wait_s=max_queue_wait_s)
        self._jobs = jobs
        if jobs is not None and not jobs.started:
            jobs.start(self._run_job)

    @classmethod
    def open(cls, store_root: str | Path, backbone_path: str | Path | None = None,
             **kwargs: Any) -> "Tailor":
        encoder = open_encoder(backbone_path)
        return cls(encoder, AdapterStore(store_root, encoder.identity), **kwargs)

    @property
    def jobs(self) -> JobManager:
        if self._jobs is None:
            self._jobs = JobManager(self.store.root / "jobs")
            self._jobs.start(self._run_job)
        return self._jobs

    # -- the batched forward ----------------------------------------------------------------
    def run_rows(self, rows: list[Row]) -> list[torch.Tensor]:
        """One backbone pass over all rows (each input prepared once, length-sorted chunks),
        then each row through its own adapter's head. Rows of LoRA adapters get their
        low-rank deltas inside that same pass. Rows without an adapter get their embedding."""
        loras = [a.lora if a is not None else None for a, _ in rows]
        emb = self.encoder.embed([item for _, item in rows],
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

    def resolve(self, tenant: str, ref: str) -> LoadedAdapter:
        name, version = parse_ref(ref)
        return self.registry.get(tenant, name, version)

    # -- creating adapters: one path for every kind -----------------------------------------
    def create_adapter(self, tenant: str, name: str, kind: str, examples: Any,
                       options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Validate, then train now (in-request kinds: the new version's record) or queue a
        job (job kinds: the pending record with its ``job``). Bad input raises a 4xx-mapped
        error before anything is trained, queued or stored."""
        validate_name(name)
        k = get_kind(kind)
        self.store.check_room(tenant, name)  # before training: the limit is a 4xx at once
        request = build_request(k, examples, options, self.limits)
        if k.runs_as_job:
            payload = {"kind": k.name, "examples": list(examples), "options": dict(options or {})}
            job = self.jobs.submit(k.name + JOB_SUFFIX, tenant, name, payload)
            return {"name": name, "kind": k.name, "status": "training",
                    "labels": request.data.labels,
                    "options": request.options.stored(request.label_order), "job": job.public()}
        artifact = k.train(self.encoder, request)
        return adapter_record(self.store.publish(tenant, name, artifact, examples))

    def _run_job(self, job: Job) -> dict[str, Any]:
        """The executor of this process's job runner: train in a worker process, then publish
        (unless cancelled first). A cancelled, failed or interrupted job publishes nothing."""
        p, rec = job.payload, job.record
        artifact = train_in_subprocess(
            job, kind=p["kind"], examples=p["examples"], options=p["options"],
            backbone_path=str(self.encoder.model_dir), limits=dataclasses.asdict(self.limits),
            tmp_dir=self.store.root / ".tmp", config=self.worker)
        job.begin_publish()
        m = self.store.publish(rec.tenant, rec.adapter, artifact, p["examples"])
        return {"adapter": m.ref, "version": m.version, "metrics": m.metrics}

    def get_job(self, tenant: str, job_id: str) -> dict[str, Any]:
        return self.jobs.get(tenant, job_id).public()

    def cancel_job(self, tenant: str, job_id: str) -> dict[str, Any]:
        return self.jobs.cancel(tenant, job_id).public()

    def wait_job(self, tenant: str, job_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Block until the job is finished (notebooks, tests)."""
        return self.jobs.wait(tenant, job_id, timeout).public()

    def training(self, tenant: str) -> list[dict[str, Any]]:
        """Adapters of ``tenant`` whose training job is queued or running in this process."""
        if self._jobs is None:
            return []
        return [{"name": r.adapter, "kind": r.kind.removesuffix(JOB_SUFFIX), "status": "training",
                 "job": r.public()} for r in self._jobs.active(tenant)]

    # -- reading and deleting ------------------------------------------------------------------
    def list_adapters(self, tenant: str) -> list[dict[str, Any]]:
        out = []
        for name in self.store.names(tenant):
            try:
                out.append(adapter_record(self.store.manifest(tenant, name)))
            except AdapterNotFound:  # deleted meanwhile by another replica
                continue
            except (CorruptAdapter, IncompatibleAdapter) as e:  # listed by name only in the log
                log.warning("skipping adapter in list: %s", e.message)
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

    # -- predictions: sync (notebooks, CLI, tests) and async (the service) -----------------------
    def predict(self, tenant: str, ref: str, inputs: Any) -> dict[str, Any]:
        items = validate_inputs(inputs, self.limits)
        adapter = self.resolve(tenant, ref)
        probs = self.run_rows([(adapter, t) for t in items])
        return {"adapter": adapter.ref, "predictions": [format_prediction(adapter, p) for p in probs]}

    def embed(self, inputs: Any) -> dict[str, Any]:
        items = validate_inputs(inputs, self.limits)
        return _embeddings(self.run_rows([(None, t) for t in items]))

    async def apredict(self, tenant: str, ref: str, inputs: Any) -> dict[str, Any]:
        items = validate_inputs(inputs, self.limits)
        # the store lookup lists a folder (and may load files): never on the event loop
        adapter = await asyncio.to_thread(self.resolve, tenant, ref)
        probs = await self.batcher.submit([(adapter, t) for t in items])
        return {"adapter": adapter.ref, "predictions": [format_prediction(adapter, p) for p in probs]}

    async def aembed(self, inputs: Any) -> dict[str, Any]:
        items = validate_inputs(inputs, self.limits)
        return _embeddings(await self.batcher.submit([(None, t) for t in items]))


def _embeddings(rows: Sequence[torch.Tensor]) -> dict[str, Any]:
    vecs = [[float(v) for v in r.tolist()] for r in rows]
    return {"embeddings": vecs, "dim": len(vecs[0]) if vecs else 0}
