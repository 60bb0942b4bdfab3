"""`bentoml serve` imports the service module twice: in its CLI process (the supervisor), which
needs only the definition (class, routes, schemas, settings), and in the worker, which builds
the engine in ``TailorService.__init__``. torch, transformers and onnx load in the worker only:
imported by the CLI process they cost about 1.2 s of CPU and 225 MiB on every start, and the
test suite starts some fifty servers (benchmarks/RESULTS.md, "Shape (issue 18)")."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("torch", "transformers", "onnx", "onnxruntime")
# what `bentoml serve` runs in its CLI process (bentoml_cli/serve.py -> _bentoml_impl.loader),
# then what the worker's TailorService.__init__ brings (build_engine: the encoder)
PROBE = f"""
import json, sys
from _bentoml_impl.loader import load
load("service.service:TailorService", working_dir=".")
definition = [m for m in {HEAVY!r} if m in sys.modules]
from adapters import TextEncoder
print(json.dumps([definition, [m for m in {HEAVY!r} if m in sys.modules]]))
"""


def test_the_service_definition_loads_without_torch(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    env.update(TAILOR_STORE_PATH=str(tmp_path / "store"), BENTOML_HOME=str(tmp_path / "home"),
               BENTOML_DO_NOT_TRACK="true")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    definition, engine = json.loads(out.strip().splitlines()[-1])
    assert definition == [], f"the service's definition imported {definition} (see the docstring)"
    assert "torch" in engine  # the probe can fail: it sees torch once the encoder is imported
