"""The import rules of docs/ARCHITECTURE.md, checked on the source (static: nothing is imported or run)."""

from __future__ import annotations

import ast
from pathlib import Path

import mothertree

PACKAGE = Path(mothertree.__file__).parent
SHARED = {"errors", "_progress", "_version", "_choices", "_json_files"}
# What each part may import from mothertree, besides SHARED (and itself).
ALLOWED = {
    "io": set(),
    "features": {"io"},
    "tree": {"features"},
    "evaluation": {"io"},  # truth from model cards: io.discover
    "result": {"tree", "io", "report"},  # report: imported when Jupyter first shows a result
    "pipeline": {"io", "features", "tree", "result"},
    "store": {"features", "io"},  # fingerprints (features.fingerprint) and tensor infos (io.types)
    "indexing": {"io", "features", "tree", "result", "pipeline", "store"},
    "report": {"result", "evaluation"},
    "render": {"result", "evaluation", "report"},
    "_allocator": set(),
    "cli": {
        "_allocator",
        "pipeline",
        "indexing",
        "store",
        "render",
        "report",
        "result",
        "evaluation",
        "io",
        "tree",
        "features",
        "zoo",
    },
    "zoo": {"io", "features", "tree", "evaluation", "pipeline", "result"},
}


def part_of(module: Path) -> str:
    relative = module.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_parts(module: Path) -> set[str]:
    """The top-level parts of mothertree that ``module`` imports (relative or absolute imports)."""
    depth = len(module.relative_to(PACKAGE).parts) - 1  # 0 for mothertree/x.py, 1 for mothertree/io/x.py
    parts = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").startswith("mothertree"):
                names = (node.module or "").split(".")[1:]
            elif node.level > 0:
                inside = list(module.relative_to(PACKAGE).parts[:depth])
                base = inside[: len(inside) - (node.level - 1)] if node.level > 1 else inside
                names = [*base, *(node.module or "").split(".")] if node.module else base
                if not names:  # `from . import x` at the top: x is the part
                    names = [alias.name for alias in node.names][:1]
            else:
                continue
            if names and names[0]:
                parts.add(names[0])
    return parts


def test_every_part_imports_only_what_the_architecture_allows() -> None:
    breaches = []
    for module in sorted(PACKAGE.rglob("*.py")):
        part = part_of(module)
        if part in SHARED or part == "__init__":
            continue
        allowed = ALLOWED[part] | SHARED | {part}
        for other in sorted(imported_parts(module) - allowed):
            breaches.append(f"{module.relative_to(PACKAGE)} imports {other}")
    assert breaches == []


def test_the_checker_sees_what_a_module_imports() -> None:
    # Worked examples, read off the modules' import lines.
    assert imported_parts(PACKAGE / "tree" / "recover.py") == {"_choices", "errors", "features", "tree"}
    assert imported_parts(PACKAGE / "result.py") == {
        "_json_files",
        "_version",
        "errors",
        "io",
        "report",
        "tree",
    }
    assert imported_parts(PACKAGE / "__init__.py") == {
        "_version",
        "errors",
        "evaluation",
        "features",
        "pipeline",
        "result",
        "tree",
    }
