"""scripts/bench_streaming.py runs end to end (its --quick smoke run), so the benchmark behind BENCHMARKS.md cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_streaming_quick_prints_chunked_and_single_rows():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_streaming.py"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert {r[1] for r in rows} >= {"single"} and any("/" in r[1] for r in rows), done.stdout
    for r in rows:  # frames, chunk, chunks, s/frame, CPU s/frame, ..., peak RSS
        assert int(r[0]) > 0 and float(r[3]) > 0 and float(r[4]) > 0, r
