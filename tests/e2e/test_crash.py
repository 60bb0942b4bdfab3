"""Crash safety with real processes: `kill -9` the whole `bentoml serve` process group (the
supervisor and its worker) at a random moment while clients create adapters, restart on the
same store, and check what a client relies on:

- every version whose creation was acknowledged (201) is there, with the same record, and
  predicts exactly as it did when it was acknowledged;
- nothing partial is visible: every listed version loads and predicts; leftovers of the
  interrupted writes are never adapters, and the store's sweep removes them;
- version numbers never go backwards and are never handed out twice;
- a LoRA job that was training (one attempt allowed here: TAILOR_JOB_ATTEMPTS=1) reads
  `failed` with code `interrupted` and the reason once the server restarts, nothing of it is
  published, and its training worker process does not outlive the server. (With attempts
  left the job runs again: tests/e2e/test_trainer_pool_e2e.py.)
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server

pytestmark = pytest.mark.e2e

KILL_CYCLES = 4  # head creates only; then one more cycle with a LoRA job training
CLIENTS = 4
KILL_AFTER_S = (1.5, 4.0)  # the kill lands at a random moment in this window of creates
NAMES = ["alpha", "beta", "gamma"]
POOL = [
    ("the match ended with a late goal", "sport"),
    ("the striker scored twice in the final", "sport"),
    ("the team won the championship", "sport"),
    ("the coach praised the defenders", "sport"),
    ("a record crowd watched the derby", "sport"),
    ("shares fell after the earnings report", "business"),
    ("the central bank raised interest rates", "business"),
    ("the company announced a merger", "business"),
    ("investors sold their bonds", "business"),
    ("the retailer cut its profit forecast", "business"),
    ("the new phone has a faster chip", "tech"),
    ("the update fixes a security flaw in the browser", "tech"),
    ("engineers trained a larger language model", "tech"),
    ("the laptop battery lasts all day", "tech"),
]
PROBES = ["a goal in the last minute won the cup", "the stock market dropped sharply",
          "the software release patched the bug"]
SCORE_TOL = 1e-5


@dataclass
class Ledger:
    """What clients were told: acknowledged versions and their predictions."""

    acks: dict[tuple[str, int], dict] = field(default_factory=dict)  # (name, version) -> 201 body
    preds: dict[tuple[str, int], list[dict]] = field(default_factory=dict)
    floor: dict[str, int] = field(default_factory=dict)  # highest version known before this cycle
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _examples(rng: random.Random) -> tuple[list[dict], dict]:
    """A random subset (>= 3 per label) and options: each version has weights of its own."""
    by_label: dict[str, list[str]] = {}
    for text, label in POOL:
        by_label.setdefault(label, []).append(text)
    examples = [{"text": t, "label": lab} for lab, texts in by_label.items()
                for t in rng.sample(texts, rng.randint(3, len(texts)))]
    return examples, {"c": rng.choice([0.5, 1.0, 2.0, 4.0]), "seed": rng.randrange(1000)}


def _creator(url: str, ledger: Ledger, seed: int, stop: threading.Event) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=60) as c:
        while not stop.is_set():
            name = rng.choice(NAMES)
            examples, options = _examples(rng)
            try:
                r = c.post("/v1/adapters", json={"name": name, "examples": examples,
                                                 "options": options})
                if r.status_code != 201:
                    with ledger.lock:
                        ledger.errors.append(f"create {name}: {r.status_code} {r.text[:300]}")
                    continue
                body = r.json()
                key = (name, body["version"])
                with ledger.lock:
                    if key in ledger.acks:
                        ledger.errors.append(f"{name}@{body['version']} acknowledged twice")
                    if body["version"] <= ledger.floor.get(name, 0):
                        ledger.errors.append(f"{name}@{body['version']} handed out again after a "
                                             f"restart (versions up to {ledger.floor[name]} existed)")
                    ledger.acks[key] = body
                p = c.post("/v1/predict", json={"adapter": body["ref"], "inputs": PROBES})
                if p.status_code != 200:
                    with ledger.lock:
                        ledger.errors.append(f"predict {body['ref']}: {p.status_code} {p.text[:300]}")
                    continue
                with ledger.lock:
                    ledger.preds[key] = p.json()["predictions"]
            except httpx.TransportError:  # the server was killed: outcome unknown, not acked
                return


def _procs_of(store: Path) -> list[int]:
    """Live processes started for this store: the supervisor, its worker(s), training workers
    (all carry TAILOR_STORE_PATH in their environment)."""
    mark = f"TAILOR_STORE_PATH={store}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if mark not in (d / "environ").read_bytes().split(b"\0"):
                continue
            state = (d / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            pids.append(int(d.name))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _no_nulls(x):
    """The 201 body leaves out null fields, GET keeps them: compare without them."""
    if isinstance(x, dict):
        return {k: _no_nulls(v) for k, v in x.items() if v is not None}
    return [_no_nulls(v) for v in x] if isinstance(x, list) else x


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    alive = [p for p in pids if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _alive(p)]
    return alive


def _kill_all(server: Server) -> None:
    """kill -9 every process of the server at once, as a node failure or a container kill
    would: the supervisor's process group and its worker's, which BentoML (circus) starts in
    a session of its own."""
    groups = {server.proc.pid} | {os.getpgid(p) for p in _procs_of(server.store) if _alive(p)}
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.proc.wait()
    server.log.close()


def _create_until_killed(server: Server, ledger: Ledger, rng: random.Random, cycle: int) -> None:
    stop = threading.Event()
    threads = [threading.Thread(target=_creator, args=(server.url, ledger, cycle * 100 + i, stop),
                                daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    # The window opens at the cycle's first acknowledged create, not at the clients' start:
    # on a busy machine (parallel test workers, a loaded CI host) the first creates took
    # longer than the whole window, the kill landed before anything was acknowledged, and
    # the cycle proved nothing.
    acked = len(ledger.acks)
    deadline = time.monotonic() + 120
    while len(ledger.acks) == acked and time.monotonic() < deadline and not ledger.errors:
        time.sleep(0.05)
    assert len(ledger.acks) > acked, f"no create acknowledged within 120 s: {ledger.errors[:3]}"
    time.sleep(rng.uniform(*KILL_AFTER_S))
    _kill_all(server)
    stop.set()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a client hung after the kill"


def _check_acknowledged(c: httpx.Client, ledger: Ledger) -> set[tuple[str, int]]:
    """Every acknowledged version is there, with the same record, and predicts exactly as it
    did when it was acknowledged (also used by tests/e2e/test_s3_replicas_e2e.py). Returns
    the versions it saw predict."""
    predicted = set()
    for (name, v), ack in sorted(ledger.acks.items()):
        r = c.get(f"/v1/adapters/{name}@{v}")
        assert r.status_code == 200, f"acknowledged {name}@{v} lost: {r.status_code} {r.text}"
        rec = r.json()
        rec.pop("versions")
        assert _no_nulls(rec) == _no_nulls(ack), f"{name}@{v} is not what was acknowledged"
        if (name, v) in ledger.preds:
            p = c.post("/v1/predict", json={"adapter": f"{name}@{v}", "inputs": PROBES})
            assert p.status_code == 200, p.text
            for before, after in zip(ledger.preds[(name, v)], p.json()["predictions"]):
                assert after["label"] == before["label"], f"{name}@{v} predicts differently"
                for lab, s in before["scores"].items():
                    assert after["scores"][lab] == pytest.approx(s, abs=SCORE_TOL)
            predicted.add((name, v))
    return predicted


def _check_visible(c: httpx.Client, name: str, predicted: set = frozenset()) -> list[int]:
    """Every visible version of ``name`` is whole: it loads, verifies and predicts (those in
    ``predicted`` were just seen predicting by ``_check_acknowledged``: not asked twice)."""
    versions = c.get(f"/v1/adapters/{name}").json()["versions"]
    assert versions == sorted(set(versions))
    for v in versions:
        if (name, v) in predicted:
            continue
        r = c.post("/v1/predict", json={"adapter": f"{name}@{v}", "inputs": PROBES[:1]})
        assert r.status_code == 200, f"{name}@{v} is visible but unusable: {r.text}"
    return versions


def _verify(url: str, store: Path, ledger: Ledger) -> int:
    """After a restart: everything acknowledged is there and unchanged; nothing partial is
    visible. Raises the floor of each name to the highest version now on disk."""
    from adapters.encoders import BackboneIdentity
    from adapters.storage import AdapterStore

    with httpx.Client(base_url=url, timeout=60) as c:
        predicted = _check_acknowledged(c, ledger)
        listed = c.get("/v1/adapters")
        assert listed.status_code == 200, listed.text
        names = [a["name"] for a in listed.json()["adapters"]]
        assert set(names) <= set(NAMES), f"something that is not an adapter is listed: {names}"
        for name in names:
            versions = _check_visible(c, name, predicted)
            ledger.floor[name] = max(versions[-1], ledger.floor.get(name, 0))
    # the same on disk, without the server: every version folder is a whole, verified version
    some = next(iter(ledger.acks.values()))
    disk = AdapterStore(store, BackboneIdentity(**some["backbone"]))
    for name in disk.names("default"):
        for v in disk.versions("default", name):
            disk.load("default", name, v)
    return sum(len(disk.versions("default", n)) for n in disk.names("default"))


def _lora_examples() -> list[dict]:
    from benchmarks.datasets import trec_coarse

    train, _ = trec_coarse().few_shot(8, seed=1, max_test=0)  # 48 examples: 3 steps an epoch
    return train


def test_kill_9_loses_nothing_acknowledged(tmp_path):
    t0 = time.monotonic()
    store = tmp_path / "store"
    rng = random.Random(6)
    ledger = Ledger()
    env: dict[str, str] = {"TAILOR_JOB_ATTEMPTS": "1"}
    server = Server(store, env).start()
    leftovers = 0
    try:
        for cycle in range(KILL_CYCLES):
            _create_until_killed(server, ledger, rng, cycle)
            assert _wait_gone(_procs_of(store), 5) == [], "a server process survived kill -9"
            leftovers += len(os.listdir(store / ".tmp"))
            server = Server(store, env).start()
            _verify(server.url, store, ledger)

        # one more cycle with a LoRA job training: head creates go on meanwhile
        with httpx.Client(base_url=server.url, timeout=60) as c:
            r = c.post("/v1/adapters", json={"name": "lora-job", "kind": "lora",
                                             "examples": _lora_examples(),
                                             "options": {"epochs": 4}})
            assert r.status_code == 202, r.text
            job = r.json()["job"]
            stop = threading.Event()
            threads = [threading.Thread(target=_creator, args=(server.url, ledger, 900 + i, stop),
                                        daemon=True) for i in range(2)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 120
            while True:
                rec = c.get(f"/v1/jobs/{job['id']}").json()
                if rec["status"] == "running" and 1 <= rec["progress"]["step"] < rec["progress"]["total"]:
                    break
                assert rec["status"] in ("queued", "running") and time.monotonic() < deadline, rec
                time.sleep(0.1)
        # the training worker, and the fork server it was forked from (TAILOR_TRAIN_WARM,
        # adapters/forkserver.py: its command line names the worker module it preloads)
        trainers = [p for p in _procs_of(store) if "adapters.worker_main" in _cmdline(p)]
        assert len(trainers) == 2, [(p, _cmdline(p)) for p in _procs_of(store)]
        # The server dies without a word to the training worker (kill -9 of everything but
        # it, as when the OOM killer picks the server): the worker must not train on as an
        # orphan, holding a core and memory.
        t_kill = time.monotonic()
        for pid in [server.proc.pid] + [p for p in _procs_of(store) if p not in trainers]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.proc.wait()
        server.log.close()
        stop.set()
        for t in threads:
            t.join(30)
        orphans = _wait_gone(trainers, within_s=10)
        trainer_s = time.monotonic() - t_kill
        for pid in orphans:  # clean up before failing
            os.kill(pid, signal.SIGKILL)
        assert orphans == [], "the LoRA training worker outlived the server by > 10 s"
        assert _wait_gone(_procs_of(store), 5) == []
        leftovers += len(os.listdir(store / ".tmp"))

        server = Server(store, env).start()
        versions = _verify(server.url, store, ledger)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            rec = c.get(f"/v1/jobs/{job['id']}").json()
            assert rec["status"] == "failed" and rec["error"]["code"] == "interrupted", rec
            assert "No attempts left" in rec["error"]["message"] and rec["attempts"] == 1, rec
            assert c.get("/v1/adapters/lora-job").status_code == 404
            # and new versions keep counting up from where they were
            examples, options = _examples(rng)
            for name in NAMES:
                r = c.post("/v1/adapters", json={"name": name, "examples": examples, "options": options})
                assert r.status_code == 201, r.text
                assert r.json()["version"] > ledger.floor.get(name, 0)
        # kill -9 of the supervisor's process group only: its worker, in a session of its
        # own, must not serve on as an orphan (holding the port, the model, jobs)
        worker = [p for p in _procs_of(store) if p != server.proc.pid]
        assert worker, "no worker process found"
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        server.log.close()
        t_kill = time.monotonic()
        orphans = _wait_gone(worker, within_s=15)
        orphan_s = time.monotonic() - t_kill
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
        assert orphans == [], "the BentoML worker outlived its supervisor by > 15 s"
    finally:
        for pid in _procs_of(store):  # whatever a failed assertion left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.stop(signal.SIGKILL)

    # the sweep removes every leftover of the interrupted writes; versions stay untouched
    from adapters.encoders import BackboneIdentity
    from adapters.storage import AdapterStore

    disk = AdapterStore(store, BackboneIdentity(**next(iter(ledger.acks.values()))["backbone"]))
    disk.sweep(older_than_s=0)
    assert os.listdir(store / ".tmp") == [] and os.listdir(store / ".trash") == []
    for name in disk.names("default"):
        stray = [e for e in os.listdir(store / "tenants" / "default" / name)
                 if e not in (".seq", ".lock") and not e.startswith("v")]
        assert stray == [], f"{name}: leftovers beside the versions: {stray}"
    after = sum(len(disk.versions("default", n)) for n in disk.names("default"))
    assert after == versions + len(NAMES)

    assert ledger.errors == [], ledger.errors[:5]
    assert len(ledger.acks) >= 5 * KILL_CYCLES, f"too few creates to mean much: {len(ledger.acks)}"
    print(f"\ncrash test: {KILL_CYCLES + 1} kill -9 + restart cycles (the last with a LoRA job), "
          f"{len(ledger.acks)} acknowledged versions ({len(ledger.preds)} with predictions), "
          f"{leftovers} interrupted-write leftovers seen in .tmp, training worker gone "
          f"{trainer_s:.1f} s after its server, server worker {orphan_s:.1f} s after its "
          f"supervisor, "
          f"{time.monotonic() - t0:.0f} s")
