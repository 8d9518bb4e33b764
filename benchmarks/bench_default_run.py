"""Wall time and peak memory of the embedded default run (`sepsis run`, configs/default.yaml).

Target (issue 2): `make prepare && make train && make report` in under 10 minutes on 2 cores.
Runs the whole pipeline from nothing (fresh data_dir and output_dir in a temporary folder) in a
child process, reads each stage's manifest for its wall time, and writes
docs/benchmarks/default_run.md with the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "default_run.md"
TARGET_S = 600

sys.path.insert(0, str(ROOT))
from sepsis.pipeline import stage_wall_seconds  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--full", action="store_true", help="accepted for run_all.py; same as default")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, run = Path(tmp) / "db", Path(tmp) / "run"
        cmd = [
            str(Path(sys.executable).parent / "sepsis"),
            "run",
            "--config",
            args.config,
            "--no-progress",
            f"data_dir={data}",
            f"output_dir={run}",
        ]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            return proc.returncode
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        stages = stage_wall_seconds(run)
        gen = json.loads((data / "manifest.json").read_text()).get("wall_seconds", 0.0)
        summary = proc.stdout[proc.stdout.find("AUPRC (mean") :]
    lines = [
        "# The embedded default run, end to end",
        "",
        f"Command: `python benchmarks/bench_default_run.py --config {args.config}` (runs "
        f"`sepsis run --config {args.config}` from nothing in a temporary folder)",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        "shared machine, timings are noisy.",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
        f"| generate (synthetic database) | {gen:.1f} |",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in stages.items()]
    lines += [
        f"| **total wall time (incl. start-up)** | **{wall:.1f}** |",
        "",
        f"Peak RSS of the run: {rss_mb:.0f} MiB. Target: under {TARGET_S} s on 2 cores: "
        f"{'met' if wall < TARGET_S else 'NOT met'}.",
        "",
        "Test-split metrics printed by that run (synthetic data; see README for what they mean):",
        "",
        "```",
        summary.strip(),
        "```",
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
