"""The architecture is checked, not hoped for: import-linter's contracts (pyproject.toml)
hold on the tree, and they fail when a module imports against them."""
from __future__ import annotations

import os
import re
import shutil
import tomllib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


CONTRACTS = [c["name"] for c in tomllib.loads((ROOT / "pyproject.toml").read_text())
             ["tool"]["importlinter"]["contracts"]]


def status(output: str) -> dict[str, str]:
    """Contract name -> KEPT or BROKEN, from lint-imports' (line-wrapped) report."""
    flat = " ".join(output.split())
    out = {}
    for name in CONTRACTS:
        m = re.search(re.escape(" ".join(name.split())) + r" (KEPT|BROKEN)", flat)
        out[name] = m.group(1) if m else "missing"
    return out


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=120)


def copy_tree(dest: Path) -> Path:
    for pkg in ("adapters", "export", "service"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_tree_keeps_every_contract():
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(status(proc.stdout).values()) == {"KEPT"}


@pytest.mark.parametrize("module,line,broken", [
    ("adapters/heads.py", "import fastapi", "The domain never imports HTTP, BentoML or export"),
    ("adapters/validation.py", "import export", "Layers: service -> export -> adapters"),
    ("export/graph.py", "from service import settings", "Layers: service -> export -> adapters"),
    ("export/graph.py", "import bentoml", "Only service/ knows HTTP and BentoML"),
    ("adapters/storage/store.py", "from ..kinds import KINDS", "Inside adapters/"),
    ("adapters/serving/registry.py", "from ..training import jobs", "Inside adapters/"),
    ("export/onnx_config.py", "from . import bundle", "Inside export/"),
    ("service/settings.py", "from . import api", "Inside service/"),
    ("adapters/modalities/base.py", "from .. import validation", "Inside adapters/"),
    ("export/runtimes/base.py", "from . import ort", "Inside export/runtimes/"),
    ("export/runtimes/pytorch.py", "from . import auto", "Inside export/runtimes/"),
    ("adapters/serving/registry.py", "from ..storage import s3", "The store's backend is picked"),
    ("service/service.py", "import boto3", "The store's backend is picked"),
])
def test_a_deliberate_violation_breaks_a_contract(tmp_path, module, line, broken):
    tree = copy_tree(tmp_path)
    with (tree / module).open("a") as f:
        f.write(f"\n{line}  # deliberate violation\n")
    proc = lint(tree)
    assert proc.returncode != 0
    got = status(proc.stdout)
    assert [n for n, v in got.items() if n.startswith(broken) and v == "BROKEN"], got
