"""The typed hand-offs of a training job (adapters/training/payloads.py, states.py,
kinds/metrics.py, child.py): what a job carries, what a worker gets and says, what a
version's metrics mean, all checked where they are read, with errors that name the field."""
from __future__ import annotations

import json
import time
from typing import get_args

import pytest
from pydantic import ValidationError

from adapters.child import spawn, spawn_warm
from adapters.errors import CorruptAdapter
from adapters.kinds import KINDS, get_kind, kind_of_job
from adapters.training.payloads import (InvalidJob, TrainPayload, WorkerConfig, WorkerReply,
                                        WorkerSpec)
from adapters.states import ACTIVE, FINISHED, JobState
from adapters.validation import Limits
from tests.echo_child import Reply, Spec

EXAMPLES = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]


def test_a_payload_written_by_the_previous_version_still_reads():
    """Jobs queued before an upgrade: the dict the create path wrote until now."""
    old = {"stage": "background", "kind": "auto", "examples": EXAMPLES, "options": {"epochs": 1},
           "label_descriptions": {}, "unlabeled": [], "changes": None, "base_version": 3}
    p = TrainPayload.read("j1", json.loads(json.dumps(old)))
    assert p.stage == "background" and p.base_version == 3 and p.kind == "auto"
    assert p.training().model_dump() == {**{k: old[k] for k in (
        "kind", "stage", "examples", "options", "label_descriptions", "unlabeled")},
        "previous": None}  # not an update the check could know about: nothing to check
    assert p.inputs().examples == EXAMPLES


def test_an_update_hands_the_replaced_version_to_the_worker():
    """What the job's update check needs of the version it replaces (training/monotone.py)."""
    previous = {"ref": "q@2", "version": 2, "examples": 1, "labels": ["x", "y"],
                "options": {"epochs": 1}, "lora": True}
    p = TrainPayload.read("j1", {"kind": "lora", "examples": EXAMPLES, "previous": previous})
    assert p.training().previous is not None and p.training().previous.model_dump() == previous
    with pytest.raises(InvalidJob, match="previous.examples"):
        TrainPayload.read("j1", {"kind": "lora", "previous": {**previous, "examples": -1}})


@pytest.mark.parametrize("payload, named", [
    ({"examples": []}, "kind: Field required"),
    ({"kind": "lora", "stage": "later"}, "stage: Input should be 'train' or 'background'"),
    ({"kind": "lora", "stage": "background"}, "base_version is given for stage 'background'"),
    ({"kind": "lora", "base_version": 2}, "base_version is given for stage 'background'"),
    ({"kind": "lora", "examples": "many"}, "examples: Input should be a valid list"),
    ({"kind": "lora", "unlabeled": [1]}, "unlabeled.0: Input should be a valid string"),
    ({"kind": "lora", "priority": 9}, "priority: Extra inputs are not permitted"),
    ("not an object", "payload: Input should be a valid dictionary"),
])
def test_a_bad_payload_is_an_invalid_job_naming_the_field(payload, named):
    with pytest.raises(InvalidJob) as e:
        TrainPayload.read("j1", payload)
    assert e.value.code == "invalid_job" and 400 <= e.value.status < 500
    assert named in e.value.message and "job j1" in e.value.message, e.value.message


def test_payloads_and_specs_are_frozen():
    p = TrainPayload(kind="lora")
    with pytest.raises(ValidationError):
        p.kind = "head"  # type: ignore[misc]


def test_a_worker_spec_round_trips_and_refuses_what_the_worker_cannot_run():
    spec = WorkerSpec(job=TrainPayload(kind="lora", examples=EXAMPLES).training(),
                      backbone_path=None, limits=Limits(max_examples=10), out="/tmp/x.safetensors",
                      worker=WorkerConfig(threads=2, nice=5), dtype="bfloat16")
    back = WorkerSpec.model_validate_json(spec.model_dump_json())
    assert back == spec and back.limits.max_examples == 10
    for bad in ({"dtype": "float16"}, {"worker": {"threads": 0}}, {"worker": {"nice": 20}}):
        with pytest.raises(ValidationError):
            WorkerSpec.model_validate({**json.loads(spec.model_dump_json()), **bad})


@pytest.mark.parametrize("line, ok", [
    ('{"progress": [3, 10, 0.5]}', True), ('{"progress": [3, 10, null]}', True),
    ('{"done": {"kind": "lora"}}', True),
    ('{"error": {"code": "x", "message": "m", "status": 413}}', True),
    ('{"progress": [3, 10, 0.5], "done": {}}', False),  # two at once
    ("{}", False), ('{"error": {"code": "x", "message": "m", "status": 200}}', False),
])
def test_a_worker_reply_is_exactly_one_thing(line, ok):
    if ok:
        WorkerReply.model_validate_json(line)
    else:
        with pytest.raises(ValidationError):
            WorkerReply.model_validate_json(line)


def test_job_states_are_one_enum():
    assert [s.value for s in JobState] == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert set(ACTIVE) | set(FINISHED) == set(JobState) and not set(ACTIVE) & set(FINISHED)
    assert all(s.finished for s in FINISHED) and not any(s.finished for s in ACTIVE)
    assert JobState("queued") == "queued" and json.dumps(JobState.FAILED) == '"failed"'


def test_the_http_schema_and_the_metrics_spell_job_states_from_the_enum():
    from service.metrics import ACTIVE_JOB_STATES, JOB_STATES
    from service.schemas import JobRecord

    assert get_args(JobRecord.model_fields["status"].annotation) == tuple(s.value for s in JobState)
    assert tuple(JOB_STATES) == tuple(JobState) and tuple(ACTIVE_JOB_STATES) == ACTIVE


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_names_its_jobs_and_is_found_by_them(kind):
    k = get_kind(kind)
    assert k.job_kind == f"{kind}_train" and kind_of_job(k.job_kind) is k
    assert kind_of_job("nothing_train") is None


# -- training metrics --------------------------------------------------------------------------
BASE = {"examples": 8, "per_label": {"a": 4, "b": 4}}


@pytest.mark.parametrize("kind, metrics, estimate", [
    ("head", {**BASE, "cv_accuracy": 0.75, "cv_folds": 4, "calibration_scale": 2.0}, ("cv_accuracy", 0.75)),
    ("head", {**BASE, "cv_f1_micro": 0.5, "cv_folds": 4}, ("cv_f1_micro", 0.5)),
    ("head", dict(BASE), None),  # zero-shot or too few examples: no estimate
    ("lora", {**BASE, "train_loss": 0.1, "train_seconds": 3.0, "cv_accuracy_head_only": 0.6,
              "cv_accuracy_tuned": 0.9}, ("cv_accuracy_head_only", 0.6)),
    ("auto", {**BASE, "recipe": "head", "cv_accuracy": 0.7}, ("cv_accuracy", 0.7)),
    ("auto", {**BASE, "recipe": "LoRA", "estimate": 0.8, "estimate_head": 0.7, "estimate_folds": 2,
              "selection": {"decision": "promoted"}}, ("estimate", 0.8)),
])
def test_each_kind_reads_its_own_estimate(kind, metrics, estimate):
    found = get_kind(kind).metrics.read(metrics).best_estimate()
    assert (found.name, found.value) == estimate if estimate else found is None


def test_a_trainer_cannot_misspell_a_metric_but_a_reader_skips_unknown_ones():
    head = get_kind("head").metrics
    with pytest.raises(ValidationError, match="cv_acuracy"):
        head(**BASE, cv_acuracy=0.5)
    assert head.read({**BASE, "written_by_a_newer_version": 1}).examples == 8
    assert "cv_accuracy" not in head(**BASE).stored()  # not measured: not stored as null


def test_unreadable_stored_metrics_are_a_corrupt_adapter_naming_it():
    with pytest.raises(CorruptAdapter, match="news@2"):
        get_kind("lora").metrics.read({**BASE, "train_seconds": "soon", "train_loss": 1}, "news@2")


# -- the child process helper: a fresh interpreter, or forked by a warm fork server ------------
@pytest.fixture(params=["cold", "warm"])
def start(request):
    if request.param == "cold":
        return spawn
    return lambda module, spec: spawn_warm(module, spec, ["pydantic", "adapters.child"])


def test_a_child_gets_its_spec_and_replies_skipping_foreign_lines(start):
    with start("tests.echo_child", Spec(words=["one", "two"])) as child:
        got = [r.word for r in child.replies(Reply)]
        assert child.wait(60) == 0
        assert got == ["one", "two"] and "to stderr" in child.stderr()


def test_a_child_exits_when_its_parent_closes_the_pipe(start):
    with start("tests.echo_child", Spec(words=["x"], hang=True)) as child:
        next(child.replies(Reply))
        child.close_stdin()  # what the parent's death does
        assert child.wait(60) == 3


def test_a_child_refuses_a_bad_spec_with_the_reason_on_stderr(start):
    with start("tests.echo_child", {"words": "not a list"}) as child:
        assert child.wait(60) != 0
        assert "words" in child.stderr() and "Input should be a valid" in child.stderr()


def test_leaving_the_block_kills_a_running_child(start):
    with start("tests.echo_child", Spec(words=[], hang=True)) as child:
        time.sleep(0.2)
        assert child.running
    assert not child.running and child.wait() == -9


def test_exit_codes_and_tracebacks_come_back(start):
    with start("tests.echo_child", Spec(words=[], exit_code=7)) as child:
        assert child.wait(60) == 7
    with start("tests.echo_child", Spec(words=[], crash=True)) as child:
        assert child.wait(60) == 1 and "RuntimeError: a crash in the child" in child.stderr()


def test_warm_children_share_one_fork_server_and_outlive_none_of_it():
    """Forked children of one preload list come from one server; when it dies (the OOM
    killer), its children are killed with it and reported -9, and the next call starts a
    new server."""
    import os
    import signal

    from adapters import child as child_mod

    preload = ["pydantic", "adapters.child", "tests.echo_child"]
    a = spawn_warm("tests.echo_child", Spec(words=["a"], hang=True), preload)
    b = spawn_warm("tests.echo_child", Spec(words=["b"], hang=True), preload)
    server = child_mod._SERVERS[tuple(preload)]
    assert a._server is b._server is server and a.pid != b.pid
    assert [r.word for r in (next(a.replies(Reply)), next(b.replies(Reply)))] == ["a", "b"]
    for pid in (a.pid, b.pid):  # children of the fork server, not of this process
        stat = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
        assert int(stat[1]) == server.proc.pid
    os.kill(server.proc.pid, signal.SIGKILL)
    assert a.wait(30) == -9 and b.wait(30) == -9
    deadline = time.monotonic() + 10  # not left running as orphans
    while any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().rpartition(")")[2]
              .split()[0] != "Z" for p in (a.pid, b.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert time.monotonic() < deadline, "a forked child outlived its fork server"
    a.close(), b.close()
    with spawn_warm("tests.echo_child", Spec(words=["c"]), preload) as c:
        assert [r.word for r in c.replies(Reply)] == ["c"] and c.wait(60) == 0
        assert c._server is not server
        assert c.pid not in c._server._exits and not c.running  # a trainer forks thousands


def test_a_worker_starts_cold_when_the_fork_server_cannot(monkeypatch, caplog):
    """E.g. a platform without SOCK_SEQPACKET: the job still runs, in a fresh interpreter."""
    import logging

    from adapters.training import worker

    started = []

    def no_server(*a, **k):
        raise OSError("no fork server here")

    monkeypatch.setattr(worker, "spawn_warm", no_server)
    monkeypatch.setattr(worker, "spawn", lambda module, spec: started.append(module) or "cold")
    spec = WorkerSpec(job=TrainPayload(kind="lora", examples=EXAMPLES).training(),
                      backbone_path=None, limits=Limits(), out="/tmp/x.safetensors")
    with caplog.at_level(logging.WARNING, logger="tailor"):
        assert worker.start_worker(spec) == "cold"
    assert started == ["adapters.worker_main"] and "starting the worker cold" in caplog.text
    assert worker.start_worker(spec.model_copy(update={"worker": WorkerConfig(warm=False)})) == "cold"


def test_a_job_whose_payload_does_not_parse_fails_with_why_and_publishes_nothing(engine):
    rec = engine.jobs.submit("lora_train", "default", "x", {"examples": [], "stage": "train"})
    done = engine.wait_job("default", rec.id, timeout=120)
    assert done["status"] == "failed" and done["error"]["code"] == "invalid_job", done
    assert "kind: Field required" in done["error"]["message"]
    assert engine.list_adapters("default") == []


def test_a_forked_job_imports_nothing_heavy_the_fork_server_did_not():
    """The fork server's PRELOAD holds what a job needs (adapters/training/worker.py): a LoRA
    job and a head fit, run after importing only PRELOAD, load no heavy module of their own
    (torch's optimizers load dynamo at their first step, the heads scikit-learn and scipy:
    ~1.8 s more per forked job when they were missing)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = """
import importlib, json, sys
from adapters.training.worker import PRELOAD
for m in PRELOAD:
    importlib.import_module(m)
before = set(sys.modules)
from adapters.encoders import open_encoder
from adapters.kinds import build_request, get_kind
from adapters.validation import Limits
words = ["goal", "match", "shares", "bank", "phone", "chip"]
examples = [{"text": f"{w} news item {i}", "label": w[0]} for i in range(3) for w in words]
enc = open_encoder()
for name, opts in (("lora", {"epochs": 1}), ("head", {})):
    kind = get_kind(name)
    kind.train(enc, build_request(kind, examples, opts, Limits()), progress=lambda *a: None)
heavy = ("scipy", "sklearn", "sympy", "mpmath", "transformers", "torch._dynamo", "torch.fx")
print(json.dumps(sorted({m for m in set(sys.modules) - before if m.startswith(heavy)})[:20]))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
