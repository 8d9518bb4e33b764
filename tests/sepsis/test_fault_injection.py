"""Slow: kill -9 prepare and train at random points; reruns give the same data (issue 17)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_killed_runs_rerun_to_the_same_data(tmp_path):
    out = tmp_path / "fault_injection.md"
    script = ROOT / "benchmarks" / "bench_fault_injection.py"
    cmd = [sys.executable, str(script), "--trials", "2", "--seed", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert "4 of 4 killed-and-rerun runs gave artifacts equal to the reference" in text
