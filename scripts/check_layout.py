"""List layout violations: a module over 500 lines or a function over 80 lines (tests and benchmarks
excepted), and imports inside ``da3_blender/runtime`` that run the wrong way.

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


def main() -> int:
    problems = size_violations() + import_violations()
    for p in problems:
        print(p)
    print(f"check_layout: {len(problems)} violation{'s' * (len(problems) != 1)}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
