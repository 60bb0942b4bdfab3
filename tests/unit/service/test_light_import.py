"""`bentoml serve` imports the service module twice: in its CLI process (the supervisor), which
needs only the definition (class, routes, schemas, settings), and in the worker, which builds
the engine in ``TailorService.__init__``. torch, transformers and onnx load in the worker only:
imported by the CLI process they cost about 1.2 s of CPU and 230 MiB on every start, and the
test suite starts some fifty servers (benchmarks/RESULTS.md, "Shape (issue 18)")."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "transformers", "onnx", "onnxruntime")


def loaded_after(code: str, tmp_path) -> list[str]:
    """Which of HEAVY a fresh interpreter has loaded after running ``code`` in the repo root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    env.update(TAILOR_STORE_PATH=str(tmp_path / "store"), BENTOML_HOME=str(tmp_path / "home"),
               BENTOML_DO_NOT_TRACK="true")
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import service.service",
    # what `bentoml serve` runs in its CLI process (bentoml_cli/serve.py -> _bentoml_impl.loader)
    "from _bentoml_impl.loader import load\nload('service.service:TailorService', working_dir='.')",
])
def test_the_service_definition_loads_without_torch(code, tmp_path):
    assert loaded_after(code, tmp_path) == []


def test_the_probe_sees_torch_when_it_is_imported(tmp_path):
    """The check above can fail: the same probe after something that loads torch."""
    assert "torch" in loaded_after("import service.service\nfrom adapters import TextEncoder", tmp_path)
