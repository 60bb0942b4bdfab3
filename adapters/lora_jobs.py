"""LoRA adapters as background jobs: validate now, train in a worker process, publish once.

``LoraJobs.submit`` checks the examples and options in the request (so bad input is a 4xx
right away, not a failed job), queues a job and returns the pending adapter record with
its job. The job trains in ``lora_worker`` and publishes a new immutable version only if it
was not cancelled meanwhile: a cancelled, failed or interrupted job publishes nothing, and
the adapter is servable the moment the job succeeds (the registry reads the store).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .config import Limits, LoraOptions, validate_name
from .errors import InvalidExamples
from .jobs import Cancelled, Job, JobManager, JobRecord
from .lora_worker import train_in_subprocess
from .store import AdapterStore
from .trainer import validate_examples


class LoraJobs:
    def __init__(self, store: AdapterStore, jobs: JobManager, *, backbone_path: str | None,
                 limits: Limits = Limits(), threads: int = 1, nice: int = 10):
        self.store = store
        self.jobs = jobs
        self.backbone_path = backbone_path
        self.limits = limits
        self.threads = threads
        self.nice = nice

    def submit(self, tenant: str, name: str, examples: Any,
               options: dict[str, Any] | None) -> dict[str, Any]:
        validate_name(name)
        self.store.check_room(tenant, name)  # publish checks again when the job is done
        opts_raw = dict(options or {})
        label_order = opts_raw.pop("labels", None)
        opts = LoraOptions.parse(opts_raw)
        data = validate_examples(examples, self.limits, label_order)
        if data.multi_label:
            raise InvalidExamples("LoRA adapters are single-label for now; use kind \"head\" for "
                                  "examples with `labels` lists")
        examples, options = list(examples), dict(options or {})

        def work(job: Job) -> dict[str, Any]:
            tensors, meta = train_in_subprocess(
                job, examples=examples, options=options, backbone_path=self.backbone_path,
                limits=dataclasses.asdict(self.limits), tmp_dir=self.store.root / ".tmp",
                threads=self.threads, nice=self.nice)
            with self.jobs.lock:  # a cancel either lands before this or sees "succeeded"
                if job.cancel_requested.is_set():
                    raise Cancelled("cancelled before publishing")
                m = self.store.publish(tenant, name, kind="lora", tensors=tensors, meta=meta,
                                       examples=examples)  # parity sample for exports
            return {"adapter": f"{name}@{m['version']}", "version": m["version"],
                    "metrics": m.get("metrics", {})}

        job = self.jobs.submit("lora_train", tenant, name, work)
        return {"name": name, "kind": "lora", "status": "training", "labels": data.labels,
                "options": {**opts.model_dump(mode="json"),
                            **({"labels": label_order} if label_order else {})},
                "job": job.public()}

    def get(self, tenant: str, job_id: str) -> JobRecord:
        return self.jobs.get(tenant, job_id)

    def cancel(self, tenant: str, job_id: str) -> JobRecord:
        return self.jobs.cancel(tenant, job_id)

    def training(self, tenant: str) -> list[dict[str, Any]]:
        """Adapters of ``tenant`` whose training job is queued or running in this process."""
        return [{"name": r.adapter, "kind": "lora", "status": "training", "job": r.public()}
                for r in self.jobs.active(tenant)]
