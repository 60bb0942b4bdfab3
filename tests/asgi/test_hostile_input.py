"""Hostile input, hand-written: bytes that are not UTF-8 or not JSON, bodies that are huge or
nested 100k deep, path traversal and odd names on every route that takes one, Unicode edge
cases, NaN/Infinity and huge numbers, wrong types. Each must answer a clear 4xx with the
error envelope, never a 500, and leave the store (and everything beside it) unchanged.

The cases go through the ASGI app with the real backbone (like tests/asgi/test_api.py); a few
go through a real `bentoml serve` too, to show that its HTTP stack and worker survive them
(tests/e2e/test_hostile_input_e2e.py).
"""
from __future__ import annotations

import json
import unicodedata

import httpx
import pytest
from starlette.testclient import TestClient

from adapters import AdapterStore, Limits, Tailor
from adapters.training.jobs import JobManager
from service.api import create_app
from tests.conftest import snapshot

LIMITS = Limits(max_inputs=8, max_chars=2000, max_examples=60, max_labels=6, max_label_chars=20)
MAX_BODY = 1_000_000  # room for 100k nested arrays (200 kB) to reach the JSON parser

SPORT = ["the striker scored twice in the cup final", "the keeper saved a late penalty",
         "the team won the league after a tense match", "the runner broke the world record"]
FOOD = ["slow cooked beef stew with red wine", "a recipe for lemon cake with fresh cream",
        "bake the bread until the crust is golden", "roast the vegetables with garlic and oil"]
EXAMPLES = [{"text": t, "label": "sport"} for t in SPORT] + [{"text": t, "label": "food"} for t in FOOD]


@pytest.fixture(scope="module")
def api(backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    store = root / "store"
    (root / "sentinel.txt").write_text("outside the store: traversal must never reach me")
    app = create_app(max_body_bytes=MAX_BODY)
    jobs = JobManager(store / "jobs", max_queued=1)
    engine = Tailor(backbone, AdapterStore(store, backbone.identity), limits=LIMITS, jobs=jobs)
    app.state.tailor = engine
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/adapters", json={"name": "news", "examples": EXAMPLES})
        assert r.status_code == 201, r.text
        yield client, root
    jobs.close()


def refused(r: httpx.Response, status: int | set[int], code: str | set[str] | None = None,
            fragment: str = "") -> dict:
    """A 4xx with exactly the error envelope {"error": {"code", "message"}}."""
    statuses = {status} if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    err = body["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] in ({code} if isinstance(code, str) else code), err
    assert fragment in err["message"], err
    return err


def send(client: TestClient, root, method: str, path: str, **kw) -> httpx.Response:
    """One request; the store and the files beside it must be unchanged after it. ``json=``
    is sent as ASCII JSON, so that lone surrogates travel as "\\ud800" escapes."""
    if "json" in kw:
        kw["content"], kw["headers"] = json.dumps(kw.pop("json")).encode(), JSON
    before = snapshot(root)
    r = client.request(method, path, **kw)
    assert snapshot(root) == before, f"{method} {path} changed files"
    return r


JSON = {"content-type": "application/json"}


# -- bytes that are not JSON, or not UTF-8 -------------------------------------------------------

RAW = [
    # (body, status, code, fragment of the message, test id)
    (b'{"adapter": "news", "inputs": ["caf\xe9"]}', 400, "invalid_json", "not UTF-8", "latin-1"),
    (b'{"adapter": "news", "inputs": ["\xc3\x28"]}', 400, "invalid_json", "not UTF-8", "bad-continuation"),
    (b'{"adapter": "news", "inputs": ["\xc0\xae\xc0\xae"]}', 400, "invalid_json", "not UTF-8", "overlong-dots"),
    (b"\xff\xfe\x00garbage", 400, "invalid_json", "", "utf16-bom"),
    (b"\x00\x01\x02\x03", 400, "invalid_json", "", "control-bytes"),
    (b"{", 400, "invalid_json", "", "truncated"),
    (b"{'adapter': 'news', 'inputs': ['a']}", 400, "invalid_json", "", "single-quotes"),
    (b'{"adapter": "news", "inputs": ["a"]} trailing', 400, "invalid_json", "", "trailing-garbage"),
    (b'{"adapter": "news", "inputs": ["a"],}', 400, "invalid_json", "", "trailing-comma"),
    (b"null", 422, "invalid_request", "", "null"),
    (b'"just a string"', 422, "invalid_request", "", "string"),
    (b"[]", 422, "invalid_request", "", "array"),
    (b"", 422, "invalid_request", "body: required", "empty"),
    # an integer beyond Python's 4300-digit conversion limit: ValueError, not JSONDecodeError
    (b'{"adapter": "news", "inputs": ["a"], "n": 1' + b"0" * 5000 + b"}", 400, "invalid_json",
     "not valid JSON", "5000-digit-int"),
    # JSON has no NaN/Infinity, but Python's json accepts them: they must still be refused
    (b'{"adapter": "news", "inputs": [NaN]}', 422, "invalid_request", "inputs.0", "NaN"),
    (b'{"adapter": Infinity, "inputs": ["a"]}', 422, "invalid_request", "adapter", "Infinity"),
]


# The export body is optional: an empty body means "the defaults", not bad JSON (see
# test_an_empty_export_body_means_the_defaults below), so it is left out there. (`null` was
# skipped there too, as optional; it is refused like everywhere else.)
EXPORT = "/adapters/news/export"
NOT_JSON = [pytest.param(route, *r[:4], id=f"{r[4]}-{route}")
            for r in RAW for route in ("/predict", "/embed", "/adapters", EXPORT)
            if not (route == EXPORT and r[0] == b"")]


@pytest.mark.parametrize("route,raw,status,code,fragment", NOT_JSON)
def test_bytes_that_are_not_json(api, route, raw, status, code, fragment):
    client, root = api
    r = send(client, root, "POST", route, content=raw, headers=JSON)
    if route != "/predict" and code == "invalid_request":
        code, fragment = "invalid_request", ""  # other routes name other fields
    refused(r, status, code, fragment)


def test_an_empty_export_body_means_the_defaults(api):
    """Accepted as "export with the defaults": the route goes on to find the adapter (an
    unknown one here, so no export runs: 404, not a 400/422 about the body)."""
    client, root = api
    refused(send(client, root, "POST", "/adapters/missing/export", content=b"", headers=JSON),
            404, "adapter_not_found")


def deep(n: int, open_: bytes = b"[", close: bytes = b"]", inner: bytes = b"") -> bytes:
    return open_ * n + inner + close * n


@pytest.mark.parametrize("body", [
    deep(100_000),
    deep(100_000, b'{"a":', b"}", b"1"),
    b'{"adapter": "news", "inputs": ' + deep(100_000, inner=b'"x"') + b"}",
    b'{"name": "x", "examples": [], "options": {"labels": ' + deep(100_000) + b"}}",
], ids=["arrays", "objects", "in-inputs", "in-options"])
@pytest.mark.parametrize("route", ["/predict", "/adapters", "/embed"])
def test_100k_nested_json_is_a_clean_400(api, route, body):
    """json.loads raises RecursionError: the worker must answer, not crash."""
    client, root = api
    r = send(client, root, "POST", route, content=body, headers=JSON)
    refused(r, 400, "invalid_json", "nested too deeply")
    assert client.get("/adapters/news").status_code == 200  # and it still serves


@pytest.mark.parametrize("body,code", [
    # deep, but shallow enough to parse: the domain must not recurse into it (e.g. a repr)
    ({"name": "x", "examples": EXAMPLES, "options": {"labels": json.loads(deep(400).decode())}}, "invalid_examples"),
    ({"name": "x", "kind": "lora", "examples": EXAMPLES, "options": {"labels": json.loads(deep(400).decode())}},
     "invalid_examples"),
    ({"name": "x", "kind": "lora", "examples": EXAMPLES, "options": {"labels": 5}}, "invalid_examples"),
    ({"name": "x", "examples": EXAMPLES, "options": {"c": json.loads(deep(400).decode())}}, "invalid_options"),
    ({"name": "x", "examples": [{"text": "a", "label": json.loads(deep(400).decode())}]}, "invalid_request"),
], ids=["head-labels", "lora-labels", "lora-labels-int", "c", "label"])
def test_deep_but_parseable_values_are_refused(api, body, code):
    client, root = api
    refused(send(client, root, "POST", "/adapters", json=body), 422, code)


def test_body_over_the_limit_is_413_with_or_without_content_length(api):
    client, root = api
    big = json.dumps({"adapter": "news", "inputs": ["word " * 1000] * 300}).encode()
    assert len(big) > MAX_BODY
    refused(send(client, root, "POST", "/predict", content=big, headers=JSON), 413, "too_large",
            f"over {MAX_BODY} bytes")

    def chunks():  # no Content-Length: the limit is counted while reading
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    refused(send(client, root, "POST", "/adapters", content=chunks(), headers=JSON), 413, "too_large",
            "TAILOR_MAX_BODY_BYTES")


# -- NaN, Infinity and huge numbers in options ----------------------------------------------------

NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e308", "-0.0", "0", "9" * 4000,
           "-" + "9" * 4000, "1.5", '"NaN"', '"Infinity"', '"1e400"', "null", "[]", "{}", '"x"']
VALID = {("seed", "0"), ("seed", "-0.0"), ("dropout", "0"), ("dropout", "-0.0"), ("c", "1.5"),
         ("temperature", "1.5"), ("alpha", "1.5")}


@pytest.mark.parametrize("option,kind", [("c", "head"), ("temperature", "head"), ("threshold", "head"),
                                         ("seed", "head"), ("cv_folds", "head"), ("alpha", "lora"),
                                         ("dropout", "lora"), ("learning_rate", "lora"), ("rank", "lora"),
                                         ("epochs", "lora")])
def test_nan_infinity_and_huge_numbers_in_options(api, option, kind):
    client, root = api
    examples = json.dumps(EXAMPLES)
    for raw in NUMBERS:
        if (option, raw) in VALID:
            continue
        body = (f'{{"name": "x", "kind": "{kind}", "examples": {examples}, '
                f'"options": {{"{option}": {raw}}}}}').encode()
        r = send(client, root, "POST", "/adapters", content=body, headers=JSON)
        refused(r, 422, "invalid_options", f"{option}: ")


@pytest.mark.parametrize("query", ["NaN", "inf", "-1", "0", "1.5", "1e3", "abc", "9" * 5000, ""])
def test_bad_version_query(api, query):
    client, root = api
    r = send(client, root, "DELETE", f"/adapters/news?version={query}")
    refused(r, {404, 422}, {"invalid_request", "adapter_not_found"})


# -- wrong types everywhere ------------------------------------------------------------------------

WRONG = [
    ("/adapters", {"name": 5, "examples": EXAMPLES}),
    ("/adapters", {"name": None, "examples": EXAMPLES}),
    ("/adapters", {"name": ["x"], "examples": EXAMPLES}),
    ("/adapters", {"name": {"a": 1}, "examples": EXAMPLES}),
    ("/adapters", {"name": "x", "kind": 1, "examples": EXAMPLES}),
    ("/adapters", {"name": "x", "kind": None, "examples": EXAMPLES}),
    ("/adapters", {"name": "x", "examples": {"text": "a", "label": "b"}}),
    ("/adapters", {"name": "x", "examples": "text,label"}),
    ("/adapters", {"name": "x", "examples": [1, 2]}),
    ("/adapters", {"name": "x", "examples": [None, None]}),
    ("/adapters", {"name": "x", "examples": [{"text": ["a"], "label": "p"}, EXAMPLES[-1]]}),
    ("/adapters", {"name": "x", "examples": [{"text": "a", "label": 5}, EXAMPLES[-1]]}),
    ("/adapters", {"name": "x", "examples": [{"text": "a", "label": True}, EXAMPLES[-1]]}),
    ("/adapters", {"name": "x", "examples": [{"text": "a", "labels": "p"}, {"text": "b", "labels": ["q"]}]}),
    ("/adapters", {"name": "x", "examples": [{"text": "a", "labels": [1]}, {"text": "b", "labels": ["q"]}]}),
    ("/adapters", {"name": "x", "examples": [{"text": "a", "labels": [None]}, {"text": "b", "labels": ["q"]}]}),
    ("/adapters", {"name": "x", "examples": [{"text": "a", "label": "p", "labels": ["p"]}, EXAMPLES[-1]]}),
    # multi-label examples without any label: "only one label ({labels[0]})" was an IndexError
    ("/adapters", {"name": "x", "examples": [{"text": "a", "labels": []}, {"text": "b", "labels": []}]}),
    ("/adapters", {"name": "x", "kind": "lora", "examples": [{"text": "a", "labels": []}, {"text": "b", "labels": []}]}),
    ("/adapters", {"name": "x", "examples": EXAMPLES, "options": []}),
    ("/adapters", {"name": "x", "examples": EXAMPLES, "options": "c=1"}),
    ("/adapters", {"name": "x", "examples": EXAMPLES, "options": 5}),
    ("/adapters", {"name": "x", "examples": EXAMPLES, "options": {"head": 5}}),
    ("/adapters", {"name": "x", "examples": EXAMPLES, "options": {"labels": "food"}}),
    ("/adapters", {"name": "x", "examples": EXAMPLES, "options": {"labels": ["food", "food", "sport"]}}),
    ("/adapters", {"name": "x", "kind": "lora", "examples": EXAMPLES, "options": {"targets": "query"}}),
    ("/adapters", {"name": "x", "kind": "lora", "examples": EXAMPLES, "options": {"targets": [5]}}),
    ("/adapters", {"name": "x", "kind": "lora", "examples": EXAMPLES, "options": {"targets": ["../x"]}}),
    ("/adapters", {"name": "x", "kind": "lora", "examples": EXAMPLES, "options": {"targets": ["\ud800"]}}),
    ("/adapters", {"name": "x", "kind": "lora", "examples": EXAMPLES, "options": {"targets": []}}),
    ("/adapters", {"name": "x", "kind": "lora", "examples": EXAMPLES, "options": {"recipe": ["ce"]}}),
    ("/predict", {"adapter": 5, "inputs": ["a"]}),
    ("/predict", {"adapter": None, "inputs": ["a"]}),
    ("/predict", {"adapter": ["news"], "inputs": ["a"]}),
    ("/predict", {"adapter": "news", "inputs": {"0": "a"}}),
    ("/predict", {"adapter": "news", "inputs": 5}),
    ("/predict", {"adapter": "news", "inputs": [1]}),
    ("/predict", {"adapter": "news", "inputs": [["a"]]}),
    ("/predict", {"adapter": "news", "inputs": [True]}),
    ("/predict", {"adapter": "news", "inputs": None}),
    ("/predict", {"adapter": "news"}),
    ("/embed", {"inputs": "a"}),
    ("/embed", {"inputs": [{"text": "a"}]}),
    ("/embed", {"inputs": ["a"], "adapter": "news"}),
    ("/adapters/news/export", {"quantize": 5}),
    ("/adapters/news/export", {"quantize": "int4"}),
    ("/adapters/news/export", {"quantize": ["int8"]}),
    ("/adapters/news/export", {"quantize": "none", "opset": 17}),
    ("/adapters/news/export", ["int8"]),
]


@pytest.mark.parametrize("path,body", WRONG, ids=[f"{p} {json.dumps(b, ensure_ascii=True)[:60]}" for p, b in WRONG])
def test_wrong_types_everywhere(api, path, body):
    client, root = api
    r = send(client, root, "POST", path, content=json.dumps(body).encode(), headers=JSON)
    refused(r, 422, {"invalid_request", "invalid_examples", "invalid_options", "invalid_name"})


# -- names: path traversal and odd names on every route that takes one ----------------------------

NAMES = [
    "..", "../x", "../../sentinel.txt", "..%2Fx", "..%2F..%2Fsentinel.txt", "%2e%2e", "%2e%2e%2fx",
    ".%2e", "..%5Cx", "..\\x", "%2Fetc%2Fpasswd", "%00", "news%00", "news%00.txt", "news%0A",
    "news%0D%0A", "news%09", "%20news", "news%20", "a" * 65, "a" * 5000, "news@0", "news@-1",
    "news@1.0", "news@%C2%B2", "news@%D9%A1", "news@" + "9" * 5000, "news@1@2", "@1", "news@",
    "C:%5Cwindows", "~root", "%24HOME", "news;rm", "news%3F", "news%23", "caf%C3%A9",
    "%E2%80%AEnews", "news%E2%80%8B", "%F0%9F%98%80", "%ED%A0%80", "%c0%ae%c0%ae", "%ff%fe",
    "x" * 64 + "%00",
]
ROUTES = [("GET", "/adapters/{}"), ("DELETE", "/adapters/{}"), ("DELETE", "/adapters/{}?version=1"),
          ("POST", "/adapters/{}/export")]


@pytest.mark.parametrize("method,route", ROUTES, ids=[f"{m} {r}" for m, r in ROUTES])
def test_traversal_and_odd_names_in_paths(api, method, route):
    client, root = api
    for name in NAMES:
        r = send(client, root, method, route.format(name))
        # 404 when the router found no route (a decoded "/" splits the path), else 422
        refused(r, {404, 422}, {"invalid_name", "not_found", "adapter_not_found"})
    assert client.get("/adapters/news").status_code == 200  # nothing was deleted


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_traversal_and_odd_ids_in_jobs(api, method):
    client, root = api
    ids = ["..", "..%2F..%2Fsentinel", "%2e%2e", "%00", "f" * 300, "0" * 32, "A" * 32, "x" * 5000,
           "..%2Fjobs", "%ED%A0%80", "abc%0A"]
    for job_id in ids:
        refused(send(client, root, method, f"/jobs/{job_id}"), 404, {"job_not_found", "not_found"})


BODY_NAMES = ["..", "../x", "../../sentinel.txt", "/etc/passwd", "/tmp/x", "x/y", "x\\y", "\x00",
              "news\x00", "news\n", "news\r\n", "x\n", " news", "a" * 65, "a" * 100_000, "", ".", "-x",
              "_x", "caf\u00e9", "cafe\u0301", "\u202enews", "news\u200b", "\ufeffnews", "\U0001F600",
              "\ud800", "x\udfff", "news@1", "NEWS\u0130", "\uff4e\uff45\uff57\uff53"]  # fullwidth "news"


@pytest.mark.parametrize("name", BODY_NAMES, ids=[ascii(n)[:30] for n in BODY_NAMES])
def test_traversal_and_odd_names_in_bodies(api, name):
    client, root = api
    r = send(client, root, "POST", "/adapters", json={"name": name, "examples": EXAMPLES})
    refused(r, 422, "invalid_name", "not allowed")
    refs = [name, name + "@1", "news@" + name] if name else ["@1"]
    for ref in refs:
        if ref in {"news@1"}:
            continue
        r = send(client, root, "POST", "/predict", json={"adapter": ref, "inputs": ["a goal"]})
        refused(r, 422, "invalid_name")


def test_error_messages_do_not_echo_megabytes(api):
    client, root = api
    err = refused(send(client, root, "POST", "/adapters", json={"name": "a" * 100_000, "examples": EXAMPLES}),
                  422, "invalid_name")
    assert len(err["message"]) < 500


# -- Unicode edge cases in texts, labels and field names -------------------------------------------

VISIBLE = [
    "\u0645\u0628\u0627\u0631\u0627\u0629 \u0643\u0631\u0629 \u0627\u0644\u0642\u062f\u0645",  # Arabic (RTL)
    "\u05de\u05e9\u05d7\u05e7 \u05db\u05d3\u05d5\u05e8\u05d2\u05dc",  # Hebrew (RTL)
    "\u202ethe striker scored\u202c",  # RTL override around Latin
    "cafe\u0301 au lait",  # combining accent
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dalgo",
    "\U0001F600\U0001F3C6\u26BD",  # emoji
    "\U0001F468\u200D\U0001F469\u200D\U0001F467 family dinner",  # ZWJ sequence
    "\U0001F44D\U0001F3FD",  # emoji + skin tone modifier
    "a\u200bgoal\u200b",  # zero-width spaces inside words
    "\ufeffthe final",  # BOM inside a string
    "line\u2028break\u2029para",
    "\u0000nul inside",  # NUL in a text is just a character
    "\U00010348 gothic, \U0001D11E music",  # astral plane
]


def test_unicode_texts_are_classified(api):
    client, root = api
    before = snapshot(root)
    r = client.post("/predict", json={"adapter": "news", "inputs": VISIBLE[:8]})
    assert r.status_code == 200, r.text
    r2 = client.post("/predict", json={"adapter": "news", "inputs": VISIBLE[8:]})
    assert r2.status_code == 200, r2.text
    for p in r.json()["predictions"] + r2.json()["predictions"]:
        assert p["label"] in {"sport", "food"} and abs(sum(p["scores"].values()) - 1) < 1e-5
    assert client.post("/embed", json={"inputs": VISIBLE[:8]}).status_code == 200
    assert snapshot(root) == before


def test_nfc_and_nfd_texts_get_the_same_answer(api):
    client, _ = api
    text = "cr\u00e8me br\u00fbl\u00e9e and a caf\u00e9 after the match"
    nfd = unicodedata.normalize("NFD", text)
    assert nfd != text
    a, b = client.post("/predict", json={"adapter": "news", "inputs": [text, nfd]}).json()["predictions"]
    assert a["label"] == b["label"]
    assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


INVALID_TEXTS = [
    ("\ud800", "unpaired surrogate"),
    ("goal \udfff", "unpaired surrogate"),
    ("\udbff\ud800", "unpaired surrogate"),  # two highs: not a pair
    ("\u200b\u200c\u200d\u2060\ufeff", "is empty"),  # only zero-width characters
    ("\u202e\u202c", "is empty"),  # only bidi controls
    (" \t\n\u3000\u00a0", "is empty"),
    ("\x00\x01", "is empty"),
]


@pytest.mark.parametrize("text,fragment", INVALID_TEXTS, ids=[ascii(t) for t, _ in INVALID_TEXTS])
def test_invalid_unicode_texts_are_refused(api, text, fragment):
    client, root = api
    for path, body, where in [
        ("/predict", {"adapter": "news", "inputs": ["fine", text]}, "inputs[1]"),
        ("/embed", {"inputs": [text]}, "inputs[0]"),
        ("/adapters", {"name": "x", "examples": EXAMPLES + [{"text": text, "label": "food"}]},
         f"examples[{len(EXAMPLES)}].text"),
        ("/adapters", {"name": "x", "kind": "lora", "examples": [{"text": text, "label": "food"}] + EXAMPLES},
         "examples[0].text"),
    ]:
        err = refused(send(client, root, "POST", path, json=body), 422, "invalid_examples", f"{where} ")
        assert fragment in err["message"], err


def test_raw_utf8_encoded_surrogate_is_refused(api):
    """b"\\xed\\xa0\\x80" is a surrogate encoded as UTF-8: json.loads accepts it (surrogatepass)."""
    client, root = api
    r = send(client, root, "POST", "/predict", content=b'{"adapter": "news", "inputs": ["\xed\xa0\x80"]}',
             headers=JSON)
    refused(r, {400, 422}, {"invalid_json", "invalid_examples"})


@pytest.mark.parametrize("labels,fragment", [
    (["\ud800", "food"], "unpaired surrogate"),
    (["sport\udc00", "food"], "unpaired surrogate"),
    (["\u200b", "food"], "non-empty string"),
    (["\u202e", "food"], "non-empty string"),
    (["caf\u00e9", "cafe\u0301"], "normalization"),
    (["\u00c5", "A\u030a"], "normalization"),
], ids=["surrogate", "surrogate-tail", "zero-width", "bidi-only", "nfc-nfd", "angstrom"])
def test_invalid_unicode_labels_are_refused(api, labels, fragment):
    client, root = api
    examples = [{"text": t, "label": labels[0]} for t in SPORT] + [{"text": t, "label": labels[1]} for t in FOOD]
    for kind in ("head", "lora"):
        r = send(client, root, "POST", "/adapters", json={"name": "x", "kind": kind, "examples": examples})
        refused(r, 422, "invalid_examples", fragment)
    multi = [{"text": t, "labels": [labels[0]]} for t in SPORT] + [{"text": t, "labels": [labels[1]]} for t in FOOD]
    refused(send(client, root, "POST", "/adapters", json={"name": "x", "examples": multi}), 422,
            "invalid_examples", fragment)


def test_unicode_labels_round_trip(api):
    """RTL, emoji, combining and zero-width-joined labels are fine: they come back byte for byte."""
    client, _ = api
    labels = ["\u26bd \u05e1\u05e4\u05d5\u05e8\u05d8", "\U0001F468\u200D\U0001F373 cuisine\u0301"]
    examples = [{"text": t, "label": labels[0]} for t in SPORT] + [{"text": t, "label": labels[1]} for t in FOOD]
    r = client.post("/adapters", json={"name": "unicode-labels", "examples": examples})
    assert r.status_code == 201, r.text
    assert set(r.json()["labels"]) == set(labels)
    p = client.post("/predict", json={"adapter": "unicode-labels", "inputs": ["a penalty in the final"]}).json()
    assert p["predictions"][0]["label"] == labels[0] and set(p["predictions"][0]["scores"]) == set(labels)
    assert set(client.get("/adapters/unicode-labels").json()["labels"]) == set(labels)
    assert client.delete("/adapters/unicode-labels").status_code == 200


@pytest.mark.parametrize("key", ["\ud800", "x" * 10_000, "\u202e", "../x", "\x00"])
def test_unknown_fields_with_hostile_names(api, key):
    """The 422 names the unknown field: its name must not break or bloat the answer."""
    client, root = api
    for path, body in [("/predict", {"adapter": "news", "inputs": ["a"]}), ("/embed", {"inputs": ["a"]}),
                       ("/adapters", {"name": "x", "examples": EXAMPLES})]:
        # (pydantic already refuses a key with a lone surrogate as "not a valid string")
        err = refused(send(client, root, "POST", path, json={**body, key: 1}), 422, "invalid_request",
                      "" if key == "\ud800" else "unknown field")
        assert len(err["message"]) < 500
    err = refused(send(client, root, "POST", "/adapters", json={"name": "x", "examples": EXAMPLES,
                                                                "options": {key: 1}}), 422, "invalid_options")
    assert len(err["message"]) < 1000
