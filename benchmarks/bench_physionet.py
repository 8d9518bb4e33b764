"""Benchmark the PhysioNet 2019 reader on the real training set A and build the cohort once.

1. Subset (first N members by name, default 2,000): `read_physionet2019(limit=N)` against a
   naive loop `pandas.read_csv(zip member, sep="|")` per file (which only parses; it builds
   none of the tables), both reading straight from the zip; best of 3 each.
2. Full set (20,336 files): `read_physionet2019` in a fresh subprocess, wall time and the
   child's peak RSS (ru_maxrss from wait4).
3. `prepare_from_tables` on the full set with `CohortParams(dbsource="all")` (other fields
   default) into a temporary folder, reporting the attrition, cases, controls, prevalence
   and split counts.

Usage: python benchmarks/bench_physionet.py [--zip PATH] [--subset 2000]
Writes docs/benchmarks/physionet.md (and physionet.json next to it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_ZIP = Path(os.environ.get("SEPSIS_SHARED_DATA", ROOT / ".." / "shared" / "data")) / (
    "physionet2019/training_setA.zip"
)


def _naive(zpath: Path, n: int) -> float:
    import pandas as pd

    t = time.perf_counter()
    with zipfile.ZipFile(zpath) as z:
        names = sorted(m for m in z.namelist() if m.endswith(".psv"))[:n]
        frames = [pd.read_csv(io.BytesIO(z.read(m)), sep="|") for m in names]
    assert len(frames) == n
    return time.perf_counter() - t


def _fast(zpath: Path, n: int | None) -> tuple[float, dict]:
    from data_prep.sources.physionet2019 import read_physionet2019

    t = time.perf_counter()
    tab = read_physionet2019(zpath, progress=False, limit=n)
    dt = time.perf_counter() - t
    return dt, {
        "stays": len(tab.stays),
        "rows": len(tab.labels_hourly),
        "observations": len(tab.observations),
    }


def child(mode: str, zpath: Path, n: int) -> None:
    """Run one measurement in this process and print a JSON line."""
    if mode == "full":
        dt, info = _fast(zpath, None)
        print(json.dumps({"seconds": dt, **info}))
    elif mode == "cohort":
        from data_prep.cohort import CohortParams, prepare_from_tables
        from data_prep.sources.physionet2019 import read_physionet2019

        t0 = time.perf_counter()
        tab = read_physionet2019(zpath, progress=False)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            att = prepare_from_tables(
                tab.stays, tab.onsets, tab.labels_hourly, tab.diagnoses, tab.observations,
                CohortParams(dbsource="all"), Path(tmp) / "prepared",
                dropped_values=tab.dropped_values, source_attrition=tab.source_attrition,
            )  # fmt: skip
        t2 = time.perf_counter()
        print(json.dumps({"read_s": t1 - t0, "prepare_s": t2 - t1, "attrition": att}, default=str))


def _run_child(mode: str, zpath: Path, n: int) -> tuple[dict, float]:
    """Run `child(mode)` in a fresh interpreter; return its JSON and peak RSS (GB)."""
    cmd = [sys.executable, __file__, "--child", mode, "--zip", str(zpath), "--subset", str(n)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"child {mode} failed with status {status}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024**2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    ap.add_argument("--subset", type=int, default=2000)
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.zip, args.subset)
        return
    if not args.zip.exists():
        raise SystemExit(f"{args.zip} not found (set SEPSIS_SHARED_DATA)")
    n = args.subset
    naive = min(_naive(args.zip, n) for _ in range(3))
    fast = min(_fast(args.zip, n)[0] for _ in range(3))
    full, full_rss = _run_child("full", args.zip, n)
    coh, coh_rss = _run_child("cohort", args.zip, n)
    att = coh["attrition"]
    res = {
        "subset_files": n, "naive_s": naive, "fast_s": fast, "speedup": naive / fast,
        "full": full, "full_peak_rss_gb": full_rss, "cohort_read_s": coh["read_s"],
        "cohort_prepare_s": coh["prepare_s"], "cohort_peak_rss_gb": coh_rss, "attrition": att,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }  # fmt: skip
    out = ROOT / "docs" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    (out / "physionet.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (out / "physionet.md").write_text(render(res))


def render(r: dict) -> str:
    att = r["attrition"]
    m = att["matching"]
    lines = [
        "# PhysioNet 2019 reader and cohort (training set A)",
        "",
        f"Machine: {r['machine']}. Written by `benchmarks/bench_physionet.py`.",
        "",
        "## Reading",
        "",
        "| what | files | seconds | note |",
        "| --- | ---: | ---: | --- |",
        f"| naive `pandas.read_csv` per zip member (parse only) | {r['subset_files']:,} | {r['naive_s']:.2f} | best of 3 |",
        f"| `read_physionet2019(limit=...)` (all tables built) | {r['subset_files']:,} | {r['fast_s']:.2f} | best of 3; "
        f"**{r['speedup']:.1f}x** faster |",
        f"| `read_physionet2019` full set, fresh process | {r['full']['stays']:,} | {r['full']['seconds']:.2f} | "
        f"peak RSS {r['full_peak_rss_gb']:.2f} GB (whole process) |",
        "",
        f"Full set: {r['full']['rows']:,} hourly rows, {r['full']['observations']:,} observations.",
        "",
        "## Reader attrition (`source_attrition`)",
        "",
        "| step | count | detail |",
        "| --- | ---: | --- |",
    ]
    lines += [f"| {s['step']} | {s['count']:,} | {s['detail']} |" for s in att["source_attrition"]]
    dv = att.get("dropped_values") or {}
    lines += ["", "Values outside the plausible range, dropped: "
              + (", ".join(f"{k} {v}" for k, v in dv.items()) or "none") + ".", ""]  # fmt: skip
    lines += [
        "## Cohort (`prepare_from_tables`, `CohortParams(dbsource='all')`, other fields default)",
        "",
        f"Read {r['cohort_read_s']:.1f} s + prepare {r['cohort_prepare_s']:.1f} s; peak RSS "
        f"{r['cohort_peak_rss_gb']:.2f} GB.",
        "",
        "| step | removed | removed cases | removed controls | remaining | cases | controls | detail |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in att["steps"]:
        lines.append(
            f"| {s['step']} | {s['removed']:,} | {s.get('removed_cases', '')} | {s.get('removed_controls', '')} | "
            f"{s['remaining']:,} | {s['cases']:,} | {s['controls']:,} | {s['detail']} |"
        )
    lines += [
        "",
        f"Final: {m['cases']:,} cases, {m['controls']:,} controls (ratio {m['ratio']}, final "
        f"{m['final_ratio']:.2f}; {m['cases_short']} cases short of controls), prevalence "
        f"{att['prevalence']:.3f}.",
        "",
        "Split counts (stays) per seed: "
        + "; ".join(
            f"seed {s}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
            for s, c in att["split_counts"].items()
        )
        + ".",  # fmt: skip
        "",
        f"Variables kept ({len(att['variables']['kept'])}): {', '.join(att['variables']['kept'])}; "
        f"dropped (< {att['variables']['min_observations']} observations in the windows): "
        f"{', '.join(att['variables']['dropped']) or 'none'}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
