"""The project's layout rules (scripts/check_layout.py): module and function sizes, the runtime
package's one-way imports (core <- server <- client <- environments), also as the worker really runs,
no import cycle anywhere (deferred imports included) and a small top level of da3_blender."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import check_layout  # noqa: E402


def test_no_module_over_500_lines_and_no_function_over_80():
    assert check_layout.size_violations() == []


def test_runtime_imports_run_one_way_without_cycles():
    graph = check_layout.runtime_imports()
    assert set(graph) == set(check_layout.RUNTIME_LAYERS), "every runtime module has a layer"
    assert check_layout.import_violations() == []
    assert "client" not in graph["worker"] and "ssh" not in graph["worker"]


def test_the_check_finds_an_upward_import_and_a_cycle(tmp_path):
    """The check can fail: a server module importing the client, and a cycle, are both reported."""
    runtime = tmp_path / "da3_blender" / "runtime"
    runtime.mkdir(parents=True)
    for name in check_layout.RUNTIME_LAYERS:
        (runtime / f"{name}.py").write_text("")
    (runtime / "worker.py").write_text("def f():\n    from .client import WorkerClient\n")
    (runtime / "ssh.py").write_text("from . import remote\n")
    (runtime / "remote.py").write_text("from da3_blender.runtime.ssh import x\n")
    found = check_layout.import_violations(tmp_path)
    assert any("worker.py imports client" in v for v in found), found
    assert any(v.startswith("import cycle") and "ssh" in v and "remote" in v for v in found), found
    (tmp_path / "da3_blender" / "big.py").write_text("def g():\n" + "    x = 1\n" * 90 + "\n" * 420)
    sizes = check_layout.size_violations(tmp_path)
    assert any("big.py: module has" in v for v in sizes) and any("g: function has 91 lines" in v for v in sizes)


def test_no_import_cycle_and_a_small_top_level():
    """The house drawn from its imports (every ``import``, inside functions too) has no cycle, and
    ``da3_blender/`` keeps at most 12 top-level modules."""
    graph = check_layout.import_graph()
    assert check_layout.cycle_violations() == []
    assert check_layout.top_level_violations() == []
    # the graph is the real one: the job reads inputs/, inputs/ never reads the job or the commands
    assert "da3_blender.inputs.checks" in graph["da3_blender.job"]
    assert not any(dep == "da3_blender.job" or dep.startswith("da3_blender.commands")
                   for mod, deps in graph.items() if mod.startswith("da3_blender.inputs") for dep in deps)
    assert "da3_blender.commands.common" in graph["da3_blender.commands.farm"]
    assert not any("da3_blender.commands.main" in deps for mod, deps in graph.items() if mod != "da3_blender.__main__")
    assert "da3_blender.farm.tasks" in graph["operators.farm"] or "da3_blender.farm.flamenco" in graph["operators.farm"]


def test_the_check_finds_a_deferred_cycle_and_a_crowded_top_level(tmp_path):
    """The check can fail: a cycle through an import inside a function (relative, across packages, and
    through the extension's root modules) is reported with its modules; 13 top-level modules are too many."""
    pkg = tmp_path / "da3_blender"
    (pkg / "inputs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "inputs" / "__init__.py").write_text("")
    (pkg / "job.py").write_text("from .inputs.paths import is_video_path\n")
    (pkg / "inputs" / "paths.py").write_text("def f():\n    from .. import job\n    return job\n")
    (pkg / "options.py").write_text("")
    (tmp_path / "operators").mkdir()
    (tmp_path / "operators" / "__init__.py").write_text("from ..da3_blender import options\nfrom .. import properties\n")
    (tmp_path / "properties.py").write_text("def g():\n    import operators\n")
    found = check_layout.cycle_violations(tmp_path)
    assert len(found) == 2, found
    assert any("da3_blender.inputs.paths <-> da3_blender.job" in v for v in found), found
    assert any("operators <-> properties" in v for v in found), found
    assert check_layout.top_level_violations(tmp_path) == []
    (pkg / "inputs" / "paths.py").write_text("def f():\n    return 1\n")
    (tmp_path / "properties.py").write_text("")
    assert check_layout.cycle_violations(tmp_path) == []
    for i in range(12):
        (pkg / f"m{i}.py").write_text("")
    assert any("14 top-level modules (max 12)" in v for v in check_layout.top_level_violations(tmp_path))


def test_the_worker_process_never_loads_the_client_side(tmp_path):
    """``python -m da3_blender.worker --jobs-dir`` (as over SSH), run as that command (runpy, as ``-m``
    does), answers hello, a job and a transfer request without importing the client, the SSH
    transport, remote jobs or the environments."""
    code = ("import atexit, runpy, sys; "
            "atexit.register(lambda: print('MODULES', sorted(m for m in sys.modules if m.startswith("
            "'da3_blender.runtime.')), file=sys.stderr)); "
            f"sys.argv = ['da3_blender.worker', '--jobs-dir', {str(tmp_path / 'jobs')!r}]; "
            "runpy.run_module('da3_blender.worker', run_name='__main__', alter_sys=True)")
    requests = (b'{"v":1,"request":"hello","id":"h"}\n'
                b'{"v":1,"request":"run","id":"j","job":{"inputs":["/nonexistent.png"],"output":"/tmp/x.npz"}}\n'
                b'{"v":1,"request":"list","id":"l","folder":"f","path":"x"}\n')
    log = open(tmp_path / "stderr.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log)
    proc.stdin.write(requests)
    proc.stdin.flush()
    answered = []
    for line in iter(proc.stdout.readline, b""):  # wait for the job's end before closing its input
        answered.append(line)
        if b'"job":"j"' in line and (b'"event":"error"' in line or b'"event":"result"' in line):
            break
    proc.stdin.close()  # EOF: the worker stops
    proc.stdout.read()
    assert proc.wait(120) == 0
    log.close()
    err = (tmp_path / "stderr.log").read_bytes()
    assert any(b'"event":"hello"' in line for line in answered)
    loaded = next(line for line in err.decode().splitlines() if line.startswith("MODULES"))
    assert "da3_blender.runtime.worker" in loaded and "da3_blender.runtime.transfer" in loaded
    for client_side in ("client", "client_remote", "ssh", "remote", "envs"):
        assert f"da3_blender.runtime.{client_side}'" not in loaded, loaded
