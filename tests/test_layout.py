"""The layout the README states holds: every module of the service is listed, the layers point one
way, and no module imports a module that imports it back (at import time)."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layout() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Layout", 1)[1].split("\n## ", 1)[0]


def _modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of a top-level package."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Modules imported at import time (top-level statements, not inside functions)."""
    tree, found = ast.parse(path.read_text()), set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def test_the_readme_layout_lists_every_module_of_the_service():
    layout = _layout()
    named = set(re.findall(r"[\w.]+\.py", layout)) | set(re.findall(r"(\w+)/", layout))
    top = [p for p in (ROOT / "pilot").glob("*.py")]
    missing = sorted(p.name for p in top if p.name not in named and p.stem not in named)
    assert not missing, f"README Layout does not list: {missing}"
    packages = sorted(p.name for p in (ROOT / "pilot").iterdir() if (p / "__init__.py").exists() or p.name == "migrations")
    assert set(packages) <= named, set(packages) - named


def test_the_layers_point_one_way():
    pilot, experiments, reports = _modules("pilot"), _modules("experiments"), _modules("reports")
    for name, path in experiments.items():
        bad = {i for i in _imports(path, name) if i.split(".")[0] in ("pilot", "reports", "flask", "sqlalchemy")}
        assert not bad, f"{name} (pure statistics) imports {bad}"
    for name, path in reports.items():
        bad = {i for i in _imports(path, name) if i.split(".")[0] in ("pilot", "experiments", "sqlalchemy")}
        assert not bad, f"{name} (draws only) imports {bad}"
    for name, path in pilot.items():
        if name.startswith("pilot.api") or name == "pilot":
            continue
        source = path.read_text()
        assert not re.search(r"^\s*(from pilot\.api[ .]|import pilot\.api|from pilot import .*\bapi\b)", source, re.M), \
            f"{name} imports pilot.api"


def test_no_import_circle_among_the_service_modules():
    modules = {**_modules("pilot"), **_modules("experiments"), **_modules("reports")}
    graph = {name: {i for i in _imports(path, name) if i in modules and i != name} for name, path in modules.items()}
    # a package's own __init__ importing its submodules is how a package is put together, not a circle
    graph = {n: {d for d in deps if not (n == d.rsplit(".", 1)[0])} for n, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join([*trail[trail.index(dep):], dep]))
            if dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
