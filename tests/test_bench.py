"""The benchmark harness runs end to end (tiny counts; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_harness_writes_a_results_table(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--only", "2,5,6", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = out.read_text()
    assert "| CPU |" in table and "load average" in table
    rows = [line for line in table.splitlines() if line.startswith("| 2 |") or line.startswith("| 5 |")]
    assert any("dispatch latency, embedded" in r and " ms" in r for r in rows), table
    assert any("status read" in r and "req/s" in r for r in rows), table
    live = [line for line in table.splitlines() if line.startswith("| 6 |")]
    assert any("SSE" in r and "ms per update" in r for r in live), table
    assert any("memory per open stream" in r and "KB per stream" in r for r in live), table
