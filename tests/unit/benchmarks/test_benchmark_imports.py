"""Every import of the product (`adapters`, `export`, `service`) from `benchmarks/` resolves.

Benchmarks import inside functions (so that `--help` stays fast), which no test runs: a
reshape of the product that removes a module left four research scripts failing at their
first call, and the commands of benchmarks/research/quality.md with them. This reads every
benchmark file's imports with `ast` (module level and inside functions) and imports each
named module and attribute, without running the benchmarks."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import ROOT

PRODUCT = ("adapters", "export", "service")


def product_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, attribute or None) of every absolute import of the product in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names
                      if a.name.split(".")[0] in PRODUCT]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in PRODUCT:
            found += [(node.lineno, node.module, a.name) for a in node.names]
    return found


def unresolved(module: str, attribute: str | None) -> str | None:
    """None when ``from module import attribute`` (or ``import module``) would work."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        return f"module {module}: {e}"
    if attribute is None or attribute == "*" or hasattr(mod, attribute):
        return None
    try:  # a submodule: `from adapters import encoders`
        importlib.import_module(f"{module}.{attribute}")
    except ImportError:
        return f"{module} has no {attribute}"
    return None


FILES = sorted((ROOT / "benchmarks").rglob("*.py"))


def test_a_stale_import_inside_a_function_is_caught(tmp_path):
    """A planted file: what the reshape left behind is found, what still exists is not."""
    bench = tmp_path / "bench_stale.py"
    bench.write_text("import numpy\n\n\ndef main():\n    from adapters.backbone import Backbone\n"
                     "    from adapters import NoSuchThing, encoders, Tailor\n    import export.bundle\n")
    found = product_imports(bench)
    assert [(m, a) for _, m, a in found] == [("adapters.backbone", "Backbone"), ("adapters", "NoSuchThing"),
                                             ("adapters", "encoders"), ("adapters", "Tailor"),
                                             ("export.bundle", None)]
    assert [(m, a) for _, m, a in found if unresolved(m, a)] == [
        ("adapters.backbone", "Backbone"), ("adapters", "NoSuchThing")]
    assert sum(len(product_imports(p)) for p in FILES) > 50  # the walk sees the real ones


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(ROOT).as_posix() for p in FILES])
def test_every_product_import_in_benchmarks_resolves(path):
    bad = [f"line {line}: {why}" for line, module, attribute in product_imports(path)
           if (why := unresolved(module, attribute))]
    assert bad == [], f"{path.relative_to(ROOT)}: " + "; ".join(bad)
