"""The container smoke test as part of the suite: build the bento and its image, run it like
the Kubernetes pod, create/predict/metrics, SIGTERM, store intact (deploy/smoke.sh says what
it checks). Needs root; installs podman and friends from Debian first (deploy/install-tools.sh).
Where podman cannot run, the script FAILS loudly, and so does this test: never a silent skip.
~4-8 min on a fresh machine, under a minute with cached image layers.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.container]
ROOT = Path(__file__).resolve().parents[1]


def test_container_image_builds_serves_and_stops_cleanly(tmp_path):
    log = tmp_path / "smoke.log"
    env = {**os.environ, "PYTHON": sys.executable, "BENTOML_DO_NOT_TRACK": "true"}
    with log.open("wb") as out:
        tools = subprocess.run([str(ROOT / "deploy/install-tools.sh")], cwd=ROOT, env=env,
                               stdout=out, stderr=subprocess.STDOUT, timeout=900)
        assert tools.returncode == 0, log.read_text()[-4000:]
        smoke = subprocess.run([str(ROOT / "deploy/smoke.sh")], cwd=ROOT, env=env,
                               stdout=out, stderr=subprocess.STDOUT, timeout=1800)
    text = log.read_text()
    print(text[-3000:])  # shown with -rA / on failure: the phase timings
    assert smoke.returncode == 0, text[-6000:]
    assert "acknowledged versions all intact" in text and "] PASSED in" in text, text[-3000:]
