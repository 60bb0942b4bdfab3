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


# The CPU bento serves audio too (the `audio` extra requires the CPU onnxruntime it already
# has); the GPU one cannot install it beside onnxruntime-gpu (README, "Sound").
@pytest.mark.parametrize("path, onnxruntime, extras", [
    ("requirements/runtime.txt", "onnxruntime", ("audio",)),
    ("requirements/runtime-gpu.txt", "onnxruntime-gpu", ())])
def test_bento_requirements_cover_the_package_dependencies(path, onnxruntime, extras):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"]) | {onnxruntime}
    for extra in extras:
        wanted |= _names(project["optional-dependencies"][extra])
    have = _names((ROOT / path).read_text().splitlines())
    assert wanted - have == set(), f"{path} lacks {sorted(wanted - have)} (pyproject.toml lists them)"
    # and nothing more: a package moved to the dev extra (peft) leaves the bento too
    assert have - wanted == set(), f"{path} has {sorted(have - wanted)}, which pyproject.toml " \
        "does not list as a runtime dependency"
    assert {"onnxruntime", "onnxruntime-gpu"} & have == {onnxruntime}, \
        f"{path} must install exactly one onnxruntime build"


def _runtime_closure(names: set[str]) -> set[str]:
    """The runtime dependencies and everything they require (installed metadata, no extras)."""
    from importlib.metadata import PackageNotFoundError, requires

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        todo += [n for n in _names(r for r in reqs if "extra ==" not in r and "extra==" not in r)]
    return seen


def test_the_product_imports_only_its_runtime_dependencies():
    """What adapters/, export/ and service/ import at run time is a runtime dependency (or one
    of theirs), never a dev-only package such as peft or pytest: the bento installs only the
    runtime list. Imports under ``if TYPE_CHECKING`` are left out (none today)."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    allowed = _runtime_closure(_names(project["dependencies"]) | {"onnxruntime"})
    dists = packages_distributions()
    imported: dict[str, str] = {}
    for path in sorted(p for pkg in ("adapters", "export", "service") for p in (ROOT / pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for m in mods:
                imported.setdefault(m.split(".")[0], f"{path.relative_to(ROOT)}:{node.lineno}")
    third = {m: where for m, where in imported.items()
             if m not in sys.stdlib_module_names and m not in ("adapters", "export", "service")}
    assert "torch" in third and "bentoml" in third  # the walk sees the real imports
    outside = {m: where for m, where in third.items()
               if not {d.lower().replace("_", "-") for d in dists.get(m, [m])} & allowed}
    assert outside == {}, f"imported at run time but not runtime dependencies: {outside}"
