"""The modality registry (adapters/modalities/): what validation, the engine and the API ask
instead of comparing modality names, and the recipe "Adding a modality"
(docs/architecture.md) followed in-process: a toy modality (4-number vectors) is one reader,
one encoder and one ``register_modality`` call, and then creates, predicts, embeds and is
refused where it cannot go, through the engine like text and images."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adapters import AdapterStore, Limits, Tailor
from adapters.encoders import BackboneIdentity, Encoder
from adapters.errors import InvalidExamples, InvalidRequest
from adapters.modalities import MODALITIES, Modality, get_modality, register_modality
from adapters.validation import validate_examples, validate_inputs


# -- the toy modality: a reader, an encoder, one registration ----------------------------------
def read_vectors(items, where, limits, *, examples=False):
    """``{"vector": [4 numbers]}`` objects (examples also carry a label) -> lists of floats."""
    out = []
    for i, item in enumerate(items):
        v = item.get("vector") if isinstance(item, dict) else None
        if not (isinstance(v, list) and len(v) == 4 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            raise InvalidExamples(f"{where}[{i}] must be an object {{\"vector\": [4 numbers]}}")
        out.append([float(x) for x in v])
    return out


class VectorEncoder:
    """A toy backbone: the embedding of a vector is the vector, L2-normalised."""

    modality = "vector"
    dim = 4
    max_batch_rows = 64
    max_length = None
    dtype = "float32"
    model_dir = Path("toy-vectors")
    identity = BackboneIdentity("toy-vectors", "0" * 64)

    def prepare(self, items, max_length=None):
        return [torch.tensor(v, dtype=torch.float32) for v in items]

    def embed_prepared(self, rows, loras=None):
        rows = list(rows)
        return F.normalize(torch.stack(rows), dim=1) if rows else torch.empty(0, self.dim)

    def embed(self, items, loras=None):
        return self.embed_prepared(self.prepare(items), loras)

    def pytorch(self):
        return self

    def warm_up(self):
        pass

    def describe(self):
        return "toy vectors, no forward at all"


@pytest.fixture
def vectors(tmp_path):
    """The toy modality registered for one test (and removed after it), and an engine on it."""
    register_modality(Modality("vector", "vector", read_vectors, '{"vector": [4 numbers]} objects'))
    t = Tailor(VectorEncoder(), AdapterStore(tmp_path / "store", VectorEncoder.identity))
    try:
        yield t
    finally:
        t.close()
        del MODALITIES["vector"]


def axis(j: int, wobble: float) -> dict:
    v = [wobble] * 4
    v[j] = 1.0
    return {"vector": v}


EXAMPLES = [{**axis(j, w), "label": "xyzw"[j]} for j in (0, 1) for w in (0.0, 0.1, 0.2)]


def test_a_toy_modality_creates_predicts_and_embeds_through_the_engine(vectors):
    assert isinstance(vectors.encoder, Encoder)  # everything it offers is on the protocol
    rec = vectors.create_adapter("default", "axes", "head", EXAMPLES)
    assert rec["labels"] == ["x", "y"] and rec["metrics"]["examples"] == 6
    got = vectors.predict("default", "axes", [axis(0, 0.05), axis(1, 0.05)])
    assert [p["label"] for p in got["predictions"]] == ["x", "y"]
    # the service's path: read in a thread (not cheap_to_read), rows through the batcher
    got = asyncio.run(vectors.apredict("default", "axes", [axis(1, 0.3)]))
    assert got["predictions"][0]["label"] == "y"
    emb = vectors.embed([{"vector": [3, 4, 0, 0]}])["embeddings"]
    assert emb == [[0.6000000238418579, 0.800000011920929, 0.0, 0.0]]


@pytest.mark.parametrize("call,error,words", [
    (lambda t: t.create_adapter("default", "d", "head", EXAMPLES,
                                label_descriptions={"x": "along x", "y": "along y"}),
     InvalidExamples, ["a vector backbone", "labeled vector examples only"]),
    (lambda t: t.create_adapter("default", "u", "head", EXAMPLES, unlabeled=["some text"]),
     InvalidExamples, ["a vector backbone"]),
    (lambda t: t.suggest("default", "axes", ["a text"], 1),
     InvalidRequest, ["suggest takes texts", "a vector backbone"]),
    (lambda t: t.predict("default", "axes", ["a text"]),
     InvalidExamples, ['inputs[0] must be an object {"vector": [4 numbers]}']),
    (lambda t: t.create_adapter("default", "i", "head", [*EXAMPLES, {"image": "iVBO", "label": "x"}]),
     InvalidExamples, ["examples[6] is an image, but this deployment serves a vector backbone",
                       'send {"vector": [4 numbers]} objects']),
], ids=["descriptions", "unlabeled", "suggest", "a text input", "an image example"])
def test_what_a_toy_modality_cannot_take_is_refused_by_its_capabilities(vectors, call, error, words):
    """Not in words (``in_words=False``): no label descriptions, unlabeled texts or suggest
    pools; another modality's item is named as that modality."""
    vectors.create_adapter("default", "axes", "head", EXAMPLES)
    with pytest.raises(error) as e:
        call(vectors)
    for w in words:
        assert w in e.value.message, e.value.message


def test_a_toy_item_sent_to_a_text_deployment_is_named(vectors):
    with pytest.raises(InvalidExamples, match="examples\\[0\\] is a vector, but this deployment "
                                              "serves a text backbone: send strings"):
        validate_examples([{"vector": [1, 0, 0, 0], "label": "a"}, {"text": "b", "label": "b"}],
                          Limits())


@pytest.mark.parametrize("name,field,in_words,cheap", [
    ("text", "text", True, True),
    ("image", "image", False, False),
])
def test_the_registered_modalities_and_their_capabilities(name, field, in_words, cheap):
    m = get_modality(name)
    assert (m.field, m.in_words, m.cheap_to_read) == (field, in_words, cheap)


def test_the_registry_refuses_twins_and_names_the_unknown():
    with pytest.raises(ValueError, match="registered twice"):
        register_modality(Modality("text", "text", read_vectors, "texts"))
    with pytest.raises(ValueError, match="no reader for 'smell' items"):
        get_modality("smell")
    with pytest.raises(ValueError, match="no reader for 'smell'"):
        Tailor(type("Nose", (VectorEncoder,), {"modality": "smell"})(), None)


def test_text_inputs_are_read_by_the_text_reader():
    assert validate_inputs(["a", "b"], Limits()) == ["a", "b"]
    with pytest.raises(InvalidExamples, match="inputs\\[1\\] is empty"):
        validate_inputs(["a", " \u200b"], Limits())


HTTP_SCRIPT = r"""
import json, sys, tempfile
from pathlib import Path
from adapters.modalities import Modality, register_modality
from tests.unit.adapters.test_modalities import EXAMPLES, VectorEncoder, axis, read_vectors

# the registration line, before the service's schemas are built (as a module in
# adapters/modalities/ imported by its __init__ would be)
register_modality(Modality("vector", "vector", read_vectors, '{"vector": [4 numbers]} objects',
                           value=list[float], example_doc="the example vector (toy backbones)",
                           item_doc="4 numbers"))
from starlette.testclient import TestClient
from adapters import AdapterStore, Tailor
from service.api import create_app

app = create_app()
doc = app.openapi()["components"]["schemas"]
store = Path(tempfile.mkdtemp()) / "store"
app.state.tailor = Tailor(VectorEncoder(), AdapterStore(store, VectorEncoder.identity))
with TestClient(app, raise_server_exceptions=False) as client:
    created = client.post("/adapters", json={"name": "axes", "examples": EXAMPLES})
    predicted = client.post("/predict", json={"adapter": "axes", "inputs": [axis(1, 0.05)]})
    refused = client.post("/predict", json={"adapter": "axes", "inputs": [{"vector": [1, 2]}]})
print(json.dumps({"item": doc.get("VectorItem"), "example": list(doc["Example"]["properties"]),
                  "created": created.status_code, "predicted": predicted.json(),
                  "refused": [refused.status_code, refused.json()]}))
"""


def test_a_registered_modality_reaches_the_http_contract():
    """The item and example models of the API are built from the registry: a modality
    registered before the service starts is in the OpenAPI document and served over HTTP
    (in a child process: this one's schemas were built without the toy)."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", HTTP_SCRIPT], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["item"]["properties"]["vector"]["type"] == "array", got["item"]
    assert got["example"] == ["text", "image", "audio", "vector", "label", "labels"]
    assert got["created"] == 201
    assert got["predicted"]["predictions"][0]["label"] == "y"
    assert got["refused"][0] == 422 and "4 numbers" in got["refused"][1]["error"]["message"]
