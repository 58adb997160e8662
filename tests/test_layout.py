"""The project's layout rules (scripts/check_layout.py): module and function sizes, and the runtime
package's one-way imports (core <- server <- client <- environments), also as the worker really runs."""

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


def test_the_worker_process_never_loads_the_client_side():
    """``python -m da3_blender.worker`` (with --jobs-dir, as over SSH) answers hello and a job without
    importing the client, the SSH transport, remote jobs or the environments."""
    code = r"""
import io, sys, tempfile, time
from da3_blender.runtime import worker
from da3_blender.runtime.transfer import JobFiles
w = worker.Worker(io.StringIO(), JobFiles(tempfile.mkdtemp()))
w.handle(b'{"v":1,"request":"hello","id":"h"}')
w.handle(b'{"v":1,"request":"run","id":"j","job":{"inputs":["/nonexistent.png"],"output":"/tmp/x.npz"}}')
w.handle(b'{"v":1,"request":"list","id":"l","folder":"f","path":"x"}')
while w._job is not None:
    time.sleep(0.05)
print(sorted(m for m in sys.modules if m.startswith("da3_blender.runtime.")))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = out.stdout.strip().splitlines()[-1]
    assert "da3_blender.runtime.worker" in loaded and "da3_blender.runtime.transfer" in loaded
    for client_side in ("client", "ssh", "remote", "envs"):
        assert f"da3_blender.runtime.{client_side}'" not in loaded, loaded
    # and the documented command is the same worker
    shim = subprocess.run([sys.executable, "-m", "da3_blender.worker", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert shim.returncode == 0 and "--jobs-dir" in shim.stdout
