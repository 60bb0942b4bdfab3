"""End to end: the clients users already have (the official `openai` client and LangChain's
`OpenAIEmbeddings`) against a real `bentoml serve`, with API keys for two tenants. The
backbone's embeddings equal /v1/embed's; a LoRA adapter's equal its own forward (loaded
from the server's store in this process) and differ from the backbone's; another tenant's
adapter answers as missing."""
from __future__ import annotations

import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings

from adapters import AdapterStore
from adapters.kinds import load_adapter
from benchmarks.datasets import trec_coarse
from service.client import Client
from tests.conftest import Server

pytestmark = pytest.mark.e2e

KEY_A, KEY_B = "acme-key-0123456789", "other-key-0123456789"
TEXTS = ["What is the capital of France?", "How many miles are in a kilometre?",
         "Who wrote Hamlet?", "Why is the sky blue?"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("openai-e2e")
    s = Server(root / "store", env={"TAILOR_API_KEYS": f"{KEY_A} acme,{KEY_B} other"}).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def lora(server):
    """A LoRA adapter `q` of tenant acme, trained by the server (default recipe)."""
    train, _ = trec_coarse().few_shot(4, seed=0, max_test=10)
    with Client(server.url, KEY_A) as c:
        pending = c.create_adapter("q", train, kind="lora")
        job = c.wait(pending.job, timeout=300)
    assert job.status == "succeeded", job
    return job.result["adapter"]


def cos(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_openai_client_backbone_and_lora_embeddings(server, lora, backbone):
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY_A, max_retries=0)
    name = backbone.identity.name
    assert [m.id for m in oa.models.list()] == [name, "q"]
    ref = np.array(Client(server.url, KEY_A).embed(TEXTS).embeddings)

    got = oa.embeddings.create(model=name, input=TEXTS)  # the client asks for base64
    assert got.model == name and got.usage.prompt_tokens == sum(len(i) for i in backbone.prepare(TEXTS))
    assert cos([d.embedding for d in got.data], ref).min() >= 0.9999
    floats = oa.embeddings.create(model=name, input=TEXTS[0], encoding_format="float")
    assert cos([floats.data[0].embedding], ref[:1]).min() >= 0.9999

    tuned = oa.embeddings.create(model=lora, input=TEXTS)
    assert tuned.model == lora
    store = AdapterStore(server.store, backbone.identity)
    adapter = load_adapter(store.load("acme", "q", int(lora.split("@")[1])))
    own = backbone.embed(TEXTS, [adapter.lora] * len(TEXTS)).numpy()
    tuned_vecs = [d.embedding for d in tuned.data]
    assert cos(tuned_vecs, own).min() >= 0.9999
    assert cos(tuned_vecs, ref).max() < 0.999  # the LoRA moved every text
    by_name = oa.embeddings.create(model="q", input=TEXTS)
    assert cos([d.embedding for d in by_name.data], own).min() >= 0.9999


def test_other_tenant_and_unknown_models_are_not_found(server, lora):
    other = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY_B, max_retries=0)
    for model in ("q", lora, "text-embedding-3-small"):
        with pytest.raises(openai.NotFoundError) as e:
            other.embeddings.create(model=model, input="hello")
        assert e.value.code == "model_not_found" and e.value.body["param"] == "model"
    assert "q" not in [m.id for m in other.models.list()]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong-key-0123456789",
                      max_retries=0).embeddings.create(model="q", input="x")


def test_langchain_embeds_documents_and_a_query(server, lora, backbone):
    lc = OpenAIEmbeddings(model=lora, base_url=server.url + "/v1", api_key=KEY_A,
                          check_embedding_ctx_length=False, tiktoken_enabled=False, max_retries=0)
    docs = lc.embed_documents(TEXTS)
    query = lc.embed_query(TEXTS[2])
    direct = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY_A).embeddings.create(
        model=lora, input=TEXTS, encoding_format="float")
    assert cos(docs, [d.embedding for d in direct.data]).min() >= 0.9999
    assert cos([query], [docs[2]]).min() >= 0.9999
    assert len(docs) == 4 and len(query) == backbone.dim
