"""The World seam: nothing outside atelier/worlds/shapes/ imports the shapes world, except the
world selector and the command line's own `atelier shapes ...` commands."""

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parent.parent / "atelier"
SHAPES = "atelier.worlds.shapes"
ALLOWED = {"atelier/worlds/__init__.py", "atelier/cli.py"}


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def shapes_imports(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """Every import of the shapes world in a module: `import atelier.worlds.shapes...`,
    `from atelier.worlds.shapes... import ...`, `from atelier.worlds import shapes`, and the
    relative forms of these."""
    module = _module(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == SHAPES or a.name.startswith(SHAPES + ".")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
            found += [n for n in names if n == SHAPES or n.startswith(SHAPES + ".")][:1]
    return found


def test_the_checker_sees_every_form(tmp_path):
    pkg = tmp_path / "atelier" / "graphs"
    pkg.mkdir(parents=True)
    forms = ["import atelier.worlds.shapes.scene", "from atelier.worlds.shapes.scene import parse",
             "from atelier.worlds import shapes", "from ..worlds import shapes", "from ..worlds.shapes import plan",
             "def f():\n    from atelier.worlds.shapes import judge"]
    for i, form in enumerate(forms):
        module = pkg / f"m{i}.py"
        module.write_text(form + "\n")
        assert shapes_imports(module, tmp_path), form
    (pkg / "clean.py").write_text("from atelier.worlds import judgment\nimport atelier.worlds.judgment\nfrom . import state\n")
    assert shapes_imports(pkg / "clean.py", tmp_path) == []


def test_nothing_outside_the_shapes_world_imports_it():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if rel.startswith("atelier/worlds/shapes/") or rel in ALLOWED:
            continue
        if found := shapes_imports(path):
            offenders[rel] = found
    assert not offenders, f"modules outside atelier/worlds/shapes/ import the shapes world: {offenders}"


def test_the_agents_are_world_agnostic():
    """The agents answer in schemas and know no world: a world fills what their builtin rules read."""
    offenders = {p.name: shapes_imports(p) for p in sorted((PACKAGE / "agents").glob("*.py")) if shapes_imports(p)}
    assert not offenders
