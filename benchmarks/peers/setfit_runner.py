"""Run SetFit's default few-shot recipe as a side-by-side peer (issue 11).

Runs in SetFit's own virtual environment (its pins clash with the project's), never imports
the project. Reads a JSON job, writes a JSON answer:

    /work/venvs/setfit/bin/python benchmarks/peers/setfit_runner.py job.json out.json

job:    {"model_path": "<local sentence-transformers folder>", "seed": 0, "threads": 1,
         "train": [{"text", "label"}], "test": ["text", ...], "arguments": {...}}
answer: {"predictions": ["label", ...], "train_seconds": float, "train_cpu_seconds": float,
         "predict_seconds": float,
         "versions": {...}, "arguments": {...}}

``arguments`` (optional) override setfit.TrainingArguments; empty = SetFit's defaults
(1 epoch of contrastive pairs with oversampling, batch 16, body lr 2e-5, then a
LogisticRegression head); only the checkpoint saving is turned off. Training time covers ``Trainer.train()`` only (model loading is
excluded, as it is for Tailor, whose backbone is already loaded).
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time


def main(job_path: str, out_path: str) -> None:
    job = json.loads(open(job_path).read())
    import torch

    torch.set_num_threads(int(job.get("threads", 1)))
    import setfit
    import transformers
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    seed = int(job.get("seed", 0))
    train = Dataset.from_dict({"text": [r["text"] for r in job["train"]],
                               "label": [r["label"] for r in job["train"]]})
    model = SetFitModel.from_pretrained(job["model_path"], local_files_only=True)
    # Bookkeeping only, not the recipe: no checkpoint written into the working directory
    # (by default SetFit saves the whole model at the end of training, inside the timed call).
    out_dir = tempfile.mkdtemp(prefix="setfit-")
    args = TrainingArguments(seed=seed, output_dir=out_dir, save_strategy="no",
                             **job.get("arguments", {}))
    trainer = Trainer(model=model, args=args, train_dataset=train)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    t1, c1 = time.perf_counter(), time.process_time()
    preds = model.predict(job["test"], batch_size=64, show_progress_bar=False)
    t2 = time.perf_counter()
    preds = [p if isinstance(p, str) else (p.item() if hasattr(p, "item") else p) for p in preds]
    out = {"predictions": [str(p) for p in preds], "train_seconds": round(t1 - t0, 3),
           "train_cpu_seconds": round(c1 - c0, 3),
           "predict_seconds": round(t2 - t1, 3),
           "versions": {"setfit": setfit.__version__, "transformers": transformers.__version__,
                        "torch": torch.__version__, "threads": torch.get_num_threads()},
           "arguments": job.get("arguments", {})}
    with open(out_path, "w") as f:
        json.dump(out, f)
    shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
