"""Training in a separate worker process, so that training cannot starve inference: the
parent-side driver. The worker's own side is ``adapters/worker_main.py``.

The server's inference threads keep all their cores; the worker runs at a lower CPU
priority (``nice``) with a fixed number of torch threads, loads its own copy of the
backbone (the served one is never touched) and talks to the server over pipes:

- stdin: one JSON line, the ``WorkerSpec`` (the job's ``TrainInputs``, backbone path,
  limits, output file, threads, priority, precision), then it is held open; EOF (the server
  died) makes the worker exit at once (``adapters/child.py``, shared with the runtime
  measurement).
- stdout: ``WorkerReply`` lines: ``{"progress": [step, total, loss]}``, then ``{"done": meta}``
  or ``{"error": {"code", "message", "status"}}``.
- the trained tensors go to a safetensors file the server named (never pickle).

Warm by default (``WorkerConfig.warm``, TAILOR_TRAIN_WARM): the worker is forked from a
fork server (``adapters/forkserver.py``, a child of this process started at the first job)
that imported ``PRELOAD`` once, so a job's worker is ready in ~0.25 s and ~0.26 CPU s
instead of ~3.8 s and ~4.0 CPU s of imports (benchmarks/research/warm_worker.py). The
protocol, the priority, the exit statuses and the stderr tail are the same; the fork
server holds ~400 MiB while idle, and dies with this process (it kills its children). If
it cannot be started, the job's worker starts cold.

Cancelling kills the process: nothing was published, because only the server publishes,
after the worker said "done". A worker killed from outside (the OOM killer) raises
``interrupted``, which the job runner retries while attempts are left; one stopped with
SIGTERM raises ``stopped``: BentoML's supervisor stops a worker's children that way when the
server shuts down (circus ``stop_children``), and the job is handed back unspent.
"""
from __future__ import annotations

import logging
import signal
import threading
import uuid
from pathlib import Path
from typing import Literal

from ..child import Child, spawn, spawn_warm
from ..errors import TailorError
from ..storage import Artifact
from ..validation import Limits
from .jobs import Cancelled, Job
from .payloads import TrainInputs, WorkerConfig, WorkerReply, WorkerSpec

__all__ = ["TrainingFailed", "WorkerConfig", "train_in_subprocess"]


log = logging.getLogger("tailor")

WORKER = "adapters.worker_main"
# What the fork server imports: what a job imports, so that a forked job imports nothing.
# The default text backbone is Tailor's own BERT (adapters/encoders/bert.py), which needs
# torch, safetensors and tokenizers only. Training needs more, which transformers' import
# used to pull in: torch's optimizers load torch._dynamo (and sympy) at their first step,
# and the heads are fitted with scikit-learn (fitting.py, recipes.py, auto's folds) on
# scipy; without them here every forked job imported them itself (~1.8 s more per job,
# benchmarks/RESULTS.md "The text backbone without transformers"). Any other backbone loads
# through transformers, which loads its models lazily, so the BERT modules (and what they
# pull in: dynamo, distributed tensors) are named, or every child would still import them;
# an image or audio backbone's model module is imported by its child.
PRELOAD = ("torch", "torch.optim", "torch._dynamo", "safetensors.torch", "tokenizers",
           "sklearn.linear_model", "sklearn.model_selection", "sklearn.cluster", "sklearn.metrics",
           "adapters.encoders", "adapters.encoders.text", "adapters.encoders.bert", "adapters.kinds",
           WORKER)
TRANSFORMERS = ("transformers", "transformers.modeling_utils",
                "transformers.models.bert.modeling_bert", "transformers.models.auto.modeling_auto",
                "transformers.models.auto.tokenization_auto")


def preload(backbone_path: str | None) -> tuple[str, ...]:
    """The fork server's imports for a job on ``backbone_path`` (None: the embedded default)."""
    from ..encoders import bert

    if backbone_path is None or bert.native(Path(backbone_path)):
        return PRELOAD
    return TRANSFORMERS + PRELOAD


def start_worker(spec: WorkerSpec) -> Child:
    """The job's worker process: forked warm, or a fresh interpreter (``spec.worker.warm``,
    or when the fork server cannot start)."""
    if spec.worker.warm:
        try:
            return spawn_warm(WORKER, spec, preload(spec.backbone_path))
        except OSError as e:
            log.warning("training worker: the fork server did not start (%s); starting the "
                        "worker cold", e)
    return spawn(WORKER, spec)


class TrainingFailed(TailorError):
    status = 422
    code = "training_failed"


def train_in_subprocess(job: Job, *, request: TrainInputs, backbone_path: str | None,
                        limits: Limits, tmp_dir: Path, config: WorkerConfig = WorkerConfig(),
                        dtype: Literal["float32", "bfloat16"] = "float32") -> Artifact:
    """Train ``request`` in a worker process. ``dtype``: the serving precision of the
    worker's backbone forwards (``TextEncoder``'s), fp32 weights for autograd either way.
    Returns the artifact; raises Cancelled or TailorError."""
    from safetensors.torch import load_file

    tmp_dir.mkdir(parents=True, exist_ok=True)
    out = tmp_dir / f"train-{uuid.uuid4().hex}.safetensors"
    spec = WorkerSpec(job=request, backbone_path=backbone_path, limits=limits, out=str(out),
                      worker=config, dtype=dtype)
    try:
        with start_worker(spec) as child:
            threading.Thread(target=_kill_on_cancel, args=(job, child), daemon=True).start()
            for reply in child.replies(WorkerReply):
                if reply.progress is not None:
                    job.report(*reply.progress)
                elif reply.done is not None:
                    return Artifact.from_meta(reply.done, load_file(str(out)))
                elif reply.error is not None:
                    err = TrainingFailed(reply.error.message, code=reply.error.code)
                    err.status = reply.error.status
                    raise err
            if job.cancel_requested.is_set():
                raise Cancelled("cancelled")
            raise _exited(child)
    finally:
        out.unlink(missing_ok=True)


def _exited(child: Child) -> Exception:
    """Why a worker ended without saying done or error."""
    code = child.wait()
    if code == -signal.SIGTERM:  # BentoML stops a worker's children with it
        return TrainingFailed("the training worker was stopped with the server (SIGTERM); "
                              "the job goes back to the queue", code="stopped")
    if code < 0:  # killed by a signal: the OOM killer, an operator
        return TrainingFailed(f"the training worker process was killed (signal {-code}"
                              f"{', probably out of memory' if code == -9 else ''}); "
                              "nothing was published", code="interrupted")
    return RuntimeError(f"the training worker exited with {code}: {child.stderr(last=2000)}")


def _kill_on_cancel(job: Job, child: Child) -> None:
    while child.running:
        if job.cancel_requested.wait(0.2):
            child.kill()
            return
