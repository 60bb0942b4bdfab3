"""End to end (issue 20): the DEFAULT runtime (``TAILOR_RUNTIME=auto``, whatever it chooses
on this machine after its batch-invariance admission) answers a text the same alone and
inside concurrent mixed batches of other adapters' and other lengths' rows, over HTTP."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from export.sample import HELDOUT_TEXTS
from tests.conftest import TLS, Server, seed_onnx_cache

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def default_server(tmp_path_factory, onnx_graphs):
    # the default, not the tests' pinned fp32: the first start measures the candidates.
    # The queue-wait limit is raised because the subject here is invariance, not admission:
    # on a CI machine busy with the other worker's tests, the burst below (120 rows, 40 of
    # them long) was estimated at 30 s and some embeds got 429 overloaded (CI, 2026-12-07).
    # The limit itself is tested by test_load.py.
    # The store holds the run's build of the onnx graphs (tests/conftest.py), as a
    # store that another replica started on does: the measuring child opens them instead of
    # building them again (the build is tests/unit/export's subject; the container smoke
    # test measures on an empty store).
    store = tmp_path_factory.mktemp("inv") / "store"
    seed_onnx_cache(onnx_graphs, store / ".onnx")
    srv = Server(store, env={"TAILOR_RUNTIME": "auto", "TAILOR_MAX_QUEUE_WAIT_S": "600"})
    yield srv.start(timeout=900)
    srv.stop()


def test_default_runtime_answers_alone_and_in_mixed_batches_alike(default_server):
    srv = default_server
    assert "runtime auto chose" in srv.tail(200_000)
    texts = list(HELDOUT_TEXTS)
    labels = ("news", "question", "other")
    with srv.client() as c:
        for i in range(3):
            ex = [{"text": t, "label": labels[j % 3]} for j, t in enumerate(texts[i:i + 12])]
            r = c.post("/v1/adapters", json={"name": f"a{i}", "examples": ex})
            assert r.status_code == 201, r.text
    jobs = [(f"a{i % 3}", [texts[i]] + ([texts[-1 - i] * 3] if i % 2 else [])) for i in range(40)]

    def call(job):
        with httpx.Client(base_url=srv.url, timeout=300, verify=TLS) as c:
            r = c.post("/v1/predict", json={"adapter": job[0], "inputs": job[1]})
            e = c.post("/v1/embed", json={"inputs": job[1]})
            return r.status_code, r.json(), e.json()

    with ThreadPoolExecutor(len(jobs)) as pool:  # all in flight together: shared batches
        together = list(pool.map(call, jobs))
    assert all(s == 200 for s, *_ in together), [b for s, b, _ in together if s != 200][:3]
    worst = 0.0
    with srv.client() as c:
        for (name, inputs), (_, body, emb) in zip(jobs, together):
            solo = c.post("/v1/predict", json={"adapter": name, "inputs": inputs[:1]}).json()
            solo_emb = c.post("/v1/embed", json={"inputs": inputs[:1]}).json()["embeddings"][0]
            got, want = body["predictions"][0], solo["predictions"][0]
            assert got["label"] == want["label"]
            worst = max([worst] + [abs(got["scores"][k] - want["scores"][k]) for k in want["scores"]]
                        + [abs(a - b) for a, b in zip(emb["embeddings"][0], solo_emb)])
    assert worst <= 1e-4, worst


def test_default_runtime_export_reproduces_the_service(default_server, tmp_path):
    """An adapter's bundle exported as the default asks (no ``quantize``: the served
    runtime's precision, int8-rows where auto chose onnx-int8-rows, fp32 where it chose an fp32
    runtime), run on onnxruntime with its own tokenizer, gives the probabilities the default
    runtime serves, within 1e-4 (on bf16 they differed by 3.8e-3; on onnx-int8-rows an fp32
    bundle differs by ~1e-2, its int8-rows bundle by 2e-7).

    The adapter is a real few-shot head (TREC, 8 questions per label): its probabilities
    move with the embedding. An adapter fitted on arbitrary labels answers nearly the same
    probabilities for every text, and passed this check on a runtime whose exports differ
    (torch-bf16-rows, issue 20c). This one fails there: served with
    TAILOR_RUNTIME=torch-bf16-rows it measured 2.6e-3 (2026-12-07)."""
    import io
    import zipfile

    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from benchmarks.datasets import trec_coarse

    train, test = trec_coarse().few_shot(8, seed=0, max_test=30)
    texts = [t for t, _ in test]
    with default_server.client() as c:
        r = c.post("/v1/adapters", json={"name": "trec", "examples": train})
        assert r.status_code == 201, r.text
        r = c.post("/v1/adapters/trec/export", json={})
        assert r.status_code == 200, r.text[:400]
        chosen = default_server.tail(200_000).split("runtime auto chose ", 1)[1].split(" ", 1)[0]
        assert r.headers["content-disposition"].endswith(
            '-int8rows.onnx.zip"' if chosen == "onnx-int8-rows" else 'v1.onnx.zip"'), (chosen, r.headers)
        served = [c.post("/v1/predict", json={"adapter": "trec", "inputs": [t]}).json()["predictions"][0]
                  for t in texts]
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)
    labels = __import__("json").loads((tmp_path / "labels.json").read_text())
    enc = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode_batch(texts)
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (probs,) = sess.run(["probabilities"], {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)})
    worst = max(abs(float(probs[i][j]) - p["scores"][label])
                for i, p in enumerate(served) for j, label in enumerate(labels))
    assert worst <= 1e-4, worst
    assert [labels[i] for i in probs.argmax(1)] == [p["label"] for p in served]
