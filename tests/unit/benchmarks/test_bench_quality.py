"""benchmarks/bench_quality.py's plumbing, tiny: one set (SMS spam: 2 labels, short texts),
one seed, a few rows, two in-request methods and one round of suggest (no LoRA job, no
SetFit). Guards that the benchmark still drives the engine's create / predict / suggest /
add_examples and that its report reads its own log."""
from __future__ import annotations

import numpy as np

from benchmarks import bench_quality as bq


def test_frozen_methods_and_active_learning_run_through_the_engine(tmp_path, monkeypatch):
    log = tmp_path / "runs.jsonl"
    small = bq.make_task("sms_spam", 0, max_test=24, n_unlabeled=30)
    monkeypatch.setattr(bq, "make_task", lambda name, seed, max_test=24: small)
    b = bq.Bench(tmp_path / "store", cache_dir=tmp_path / "cache")
    try:
        frozen = [m for m in bq.service_methods() if m.key in ("head", "zero_shot")]
        bq.run_methods(b, ["sms_spam"], [0], frozen, log, max_test=24)
        bq.run_methods(b, ["sms_spam"], [0], frozen, log, max_test=24)  # resumes: no repeats
        curve = bq.al_curve(b, small, "suggest", "al", rounds=1, k=3)
        versions = b.engine.store.versions(bq.TENANT, "al")
    finally:
        b.engine.close()

    rows = bq.read_log(log)
    assert sorted(r["row"] for r in rows) == sorted([bq.HEAD, bq.ZERO])
    assert all(0 <= r["accuracy"] <= 1 and r["test_rows"] == 24 for r in rows)
    assert len(curve) == 2 and len(versions) == 2  # the suggested texts became version 2
    # the zero-shot head has no examples: its predictions come from the descriptions alone
    zs = next(r for r in rows if r["row"] == bq.ZERO)
    assert zs["accuracy"] > 1 / len(small.labels)
    md = bq.markdown(rows + [{"type": "active", "set": "sms_spam", "seed": 0,
                              "strategy": st, "curve": list(np.full(5, 0.5))}
                             for st in ("random", "suggest")])
    assert "zero-shot (descriptions only) vs examples only" in md and "| zero-shot >= 8-shot" in md
