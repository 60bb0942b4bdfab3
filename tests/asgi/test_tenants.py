"""Tenants and API keys through the service's ASGI app with the real backbone: a tenant's key
reaches only its own adapters and jobs (another tenant's are 404, exactly as missing ones,
and nothing changes), requests without a valid key are 401, keys never leak, admin keys
act for other tenants, and the adapters-per-tenant limit."""
from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from starlette.testclient import TestClient

from adapters import AdapterStore, Limits, Tailor
from adapters.training.jobs import JobManager
from service.api import create_app
from service.auth import KeyRing, authenticate, load_keyring
from service.settings import Settings, SettingsError
from tests.conftest import snapshot

KEY_A = "acme-" + "A" * 27 + "x1"          # tenant acme
KEY_B = "globex-" + "B" * 25 + "y2"        # tenant globex
KEY_ADMIN = "ops-" + "Z" * 28 + "z3"       # tenant ops, admin
KEY_C = "initech-" + "C" * 24 + "w4"       # tenant initech (the limit test)
WRONG = "acme-" + "A" * 27 + "x2"          # one character off KEY_A
KEYS_FILE = f"""# tenants of the tests
{KEY_A} acme
{KEY_B}   globex    # comment after an entry
{KEY_ADMIN} ops admin

{KEY_C} initech
"""
ALL_KEYS = (KEY_A, KEY_B, KEY_ADMIN, KEY_C, WRONG)
MAX_ADAPTERS = 3

EXAMPLES = [
    {"text": "the match ended with a late goal", "label": "sport"},
    {"text": "the striker scored twice in the final", "label": "sport"},
    {"text": "the team won the championship", "label": "sport"},
    {"text": "shares fell after the earnings report", "label": "business"},
    {"text": "the central bank raised interest rates", "label": "business"},
    {"text": "the company announced a merger", "label": "business"},
]
PROBES = ["a goal in the last minute won the cup", "the stock market dropped sharply"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


A, B, ADMIN, C = bearer(KEY_A), bearer(KEY_B), bearer(KEY_ADMIN), bearer(KEY_C)


@pytest.fixture(scope="module")
def world(backbone, tmp_path_factory):
    """acme owns adapter `news` and a running job; globex, initech and the admin own nothing."""
    root = tmp_path_factory.mktemp("tenants") / "store"
    store = AdapterStore(root, backbone.identity, max_adapters_per_tenant=MAX_ADAPTERS)
    release = threading.Event()

    def run(job):  # stays running, reports nothing: the job file does not change
        release.wait(120)
        return {}

    jobs = JobManager(root / "jobs", max_queued=4, run=run)  # its own executor: never trains
    app = create_app(max_body_bytes=200_000, keyring=KeyRing.parse(KEYS_FILE, "test keys"))
    app.state.tailor = Tailor(backbone, store, limits=Limits(max_inputs=8), jobs=jobs)
    job = jobs.submit("lora_train", "acme", "news-lora", {})
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/adapters", headers=A, json={"name": "news", "examples": EXAMPLES})
        assert r.status_code == 201, r.text
        for _ in range(200):
            if jobs.get("acme", job.id).status == "running":
                break
            time.sleep(0.05)
        baseline = client.post("/predict", headers=A, json={"adapter": "news", "inputs": PROBES})
        assert baseline.status_code == 200, baseline.text
        yield client, root, job.id, baseline.json(), jobs
    release.set()
    jobs.close()


def acme_is_untouched(client, root, before, job_id, baseline, jobs) -> None:
    assert snapshot(root) == before
    r = client.post("/predict", headers=A, json={"adapter": "news", "inputs": PROBES})
    assert r.status_code == 200 and r.json() == baseline
    rec = jobs.get("acme", job_id)
    assert rec.status == "running" and not rec.cancel_requested


def _missing_job_id() -> str:
    return uuid.uuid4().hex


# Every v1 route that touches tenant data, aimed at acme's adapter/job; the second path is a
# name or id that exists for nobody (same length): its answer must be the same.
FOREIGN = [
    ("GET", "/adapters/news", None, "/adapters/nope"),
    ("GET", "/adapters/news@1", None, "/adapters/nope@1"),
    ("DELETE", "/adapters/news", None, "/adapters/nope"),
    ("DELETE", "/adapters/news?version=1", None, "/adapters/nope?version=1"),
    ("POST", "/predict", {"adapter": "news", "inputs": ["x"]}, {"adapter": "nope", "inputs": ["x"]}),
    ("POST", "/predict", {"adapter": "news@1", "inputs": ["x"]}, {"adapter": "nope@1", "inputs": ["x"]}),
    ("POST", "/adapters/news/export", {"quantize": "none"}, "/adapters/nope/export"),
    ("POST", "/adapters/news@1/export", {}, "/adapters/nope@1/export"),
    ("GET", "/jobs/{job}", None, "/jobs/{missing}"),
    ("DELETE", "/jobs/{job}", None, "/jobs/{missing}"),
]


@pytest.mark.parametrize("key", [KEY_B, KEY_C, KEY_ADMIN], ids=["tenant", "other-tenant", "admin-own-tenant"])
@pytest.mark.parametrize("method,path,body,missing", FOREIGN, ids=[f"{f[0]} {f[1]}" for f in FOREIGN])
def test_another_tenants_adapter_or_job_is_404_like_a_missing_one_and_nothing_changes(
        world, key, method, path, body, missing):
    client, root, job_id, baseline, jobs = world
    before = snapshot(root)
    missing_id = _missing_job_id()
    path = path.format(job=job_id)
    if method == "POST" and path == "/predict":
        other_path, other_body = path, missing
    else:
        other_path, other_body = missing.format(missing=missing_id), body
    r = client.request(method, path, headers=bearer(key), json=body)
    r_missing = client.request(method, other_path, headers=bearer(key), json=other_body)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] in ("adapter_not_found", "job_not_found")
    # indistinguishable from a name/id that exists for nobody
    assert r.json() == {"error": {k: v.replace("nope", "news").replace(missing_id, job_id)
                                  for k, v in r_missing.json()["error"].items()}}
    assert r_missing.status_code == 404
    acme_is_untouched(client, root, before, job_id, baseline, jobs)


def test_listing_shows_only_your_own_adapters(world):
    client, root, job_id, baseline, jobs = world
    before = snapshot(root)
    assert [a["name"] for a in client.get("/adapters", headers=A).json()["adapters"]] == ["news"]
    for headers in (B, C, ADMIN):
        r = client.get("/adapters", headers=headers)
        assert r.status_code == 200 and r.json() == {"adapters": [], "training": []}
    acme_is_untouched(client, root, before, job_id, baseline, jobs)


def test_creating_the_same_name_makes_your_own_adapter_not_a_version_of_theirs(world):
    client, root, job_id, baseline, jobs = world
    before = snapshot(root)
    r = client.post("/adapters", headers=B, json={"name": "news", "examples": EXAMPLES[::-1]})
    assert r.status_code == 201 and r.json()["ref"] == "news@1"  # not news@2: acme's is unseen
    assert client.get("/adapters/news", headers=B).json()["versions"] == [1]
    assert client.get("/adapters/news", headers=A).json()["versions"] == [1]
    assert client.delete("/adapters/news", headers=B).json()["deleted_versions"] == [1]
    assert {k: v for k, v in snapshot(root).items() if "/globex/" not in k} == before
    acme_is_untouched(client, root, snapshot(root), job_id, baseline, jobs)


def test_embed_needs_a_valid_key_but_no_tenant_data(world):
    client, *_ = world
    for headers in (A, B, ADMIN):
        r = client.post("/embed", headers=headers, json={"inputs": ["hello"]})
        assert r.status_code == 200 and r.json()["dim"] == 384
    assert client.post("/embed", json={"inputs": ["hello"]}).status_code == 401


ROUTES = [
    ("POST", "/adapters", {"name": "sneaky", "examples": EXAMPLES}),
    ("GET", "/adapters", None),
    ("GET", "/adapters/news", None),
    ("DELETE", "/adapters/news", None),
    ("POST", "/predict", {"adapter": "news", "inputs": ["x"]}),
    ("POST", "/embed", {"inputs": ["x"]}),
    ("POST", "/adapters/news/export", {}),
    ("GET", "/jobs/{job}", None),
    ("DELETE", "/jobs/{job}", None),
    ("GET", "/openapi.json", None),
    ("GET", "/no/such/route", None),
]
BAD_AUTH = {
    "no header": {},
    "wrong key": bearer(WRONG),
    "empty bearer": {"Authorization": "Bearer "},
    "basic scheme": {"Authorization": "Basic " + KEY_A},
    "key without scheme": {"Authorization": KEY_A},
    "key as tenant header": {"X-Tailor-Tenant": KEY_A},
}


@pytest.mark.parametrize("auth", BAD_AUTH.values(), ids=BAD_AUTH.keys())
@pytest.mark.parametrize("method,path,body", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_no_valid_key_is_401_with_www_authenticate_and_changes_nothing(world, method, path, body, auth):
    client, root, job_id, baseline, jobs = world
    before = snapshot(root)
    r = client.request(method, path.format(job=job_id), headers=auth, json=body)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    err = r.json()["error"]
    assert err["code"] == "unauthorized"
    assert "send `Authorization: Bearer <key>`" in err["message"] or "invalid API key" in err["message"]
    assert not any(k in r.text or k in str(r.headers) for k in ALL_KEYS)
    acme_is_untouched(client, root, before, job_id, baseline, jobs)


def test_401_comes_before_the_body_is_read(world):
    client, *_ = world
    r = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 401  # not 400: a caller without a key learns nothing
    r = client.post("/predict", content=b"x" * 300_000, headers={"content-type": "application/json"})
    assert r.status_code == 401  # not 413


def test_keys_never_appear_in_logs_or_responses(world, caplog, tmp_path):
    client, root, job_id, *_ = world
    caplog.set_level(logging.DEBUG)
    seen = []
    for headers in (A, B, ADMIN, C, bearer(WRONG), {"Authorization": KEY_A}):
        for method, path, body in ROUTES:
            if method == "DELETE":  # acme's adapter and job stay for the other tests
                continue
            r = client.request(method, path.format(job=job_id), headers=headers, json=body)
            seen.append(r.text + str(r.headers))
    # start-up with keys, and a malformed file that holds keys
    bad = tmp_path / "keys"
    bad.write_text(f"{KEY_A} acme\n{KEY_B} globex extra-word\n")
    with pytest.raises(SettingsError) as e:
        load_keyring(Settings(api_keys_file=bad))
    seen.append(str(e.value))
    assert "line 2" in str(e.value)
    good = tmp_path / "good"
    good.write_text(KEYS_FILE)
    load_keyring(Settings(api_keys_file=good, api_keys=f"{'k' * 20} other"))
    seen.append(repr(Settings(api_keys=f"{KEY_A} acme")))
    text = caplog.text + "".join(seen)
    assert "API keys: 5 keys for 5 tenants (1 admin keys)" in caplog.text
    for key in ALL_KEYS + ("k" * 20,):
        assert key not in text
    # the one created in ROUTES by a valid key is tenant-scoped: clean up
    for headers in (A, B, ADMIN, C):
        client.delete("/adapters/sneaky", headers=headers)


def test_admin_acts_for_any_tenant_with_the_tenant_header(world):
    client, root, job_id, baseline, jobs = world
    as_acme = {**ADMIN, "X-Tailor-Tenant": "acme"}
    before = snapshot(root)
    assert [a["name"] for a in client.get("/adapters", headers=as_acme).json()["adapters"]] == ["news"]
    assert client.get("/adapters/news", headers=as_acme).json()["ref"] == "news@1"
    r = client.post("/predict", headers=as_acme, json={"adapter": "news", "inputs": PROBES})
    assert r.status_code == 200 and r.json() == baseline
    assert client.get(f"/jobs/{job_id}", headers=as_acme).json()["status"] == "running"
    # an admin still cannot reach a tenant by a malformed name
    r = client.get("/adapters", headers={**ADMIN, "X-Tailor-Tenant": "../acme"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_name"
    acme_is_untouched(client, root, before, job_id, baseline, jobs)


@pytest.mark.parametrize("headers", [{**B, "X-Tailor-Tenant": "acme"}, {**C, "X-Tailor-Tenant": "ops"}])
def test_only_admin_keys_may_name_another_tenant(world, headers):
    client, root, job_id, baseline, jobs = world
    before = snapshot(root)
    for method, path, body in ROUTES:
        r = client.request(method, path.format(job=job_id), headers=headers, json=body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    # naming your own tenant is harmless
    assert client.get("/adapters", headers={**B, "X-Tailor-Tenant": "globex"}).status_code == 200
    acme_is_untouched(client, root, before, job_id, baseline, jobs)


def test_adapters_per_tenant_limit(world):
    client, root, *_ = world
    for i in range(MAX_ADAPTERS):  # acme's adapter does not count against initech
        r = client.post("/adapters", headers=C, json={"name": f"c{i}", "examples": EXAMPLES})
        assert r.status_code == 201, r.text
    before = snapshot(root)
    for kind in ("head", "lora"):  # lora: refused before any job is queued
        r = client.post("/adapters", headers=C, json={"name": "one-more", "kind": kind, "examples": EXAMPLES})
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "too_many_adapters"
        assert f"limit is {MAX_ADAPTERS}" in err["message"] and "TAILOR_MAX_ADAPTERS_PER_TENANT" in err["message"]
    assert snapshot(root) == before
    # a new version of an existing name does not count; deleting makes room
    assert client.post("/adapters", headers=C, json={"name": "c0", "examples": EXAMPLES}).json()["version"] == 2
    client.delete("/adapters/c2", headers=C)
    assert client.post("/adapters", headers=C, json={"name": "one-more", "examples": EXAMPLES}).status_code == 201
    for name in ("c0", "c1", "one-more"):
        client.delete(f"/adapters/{name}", headers=C)


def test_open_mode_is_single_tenant_default(backbone, tmp_path):
    app = create_app()  # no keys configured
    app.state.tailor = Tailor(backbone, AdapterStore(tmp_path, backbone.identity))
    with TestClient(app) as client:
        r = client.post("/adapters", headers=bearer("whatever-key-you-like"),
                        json={"name": "t", "examples": EXAMPLES})
        assert r.status_code == 201
        assert (tmp_path / "tenants" / "default" / "t" / "v1").is_dir()
        assert [a["name"] for a in client.get("/adapters").json()["adapters"]] == ["t"]
        assert client.get("/adapters", headers={"X-Tailor-Tenant": "acme"}).status_code == 403


# -- the key file -------------------------------------------------------------------------------

def test_key_file_maps_keys_to_tenants_and_admins():
    ring = KeyRing.parse(KEYS_FILE, "f")
    assert len(ring) == 4 and not ring.open
    assert ring.lookup(KEY_A).tenant == "acme" and not ring.lookup(KEY_A).admin
    assert ring.lookup(KEY_ADMIN).tenant == "ops" and ring.lookup(KEY_ADMIN).admin
    assert ring.lookup(WRONG) is None and ring.lookup("") is None
    inline = KeyRing.parse(f"{KEY_A} acme, {KEY_B} globex admin", "env", commas=True)
    assert inline.lookup(KEY_B).admin
    assert authenticate(ring, {b"authorization": f"bearer {KEY_B}".encode()}) == "globex"


@pytest.mark.parametrize("text,fragment", [
    (f"{KEY_A}\n", "line 1: expected `<key> <tenant>`"),
    (f"\n{KEY_A} acme root\n", "line 2: expected"),
    ("short-key acme\n", "line 1: the key must be 16-256 characters"),
    (f"{KEY_A[:-1]}; acme\n", "the key must be"),
    (f"{KEY_A} ../etc\n", "tenant '../etc' is not allowed"),
])
def test_bad_key_files_are_refused_by_line_without_echoing_the_key(tmp_path, text, fragment):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(SettingsError) as e:
        load_keyring(Settings(api_keys_file=path))
    assert fragment in str(e.value) and "TAILOR_API_KEYS_FILE" in str(e.value)
    assert KEY_A[:16] not in str(e.value)


def test_the_same_key_twice_is_refused(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"{KEY_A} acme\n")
    with pytest.raises(SettingsError, match="listed twice"):
        load_keyring(Settings(api_keys_file=path, api_keys=f"{KEY_A} globex"))
    path.write_text(f"{KEY_A} acme\n{KEY_B} globex\n{KEY_A} globex admin\n")
    with pytest.raises(SettingsError, match="line 3: the same key as entry 1") as e:
        load_keyring(Settings(api_keys_file=path))
    assert KEY_A not in str(e.value)


def test_missing_file_or_required_but_empty_keys_stop_start_up(tmp_path, caplog):
    with pytest.raises(SettingsError, match="TAILOR_API_KEYS_FILE=.*cannot read it"):
        load_keyring(Settings(api_keys_file=tmp_path / "absent"))
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" + KEY_A.encode())
    with pytest.raises(SettingsError, match="cannot read it .*not UTF-8 text"):
        load_keyring(Settings(api_keys_file=binary))
    empty = tmp_path / "empty"
    empty.write_text("# no keys yet\n")
    with pytest.raises(SettingsError, match="TAILOR_REQUIRE_API_KEYS=true but"):
        load_keyring(Settings(api_keys_file=empty, require_api_keys=True))
    caplog.set_level(logging.WARNING, logger="tailor")
    assert load_keyring(Settings(api_keys_file=empty)).open
    assert "NO API KEYS CONFIGURED" in caplog.text and "OPEN and single-tenant" in caplog.text
