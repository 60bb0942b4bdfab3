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
from typing import Any, Callable, Sequence

import torch

from .encoders import Encoder, TorchEncoder, open_encoder
from .encoders.lora import LoraWeights
from .errors import (AdapterNotFound, CorruptAdapter, IncompatibleAdapter, InvalidOptions,
                     InvalidRequest, Overloaded, Unavailable)
from .events import NO_EVENTS, Events
from .kinds import build_request, get_kind, kind_of_job, load_adapter
from .kinds.base import BaseVersion, Decision, keep_previous_weights
from .modalities import get_modality
from .segments import group_rows
from .serving import AdapterRegistry, LoadedAdapter, MicroBatcher
from .serving.suggest import select_informative
from .storage import AdapterStore, Artifact, Inputs, Manifest, Store
from .storage.updates import merge_inputs
from .training.gate import Gate
from .training.jobs import Job, JobManager
from .training.monotone import UpdateCheck
from .training.payloads import PreviousVersion, TrainPayload, WorkerConfig
from .states import JobState
from .training.worker import train_in_subprocess
from .validation import (Limits, parse_ref, shorten, validate_inputs, validate_name,
                         validate_text_list)

log = logging.getLogger("tailor")

# (what the row goes through, input): an adapter -> its head's probabilities; LoRA weights
# -> the embedding through them (OpenAI embeddings of a LoRA adapter); None -> the backbone's
Row = tuple[LoadedAdapter | LoraWeights | None, Any]


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
        **({"label_descriptions": m.label_descriptions} if m.label_descriptions else {}),
        **({"changes": m.changes} if m.changes else {}),
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
    def __init__(self, encoder: Encoder, store: Store, *, limits: Limits = Limits(),
                 cache_size: int = 256, max_batch_rows: int = 64, max_wait_ms: float = 20.0,
                 max_queued_rows: int = 4096, max_queue_wait_s: float = 30.0,
                 jobs: JobManager | None = None, worker: WorkerConfig = WorkerConfig(),
                 max_concurrent_creates: int = 4, events: Events = NO_EVENTS):
        """``jobs``: the runner of job kinds, started here with this engine's executor unless
        its owner started it with another; by default one is made under ``<store>/jobs``
        when a job kind is first created. ``events``: who hears about cache hits, batches,
        predictions and jobs (metrics). ``max_concurrent_creates``: creates in flight through
        ``acreate_adapter`` before 429."""
        self.encoder = encoder
        self.store = store
        self.events = events
        self.registry = AdapterRegistry(store, load_adapter, cache_size, events)
        self.modality = get_modality(encoder.modality)  # inputs are read as the encoder reads
        self.limits = limits.for_modality(self.modality.name)
        self.worker = worker
        self.creates = Gate(max_concurrent_creates)
        self.batcher: MicroBatcher[Row, torch.Tensor] = MicroBatcher(
            self.run_rows, max_rows=max_batch_rows, max_wait_ms=max_wait_ms,
            max_queued_rows=max(max_queued_rows, max_batch_rows), max_queue_wait_s=max_queue_wait_s,
            events=events)
        self._jobs = jobs
        if jobs is not None and not jobs.started:
            jobs.start(self._run_job)

    @classmethod
    def open(cls, store_root: str | Path, backbone_path: str | Path | None = None,
             **kwargs: Any) -> "Tailor":
        encoder = open_encoder(backbone_path)
        return cls(encoder, AdapterStore(store_root, encoder.identity), **kwargs)

    def close(self) -> None:
        """Stop this process's job runners; a job in hand goes back to the queue."""
        if self._jobs is not None:
            self._jobs.close()

    @property
    def jobs(self) -> JobManager:
        if self._jobs is None:
            self._jobs = JobManager(self.store.root / "jobs", events=self.events)
            self._jobs.start(self._run_job)
        return self._jobs

    @property
    def tunable(self) -> bool:
        """Whether LoRA can tune this backbone: a PyTorch encoder with weights to adapt (an
        ONNX-only backbone, e.g. the speech-embedding one, says ``lora_targets = None``)."""
        enc = self.encoder.pytorch()
        return isinstance(enc, TorchEncoder) and enc.lora_targets is not None

    # -- the batched forward ----------------------------------------------------------------
    def run_rows(self, rows: list[Row]) -> list[torch.Tensor]:
        """One backbone pass over all rows (each input prepared once, length-sorted chunks),
        then each row through its own adapter's head. Rows of LoRA adapters get their
        low-rank deltas inside that same pass. Rows without a head (bare LoRA weights, or
        none) get their embedding."""
        loras = [a.lora if isinstance(a, LoadedAdapter) else a for a, _ in rows]
        emb = self.encoder.embed([item for _, item in rows],
                                 loras if any(w is not None for w in loras) else None)  # [rows, dim]
        out: list[torch.Tensor] = list(emb)
        keys = [id(a) if isinstance(a, LoadedAdapter) else None for a, _ in rows]
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
    def create_adapter(self, tenant: str, name: str, kind: str, examples: Any = None,
                       options: dict[str, Any] | None = None, *, label_descriptions: Any = None,
                       unlabeled: Any = None, changes: dict[str, Any] | None = None,
                       base: BaseVersion | None = None) -> dict[str, Any]:
        """Validate, then train now (the new version's record; kinds with a background recipe
        add the ``job`` that trains it) or queue a job (the pending record with its ``job``).
        Bad input raises a 4xx-mapped error before anything is trained, queued or stored.
        ``base``: an update's previous version, which the new one is checked against (and
        whose LoRA an ``auto`` update keeps) when it trains in the request."""
        validate_name(name)
        k = get_kind(kind)
        if k.tunes_backbone and not self.tunable:
            raise InvalidOptions(
                f"kind {k.name!r} tunes the backbone with LoRA, and this deployment's "
                f"{self.modality.name} backbone ({self.encoder.identity.name}) has no PyTorch "
                "weights to tune; use kind \"head\" (or \"auto\", which then trains a head)")
        self.store.check_room(tenant, name)  # before training: the limit is a 4xx at once
        request = build_request(k, examples, options, self.limits, label_descriptions, unlabeled)
        if base is not None:
            request = dataclasses.replace(request, base=base)
        payload = TrainPayload(kind=k.name, examples=list(examples or []),
                               options=dict(options or {}), label_descriptions=request.descriptions,
                               unlabeled=request.unlabeled, changes=changes,
                               previous=base.about if base is not None else None)
        if k.is_job(request):
            job = self.jobs.submit(k.job_kind, tenant, name, payload.model_dump(mode="json"))
            return {"name": name, "kind": k.name, "status": "training",
                    "labels": request.data.labels,
                    "options": request.options.stored(request.label_order), "job": job.public()}
        artifact = k.train(self.encoder, request)
        m = self.store.publish(tenant, name, artifact, payload.inputs(),
                               _finish_changes(changes, artifact))
        record = adapter_record(m)
        if k.background is not None and self.tunable and k.background.applies(request):
            background = payload.model_copy(update={"stage": "background",
                                                     "base_version": m.version})
            try:
                job = self.jobs.submit(k.job_kind, tenant, name, background.model_dump(mode="json"))
            except (Overloaded, Unavailable) as e:  # the version is published: say so rather
                # than answer 429 (queue full) or 503 (the job database is down)
                record["warnings"] = [*record["warnings"], "the stronger recipe was not queued "
                                      f"({e.message}); {m.ref} is served as it is"]
            else:
                record["job"] = job.public()
        return record

    async def acreate_adapter(self, tenant: str, name: str, kind: str, examples: Any = None,
                              options: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """``create_adapter`` off the event loop, within the bound on creates in flight
        (Overloaded with a spread Retry-After beyond it, before any work is queued)."""
        with self.creates.slot():
            return await asyncio.to_thread(self.create_adapter, tenant, name, kind, examples,
                                           options, **kw)

    async def aadd_examples(self, tenant: str, name: str, examples: Any = None,
                            **kw: Any) -> dict[str, Any]:
        """``add_examples`` off the event loop, within the same bound as creates."""
        with self.creates.slot():
            return await asyncio.to_thread(self.add_examples, tenant, name, examples, **kw)

    def add_examples(self, tenant: str, name: str, examples: Any = None, *,
                     label_descriptions: Any = None, unlabeled: Any = None,
                     kind: str | None = None, options: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
        """The next version of ``name``, trained on what its latest version was trained on
        plus these; same kind and options unless given (another kind keeps only the label
        order). Earlier versions stay servable."""
        validate_name(name)
        base = self.store.manifest(tenant, name)
        merged, changes = merge_inputs(self.store.inputs(tenant, name, base.version), examples,
                                       label_descriptions, unlabeled, self.limits,
                                       base.multi_label)
        changes = {"from_version": base.version, **changes,
                   "metric_before": _estimate(base.kind, base.metrics, base.ref)}
        if options is None:  # the same options; for another kind only the label order
            options = _carry_options(base, merged)
            if kind not in (None, base.kind):
                options = {k: v for k, v in options.items() if k == "labels"}
        previous = None
        if kind in (None, base.kind):  # the same kind: checked against the version it replaces
            about = PreviousVersion(ref=base.ref, version=base.version,
                                    examples=len(merged.examples) - changes["examples_added"],
                                    labels=list(base.labels), options=dict(base.options),
                                    lora=base.lora is not None)
            previous = BaseVersion(about, self.registry.get(tenant, name, base.version))
        return self.create_adapter(tenant, name, kind or base.kind, merged.examples, options,
                                   label_descriptions=merged.label_descriptions or None,
                                   unlabeled=merged.unlabeled or None, changes=changes,
                                   base=previous)

    def _run_job(self, job: Job) -> dict[str, Any]:
        """The executor of this process's job runner: train in a worker process, then publish
        (unless cancelled first). A cancelled, failed or interrupted job publishes nothing; a
        background candidate is published only when its kind accepts it over the version it
        started from, and never over a newer one."""
        p, rec = TrainPayload.read(job.id, job.payload), job.record
        # the worker embeds (head fitting) in the precision that serves, so a head is served
        # on the embeddings it was fitted on; autograd still runs on the fp32 weights
        dtype = self.encoder.dtype
        artifact = train_in_subprocess(
            job, request=p.training(), backbone_path=str(self.encoder.model_dir),
            limits=self.limits, tmp_dir=self.store.root / ".tmp", config=self.worker,
            dtype="bfloat16" if dtype == "bfloat16" else "float32")
        outcome: dict[str, Any] = {}
        if p.stage == "background":
            served = self.store.manifest(rec.tenant, rec.adapter)
            background = get_kind(p.kind).background
            assert background is not None
            if served.version != p.base_version:
                decision = Decision(False, f"a newer version ({served.ref}) was published while "
                                    "this one trained; it stays")
            else:
                decision = background.accept(served, artifact)
            outcome = {"decision": "promoted" if decision.promote else "kept",
                       "reason": decision.reason, "candidate_metrics": artifact.metrics}
            if not decision.promote:
                return {"adapter": served.ref, "version": served.version, **outcome}
            artifact.metrics["selection"] = {"decision": "promoted", "reason": decision.reason,
                                             "replaces": served.ref}
        elif p.previous is not None and (check := _update_check(artifact)) is not None and check.worse:
            artifact = self._keep_previous(rec.tenant, rec.adapter, artifact, p, check)
        job.begin_publish()
        m = self.store.publish(rec.tenant, rec.adapter, artifact, p.inputs(),
                               _finish_changes(p.changes, artifact))
        return {"adapter": m.ref, "version": m.version, "metrics": m.metrics,
                **{k: v for k, v in outcome.items() if k != "candidate_metrics"}}

    def _keep_previous(self, tenant: str, name: str, artifact: Artifact,
                       p: TrainPayload, check: UpdateCheck) -> Artifact:
        """A job's update that the check found worse: the replaced version's weights, unless
        that version was deleted meanwhile (then the update as trained, and a warning)."""
        assert p.previous is not None
        try:
            kept = self.registry.get(tenant, name, p.previous.version)
        except AdapterNotFound:
            artifact.warnings.append(f"the update check found this version worse than "
                                     f"{p.previous.ref}, which was deleted meanwhile; published "
                                     "as trained")
            return artifact
        return keep_previous_weights(artifact, kept, check, len(p.examples), p.previous.examples)

    # -- what to label next --------------------------------------------------------------------
    def suggest(self, tenant: str, ref: str, texts: Any, k: Any) -> dict[str, Any]:
        """The ``k`` texts whose labels would teach the adapter most (uncertain, and unlike
        each other), with its current prediction of each."""
        if not self.modality.in_words:
            raise InvalidRequest(f"suggest takes texts, and this deployment serves "
                                 f"{self.modality.article()} {self.modality.name} backbone (not "
                                 f"supported for {self.modality.name}s yet)")
        pool = validate_text_list(texts, "texts", self.limits.max_suggest_texts,
                                  "TAILOR_MAX_SUGGEST_TEXTS", self.limits, required=True)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidRequest(f"k must be a positive integer (how many texts to suggest), "
                                 f"got {shorten(k)}")
        adapter = self.resolve(tenant, ref)
        emb = self.encoder.embed(pool, [adapter.lora] * len(pool) if adapter.lora else None)
        probs = adapter.head.probabilities(emb)  # [texts, labels]
        picks = select_informative(probs.numpy(), emb.numpy(), min(k, len(pool)),
                                   multi_label=adapter.multi_label)
        return {"adapter": adapter.ref, "suggestions": [
            {"index": i, "text": pool[i], **_brief(format_prediction(adapter, probs[i]))}
            for i in picks]}

    def get_job(self, tenant: str, job_id: str) -> dict[str, Any]:
        return self.jobs.get(tenant, job_id).public()

    def cancel_job(self, tenant: str, job_id: str) -> dict[str, Any]:
        return self.jobs.cancel(tenant, job_id).public()

    def list_jobs(self, tenant: str, *, status: str | None = None, adapter: str | None = None,
                  limit: int = 20, after: str | None = None) -> dict[str, Any]:
        """One page of ``tenant``'s jobs, newest first, optionally only those in ``status``
        or creating ``adapter``. ``after``: the ``next`` cursor of the previous page (the id
        of its last job), so that jobs submitted meanwhile do not shift the pages."""
        if status is not None and status not in tuple(JobState):
            raise InvalidRequest(f"status {shorten(status)} is not a job state; use one of "
                                 f"{', '.join(JobState)}")
        if adapter is not None:
            validate_name(adapter)
        page, after = self.jobs.page(tenant, status=status, adapter=adapter, limit=limit,
                                     after=after)
        return {"jobs": [j.public() for j in page], "next": after}

    def wait_job(self, tenant: str, job_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Block until the job is finished (notebooks, tests)."""
        return self.jobs.wait(tenant, job_id, timeout).public()

    def training(self, tenant: str) -> list[dict[str, Any]]:
        """Adapters of ``tenant`` whose training job is queued or running (in any process
        sharing the store)."""
        if self._jobs is None:
            return []
        return [{"name": r.adapter, "kind": k.name if (k := kind_of_job(r.kind)) else r.kind,
                 "status": "training", "job": r.public()} for r in self._jobs.active(tenant)]

    def usage(self) -> dict[str, dict[str, Any]]:
        """Per tenant with adapters or jobs in the store: its adapters (versions, bytes), the
        bytes they take, and its jobs by state. Reads the whole store (an admin view)."""
        jobs = self._jobs.usage() if self._jobs is not None else {}
        out: dict[str, dict[str, Any]] = {}
        for tenant in sorted(set(self.store.tenants()) | set(jobs)):
            adapters = self.store.usage(tenant)
            out[tenant] = {"adapters": adapters,
                           "stored_bytes": sum(a["stored_bytes"] for a in adapters),
                           "jobs": jobs.get(tenant, {})}
        return out

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
        return self._predictions(tenant, adapter, probs)

    def embed(self, inputs: Any) -> dict[str, Any]:
        items = validate_inputs(inputs, self.limits)
        return _embeddings(self.run_rows([(None, t) for t in items]))

    async def apredict(self, tenant: str, ref: str, inputs: Any, *,
                       on_resolved: Callable[[str], None] | None = None) -> dict[str, Any]:
        """``on_resolved(name@version)``: told which version serves the request as soon as it
        is known, so that an error after that (429, a bug) is counted against it."""
        items = await self._aread(inputs)
        # the store lookup lists a folder (and may load files): never on the event loop
        adapter = await asyncio.to_thread(self.resolve, tenant, ref)
        if on_resolved is not None:
            on_resolved(adapter.ref)
        probs = await self.batcher.submit([(adapter, t) for t in items])
        return self._predictions(tenant, adapter, probs)

    def _predictions(self, tenant: str, adapter: LoadedAdapter,
                     probs: Sequence[torch.Tensor]) -> dict[str, Any]:
        out = [format_prediction(adapter, p) for p in probs]
        self.events.predictions(tenant, adapter.ref, [p["label"] for p in out])
        return {"adapter": adapter.ref, "predictions": out}

    async def _aread(self, inputs: Any) -> list[Any]:
        """``validate_inputs``; off the event loop when it decodes (images)."""
        if self.modality.cheap_to_read:  # e.g. microseconds per text
            return validate_inputs(inputs, self.limits)
        return await asyncio.to_thread(validate_inputs, inputs, self.limits)

    async def aembed(self, inputs: Any) -> dict[str, Any]:
        items = await self._aread(inputs)
        return _embeddings(await self.batcher.submit([(None, t) for t in items]))

    async def aembed_through(self, tenant: str, ref: str | None, texts: Any
                             ) -> tuple[list[torch.Tensor], list[int], str | None]:
        """Embeddings of ``texts`` through adapter ``ref`` of ``tenant`` (None: the backbone),
        the token count of each text as the backbone reads it (truncated, special tokens
        included) and the ``name@version`` that answered. A LoRA adapter's rows go through
        its weights in the shared batched forward, mixed with every other request's rows; a
        head-only adapter does not change the encoder, so its embeddings are the backbone's.
        Text backbones only (the OpenAI embeddings protocol takes text)."""
        if self.limits.modality != "text":
            raise InvalidRequest(f"embeddings by adapter name take texts, and this deployment "
                                 f"serves an {self.limits.modality} backbone; use POST /v1/embed")
        items = validate_inputs(texts, self.limits)
        adapter = None if ref is None else await asyncio.to_thread(self.resolve, tenant, ref)
        lora = adapter.lora if adapter is not None else None
        rows = await self.batcher.submit([(lora, t) for t in items])
        tokens = [len(ids) for ids in self.encoder.prepare(items)]
        return rows, tokens, adapter.ref if adapter is not None else None


def _estimate(kind: str, metrics: dict[str, Any], ref: str) -> dict[str, Any] | None:
    """{"name", "value"} of a version's honest quality estimate, as its kind reads its
    metrics; None when there is none (zero-shot, too few examples)."""
    found = get_kind(kind).metrics.read(metrics, ref).best_estimate()
    return None if found is None else found.model_dump()


def _update_check(artifact: Artifact) -> UpdateCheck | None:
    """The update check a job's artifact carries, as its kind reads its metrics."""
    return get_kind(artifact.kind).metrics.read(artifact.metrics, "the new version").update_check


def _finish_changes(changes: dict[str, Any] | None, artifact: Artifact) -> dict[str, Any] | None:
    """An update's changes, with the new version's estimate next to the old one's."""
    if changes is None:
        return None
    out = {**changes, "metric_after": _estimate(artifact.kind, artifact.metrics, "the new version")}
    for key in ("update_check", "weights_from"):  # the check against the replaced version
        if key in artifact.metrics:
            out[key] = artifact.metrics[key]
    return out


def _carry_options(base: Manifest, merged: Inputs) -> dict[str, Any]:
    """The latest version's options for its next version; a label order grows by the new
    labels (in order of appearance), which an update may add."""
    options = dict(base.options)
    if "labels" in options:
        seen = list(options["labels"])
        for ex in merged.examples:
            for lab in ([ex["label"]] if "label" in ex else ex.get("labels", [])):
                if isinstance(lab, str) and lab not in seen:
                    seen.append(lab)
        for lab in merged.label_descriptions:
            if lab not in seen:
                seen.append(lab)
        options["labels"] = seen
    return options


def _brief(prediction: dict[str, Any]) -> dict[str, Any]:
    return {"label": prediction["label"], "score": prediction["score"]}


def _embeddings(rows: Sequence[torch.Tensor]) -> dict[str, Any]:
    vecs = [[float(v) for v in r.tolist()] for r in rows]
    return {"embeddings": vecs, "dim": len(vecs[0]) if vecs else 0}
