"""The bento installs from requirements/runtime*.txt, not from pyproject.toml: a dependency
added to one and not the others breaks only the container (found at the issue-12/14 merge:
orjson and pillow were missing from the GPU file, pillow from both)."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _names(lines) -> set[str]:
    out = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(re.split(r"[<>=!~\[; ]", line, 1)[0].lower().replace("_", "-"))
    return out


@pytest.mark.parametrize("path, onnxruntime", [("requirements/runtime.txt", "onnxruntime"),
                                               ("requirements/runtime-gpu.txt", "onnxruntime-gpu")])
def test_bento_requirements_cover_the_package_dependencies(path, onnxruntime):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"]) | {onnxruntime}
    have = _names((ROOT / path).read_text().splitlines())
    assert wanted - have == set(), f"{path} lacks {sorted(wanted - have)} (pyproject.toml lists them)"
    assert {"onnxruntime", "onnxruntime-gpu"} & have == {onnxruntime}, \
        f"{path} must install exactly one onnxruntime build"
