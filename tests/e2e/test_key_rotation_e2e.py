"""Key rotation on a real `bentoml serve`, the key file laid out as a mounted Kubernetes Secret,
under a steady request loop: a new key works and a removed key answers 401 within 10 s, a
malformed file changes nothing, and requests with unchanged keys never fail meanwhile."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.conftest import TLS, Server, recording
from tests.unit.service.test_key_rotation import A, B, C, SecretVolume, lines

pytestmark = pytest.mark.e2e

WITHIN_S = 10.0


def test_rotation_under_load_loses_no_request_of_unchanged_keys(tmp_path):
    secret = SecretVolume(tmp_path / "secrets")
    secret.write(lines(f"{A} acme", f"{B} globex"))
    server = Server(tmp_path / "store", {
        "TAILOR_FORWARD_WORKERS": "1",
        "TAILOR_API_KEYS_FILE": str(secret.path), "TAILOR_REQUIRE_API_KEYS": "true"},
        tmp_path / "server.log").start()
    stop = threading.Event()
    results = {"ok": 0, "failed": []}  # "failed": a non-200 answer, or an exception in the loop

    def steady():  # the unchanged key, all along
        with httpx.Client(base_url=server.url, timeout=30,
                          headers={"Authorization": f"Bearer {A}"}) as c:
            while not stop.is_set():
                r = c.get("/v1/adapters")
                if r.status_code == 200:
                    results["ok"] += 1
                else:
                    results["failed"].append((r.status_code, r.text[:200]))
                time.sleep(0.02)

    def status(key: str) -> int:
        return httpx.get(server.url + "/v1/adapters", timeout=30, verify=TLS,
                         headers={"Authorization": f"Bearer {key}"}).status_code

    def until(key: str, code: int) -> float:
        t0 = time.monotonic()
        while status(key) != code:
            assert time.monotonic() - t0 < WITHIN_S, f"key still not {code} after {WITHIN_S}s"
            time.sleep(0.1)
        return time.monotonic() - t0

    loop = [threading.Thread(target=recording(results["failed"], steady)) for _ in range(2)]
    try:
        for t in loop:
            t.start()
        assert (status(A), status(B), status(C)) == (200, 200, 401)
        secret.write(lines(f"{A} acme", f"{B} globex", f"{C} initech"))
        added = until(C, 200)
        secret.write(lines(f"{A} acme", f"{C} initech"))
        removed = until(B, 401)
        secret.write(lines(f"{A} acme", f"{B} globex", "not-a-key initech"))  # malformed
        time.sleep(4)  # two polls and more: nothing may change
        assert (status(A), status(B), status(C)) == (200, 401, 200)
        metrics = httpx.get(server.url + "/metrics", timeout=30).text  # what Prometheus sees
        assert 'tailor_api_key_reloads_total{result="ok"} 2.0' in metrics
        assert 'tailor_api_key_reloads_total{result="error"} 1.0' in metrics
        assert "tailor_api_keys 2.0" in metrics  # A and C in force
        print(f"new key accepted after {added:.1f}s, removed key refused after {removed:.1f}s, "
              f"{results['ok']} steady requests")
    finally:
        stop.set()
        for t in loop:
            t.join()
        server.stop()
    assert results["failed"] == [] and results["ok"] > 50
    log = server.log_path.read_text()
    assert "refused: TAILOR_API_KEYS_FILE=" in log and ", line 4:" in log
    for key in (A, B, C):
        assert key not in log
