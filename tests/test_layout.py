"""The package layout of docs/architecture.md, checked: dependencies point one way.

Every ``llmtriage`` import in the source, at module level or inside a function, is read
from the syntax tree; a package may import only those below it. A new import that breaks
the layering (a policy reaching into the evaluation, anything reaching into the server or
the CLI) fails here, naming the file, before it tangles the packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmtriage

ROOT = Path(llmtriage.__file__).parent
LEAVES = {"data", "metrics"}
#: What each top-level package or module may import, besides itself and the leaves.
ALLOWED = {
    "data": set(),
    "metrics": set(),
    "probes": set(),
    "backends": set(),
    "signals": {"backends", "probes"},
    "collection": {"backends", "probes", "signals"},
    "policies": {"backends", "signals"},
    "evaluation": {"backends", "signals", "policies"},
    "serving": {"backends", "signals", "policies"},
    "cli": {"backends", "probes", "signals", "collection", "policies", "evaluation",
            "serving"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level ``llmtriage`` packages a module imports, however it spells it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == "llmtriage":
                found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("llmtriage.")}
    return found


def test_every_package_is_in_the_layout():
    packages = {p.name.removesuffix(".py") for p in ROOT.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists())
                or (p.suffix == ".py" and p.name != "__init__.py")}
    assert packages == set(ALLOWED)


def test_dependencies_point_one_way():
    broken = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if parts == ("__init__.py",):
            continue
        own = parts[0].removesuffix(".py")
        allowed = {own} | LEAVES | ALLOWED[own]
        broken += [f"{path.relative_to(ROOT)} imports llmtriage.{name}"
                   for name in sorted(imported_packages(path) - allowed)]
    assert not broken, "\n".join(broken)


def test_a_reach_upwards_would_be_seen(tmp_path):
    """The reader sees the spellings an upward import takes, so the check above can fail."""
    module = tmp_path / "m.py"
    module.write_text("from llmtriage import serving\n"
                      "def f():\n    import llmtriage.cli.common\n"
                      "    from llmtriage.evaluation.compare import compare\n")
    assert imported_packages(module) == {"serving", "cli", "evaluation"}
