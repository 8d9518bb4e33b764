"""Run every benchmark (benchmarks/bench_*.py) in turn; each writes docs/benchmarks/<name>.md.

Usage: python benchmarks/run_all.py [--only dtw,mgp] [--full]
`--full` is passed on to every benchmark (the large sizes named in the issues).
Every bench_*.py is found by name (`--only` takes the part after bench_), e.g. the issue-13
readers at ~50 M rows: `--only mimic4,meds` (bench_mimic4.py: MIMIC-IV tables replicated from
the demo, docs/benchmarks/mimic4.md; bench_meds.py: MEDS shards replicated from the demo,
docs/benchmarks/meds.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default="", help="comma-separated names, e.g. dtw,mgp")
    ap.add_argument("--full", action="store_true", help="full sizes (slow)")
    args = ap.parse_args()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    scripts = sorted(HERE.glob("bench_*.py"))
    failed = []
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        if wanted and name not in wanted:
            continue
        cmd = [sys.executable, str(script)] + (["--full"] if args.full else [])
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        rc = subprocess.call(cmd)
        print(f"== {name}: exit {rc} after {time.time() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
