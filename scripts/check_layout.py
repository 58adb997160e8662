"""List layout violations: a module over 500 lines or a function over 80 lines (tests and benchmarks
excepted), imports inside ``da3_blender/runtime`` that run the wrong way, any import cycle between the
project's modules (every ``import`` counts, also one inside a function: a deferred import is still a
two-way dependency), and more than 12 modules at ``da3_blender``'s top level (the rest live in packages).

    python scripts/check_layout.py            # prints one line per violation, exit 1 if any

The runtime order (``da3_blender/runtime/__init__.py``): the DA3 core <- the server side (protocol,
requirements, transfer, worker) <- the client side (client, ssh, remote) <- the environments (envs).
A module may import only modules of its own layer or below (and, within the layer, not back into a
module that imports it: no cycle).
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
CHECKED = ("da3_blender", "operators", "panels", "scene", "scripts", "__init__.py", "properties.py",
           "preferences.py")
EXEMPT_PREFIXES = ("tests", "scripts/bench_")
# the import graph: these packages and the root modules (the extension's __init__.py, properties, preferences)
GRAPH_PACKAGES = ("da3_blender", "operators", "panels", "scene")
GRAPH_SKIP = ("static", "vendor", "node_modules", "__pycache__")
MAX_TOP_MODULES = 12  # da3_blender/*.py, __init__.py not counted

# layer of each runtime module: a module may import runtime modules of a lower or equal layer only
RUNTIME_LAYERS = {"protocol": 1, "requirements": 1, "transfer": 1, "worker": 2, "client": 3, "client_remote": 3, "ssh": 3,
                  "remote": 3, "envs": 4}


def python_files(root: Path = ROOT):
    for name in CHECKED:
        path = root / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = [d for d in dirnames if not d.startswith((".", "__pycache__"))]
                for f in sorted(filenames):
                    if f.endswith(".py"):
                        yield Path(dirpath) / f


def _exempt(rel: str) -> bool:
    return rel.startswith(EXEMPT_PREFIXES)


def size_violations(root: Path = ROOT) -> list[str]:
    """``path: N lines`` for long modules, ``path:line name: N lines`` for long functions."""
    out = []
    for path in python_files(root):
        rel = path.relative_to(root).as_posix()
        if _exempt(rel):
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n") + (not text.endswith("\n") and bool(text))
        if lines > MAX_MODULE_LINES:
            out.append(f"{rel}: module has {lines} lines (max {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text, filename=rel)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - start + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{rel}:{node.lineno} {node.name}: function has {length} lines "
                               f"(max {MAX_FUNCTION_LINES})")
    return out


def runtime_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """For each ``da3_blender/runtime/*.py``: the runtime modules it imports (anywhere in the file)."""
    graph = {}
    folder = root / "da3_blender" / "runtime"
    for path in sorted(folder.glob("*.py")):
        if path.stem == "__init__":
            continue
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level == 1:  # from .x import y / from . import x
                    found.update([mod.split(".")[0]] if mod else [a.name for a in node.names])
                elif node.level == 0 and mod.startswith("da3_blender.runtime"):
                    rest = mod[len("da3_blender.runtime"):].lstrip(".")
                    found.update([rest.split(".")[0]] if rest else [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("da3_blender.runtime."):
                        found.add(a.name.split(".")[2])
        graph[path.stem] = {m for m in found if m and m != path.stem}
    return graph


def import_violations(root: Path = ROOT) -> list[str]:
    graph = runtime_imports(root)
    out = []
    for mod, deps in graph.items():
        if mod not in RUNTIME_LAYERS:
            out.append(f"da3_blender/runtime/{mod}.py: not placed in a layer (add it to RUNTIME_LAYERS)")
            continue
        for dep in sorted(deps):
            if RUNTIME_LAYERS.get(dep, 99) > RUNTIME_LAYERS[mod]:
                out.append(f"da3_blender/runtime/{mod}.py imports {dep} (a higher layer): imports must run "
                           "core <- server <- client <- envs")
    # cycles (within a layer)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                out.append("import cycle: " + " -> ".join(stack[stack.index(dep):] + [node, dep]))
            elif dep in graph and not state.get(dep):
                visit(dep, stack + [node])
        state[node] = 2

    for mod in graph:
        if not state.get(mod):
            visit(mod, [])
    return out


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file of every module of the import graph (a package by its own name; the root
    ``__init__.py`` as ``__root__``)."""
    out = {}
    for top in GRAPH_PACKAGES:
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in GRAPH_SKIP)
            for f in sorted(filenames):
                if f.endswith(".py"):
                    parts = list((Path(dirpath) / f).relative_to(root).with_suffix("").parts)
                    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = Path(dirpath) / f
    for path in sorted(root.glob("*.py")):
        out["__root__" if path.stem == "__init__" else path.stem] = path
    return out


def _resolve(name: str, modules) -> str | None:
    """The deepest project module that the dotted ``name`` names (``a.b.func`` -> ``a.b``), or None."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def module_imports(mod: str, path: Path, modules) -> set[str]:
    """The project modules ``mod`` imports anywhere in its file (inside functions too), relative imports
    resolved (the root modules' ``from .x`` / ``from ..x`` name the extension's own packages)."""
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    if mod == "__root__" or package == "__root__":
        package = ""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (_resolve(a.name, modules) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                full = f"{target}.{a.name}" if target else a.name
                hit = full if full in modules else _resolve(target, modules) if target else None
                if hit:
                    found.add(hit)
    found.discard(mod)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {mod: module_imports(mod, path, modules) for mod, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10000))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(out)


def cycle_violations(root: Path = ROOT) -> list[str]:
    """One line per import cycle among the project's modules (deferred imports included)."""
    graph = import_graph(root)
    out = []
    for comp in import_cycles(graph):
        members = set(comp)
        edges = ", ".join(f"{a} -> {b}" for a in comp for b in sorted(graph[a] & members))
        out.append(f"import cycle: {' <-> '.join(comp)} ({edges}): move the shared piece down into a module "
                   "both can import")
    return out


def top_level_violations(root: Path = ROOT) -> list[str]:
    """``da3_blender``'s top level keeps at most MAX_TOP_MODULES modules (the core); the rest are packages."""
    names = sorted(p.name for p in (root / "da3_blender").glob("*.py") if p.name != "__init__.py")
    if len(names) > MAX_TOP_MODULES:
        return [f"da3_blender/: {len(names)} top-level modules (max {MAX_TOP_MODULES}): {', '.join(names)}; "
                "put the rest in a package"]
    return []


def main() -> int:
    problems = size_violations() + import_violations() + cycle_violations() + top_level_violations()
    for p in problems:
        print(p)
    print(f"check_layout: {len(problems)} violation{'s' * (len(problems) != 1)}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
