"""The training worker process: one job of a job kind, then exit. Started by
``adapters.training.worker.train_in_subprocess`` as ``python -m adapters.worker_main``; the
protocol (a ``WorkerSpec`` in, ``WorkerReply`` lines out, tensors in a safetensors file) is
described there, the pipes in ``adapters/child.py``.

It sits beside the facade, above the kinds: it looks the job's kind up in the registry and
runs that kind's trainer on its own copy of the backbone.
"""
from __future__ import annotations

import dataclasses
import os

from .child import receive, send
from .training.payloads import WorkerError, WorkerReply, WorkerSpec


def main() -> None:
    spec = receive(WorkerSpec)
    if spec.worker.nice:
        os.nice(spec.worker.nice)
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(spec.worker.threads)
    from .encoders import open_encoder
    from .errors import TailorError
    from .kinds import build_request, get_kind
    from .kinds.base import BaseVersion

    job = spec.job
    try:
        kind = get_kind(job.kind)
        request = build_request(kind, job.examples, job.options, spec.limits,
                                job.label_descriptions, job.unlabeled)
        if job.previous is not None:  # an update: checked against the version it replaces
            request = dataclasses.replace(request, base=BaseVersion(job.previous))
        train = kind.background.train if job.stage == "background" and kind.background \
            else kind.train
        encoder = open_encoder(spec.backbone_path, dtype=spec.dtype)
        art = train(encoder, request, progress=lambda s, t, loss: send(
            WorkerReply(progress=(s, t, loss))))
        save_file({k: v.contiguous() for k, v in art.tensors.items()}, spec.out)
        send(WorkerReply(done=art.meta()))
    except TailorError as e:
        send(WorkerReply(error=WorkerError(code=e.code, message=e.message, status=e.status)))
    except Exception as e:  # noqa: BLE001 - reported to the job, the server logs it
        send(WorkerReply(error=WorkerError(code="training_failed",
                                           message=f"training failed: {e!r}", status=500)))


if __name__ == "__main__":
    main()
