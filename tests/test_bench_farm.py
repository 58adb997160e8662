"""scripts/bench_farm.py runs end to end (its --quick smoke run), so the figures behind BENCHMARKS.md cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_farm_quick_prints_per_chunk_costs_and_the_worker_table(fixture_dir):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_farm.py"), "--quick", "--model", str(fixture_dir)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for label in ("forward per chunk", "align per chunk", "farm task start-up"):
        [line] = [x for x in lines if x.startswith(label)]
        assert float(line[len(label):].split()[0]) >= 0, line
    rows = [x.split() for x in lines if x.strip()[:1].isdigit() and len(x.split()) == 4]
    assert [int(r[0]) for r in rows] == [1, 2, 4, 8], done.stdout
    walls = [float(r[2]) for r in rows]
    assert all(a > b > 0 for a, b in zip(walls, walls[1:])), done.stdout  # more workers, shorter wall time
