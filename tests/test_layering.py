"""The layers import downwards only: models <- runtime <- export <- tools (docs/design.md §2).

Every import statement counts, those inside functions too; relative imports are resolved first."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {  # layer: the top-level packages it must not import
    "models": {"runtime", "export", "tools"},
    "runtime": {"export", "tools"},
    "export": {"tools"},
}


def imported_packages(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in the file at `path`, relative ones resolved."""
    package = path.parent.relative_to(root).parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            parts = base + (node.module.split(".") if node.module else [])
            if parts:
                found.append((node.lineno, parts[0]))
    return found


def violations(root: Path, layer: str) -> list[str]:
    """'file:line imports package' for every import of a package `layer` must not import."""
    return [f"{path.relative_to(root)}:{line} imports {name}"
            for path in sorted((root / layer).rglob("*.py"))
            for line, name in imported_packages(root, path) if name in FORBIDDEN[layer]]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_no_layer_above_it(layer):
    assert violations(REPO, layer) == []


def test_every_kind_of_import_is_seen(tmp_path):
    (tmp_path / "runtime" / "sub").mkdir(parents=True)
    (tmp_path / "runtime" / "m.py").write_text(
        "import numpy\nimport export.build\n\ndef f():\n    from tools import bench\n"
        "    from ..export import graphs\n    from . import sibling\n")
    (tmp_path / "runtime" / "sub" / "n.py").write_text("from ..export import x\nfrom ...tools.bench import y\n")
    assert violations(tmp_path, "runtime") == [
        "runtime/m.py:2 imports export", "runtime/m.py:5 imports tools", "runtime/m.py:6 imports export",
        "runtime/sub/n.py:2 imports tools"]  # ..export in runtime/sub is runtime.export
