"""What the extract + label benchmarks share: run a measurement in a fresh child process
(so its peak RSS is its own) and the machine line of the markdown they write."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_child(code: str, *args) -> dict:
    """Run `code` in a fresh Python with the repository on its path; its last stdout line
    is a JSON object, returned. A failing child raises with the end of its stderr."""
    res = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if res.returncode:
        raise RuntimeError(f"benchmark child failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine_line() -> str:
    return (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; shared machine, timings are noisy (runs of the same code "
        "differ by up to ~30%)."
    )
