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


def label_child(imports: str, extract: str, fields: str = "") -> str:
    """The child of an extract + label benchmark: `imports`, then ``rep = <extract>`` on
    ``db`` (argv[1]) into ``ext`` (argv[2]) and `derive_labels`, timed; prints one JSON line
    with extract_s, label_s, stays, onsets, label_rows, peak_rss_mb and `fields` (extra
    ``"key": expression,`` items that may read ``rep``). ``lp`` holds the LabelParams."""
    return f"""
import json, resource, sys, time
from pathlib import Path
from data_prep.sepsis3 import LabelParams, derive_labels
{imports}
db, ext = Path(sys.argv[1]), Path(sys.argv[2])
lp = LabelParams()
t0 = time.time()
rep = {extract}
t1 = time.time()
labels, onsets, counts = derive_labels(ext, lp, progress=False)
t2 = time.time()
print(json.dumps({{"extract_s": t1 - t0, "label_s": t2 - t1, "stays": len(onsets), {fields}
                  "onsets": int(onsets["onset_hour"].notna().sum()), "label_rows": len(labels),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def write_markdown(out, lines: list[str]) -> None:
    """Write a benchmark's markdown to `out` (creating its folder) and print it."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
