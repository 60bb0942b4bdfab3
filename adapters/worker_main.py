"""The training worker process: one job of a job kind, then exit. Started by
``adapters.training.worker.train_in_subprocess`` as ``python -m adapters.worker_main``; the
protocol (JSON lines over pipes, tensors in a safetensors file) is described there.

It sits beside the facade, above the kinds: it looks the job's kind up in the registry and
runs that kind's trainer on its own copy of the backbone.
"""
from __future__ import annotations

import json
import os
import sys
import threading


def _send(msg: dict) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _exit_when_parent_dies() -> None:
    sys.stdin.read()  # blocks until the server closes the pipe or dies
    os._exit(3)


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    threading.Thread(target=_exit_when_parent_dies, daemon=True).start()
    if spec.get("nice"):
        os.nice(int(spec["nice"]))
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(max(1, int(spec.get("threads") or 1)))
    from .encoders import open_encoder
    from .errors import TailorError
    from .kinds import build_request, get_kind
    from .validation import Limits

    try:
        kind = get_kind(spec["kind"])
        request = build_request(kind, spec["examples"], spec["options"], Limits(**spec["limits"]),
                                spec.get("label_descriptions"), spec.get("unlabeled"))
        train = kind.background.train if spec.get("stage") == "background" and kind.background \
            else kind.train
        encoder = open_encoder(spec.get("backbone_path"))
        art = train(encoder, request, progress=lambda s, t, loss: _send({"progress": [s, t, loss]}))
        save_file({k: v.contiguous() for k, v in art.tensors.items()}, spec["out"])
        _send({"done": art.meta()})
    except TailorError as e:
        _send({"error": {"code": e.code, "message": e.message, "status": e.status}})
    except Exception as e:  # noqa: BLE001 - reported to the job, the server logs it
        _send({"error": {"code": "training_failed", "message": f"training failed: {e!r}",
                         "status": 500}})


if __name__ == "__main__":
    main()
