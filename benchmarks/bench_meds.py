"""Extract AND label a MEDS dataset of full size, made from the MIMIC-IV demo in MEDS (issue 13).

For each size N: every shard of the demo (`mimic4-demo-meds/with-microbiology`,
data/{train,tuning,held_out}/0.parquet) replicated N times as data/<split>/<k>.parquet, k =
0..N-1, with subject_id and the ETL's id columns (hadm_id, icustay_id, order_id,
link_order_id, micro_specimen_id) offset per replica, so the shard layout is kept (a subject
in one shard) and each replica is a new set of subjects; metadata/ copied (dataset.json,
codes.parquet) or replicated (subject_splits.parquet, .shards.json). Not timed. Then in a
fresh child process `meds.extract` and `sepsis3.derive_labels`, recording wall time, MEDS
events (rows) per second for the extraction alone and end to end (rows / (extract + label
seconds)) and the child's peak RSS. Writes docs/benchmarks/meds.md.

Usage: python benchmarks/bench_meds.py [--sizes 10,47] [--work /tmp/bench_meds] [--out PATH]
(47 replicas = 49.9 M events; the demo with microbiology has 1,061,689.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from child import label_child, machine_line, run_child, write_markdown  # noqa: E402

OUT = ROOT / "docs" / "benchmarks" / "meds.md"
SHARED = Path(os.environ.get("SEPSIS_SHARED_DATA", ROOT.parent / "shared" / "data"))
OFFSET = 100_000_000  # per replica, added to every id column (the demo's ids are < 1e8)
ID_COLUMNS = (
    "subject_id",
    "hadm_id",
    "icustay_id",
    "order_id",
    "link_order_id",
    "micro_specimen_id",
)

CHILD = label_child(
    "from data_prep.sources import ReaderOptions, meds",
    "meds.extract(db, ext, ReaderOptions(lookback_hours=lp.data_lookback_hours), progress=False)",
    '"events": rep["rows_read"], "shards": len(rep["shards"]),',
)


def _offset(t: pa.Table, k: int) -> pa.Table:
    if k == 0:
        return t
    for c in ID_COLUMNS:
        if c in t.column_names:
            i = t.column_names.index(c)
            typ = t.schema.field(c).type
            v = pc.add(t.column(c).cast(pa.int64()), pa.scalar(k * OFFSET, pa.int64()))
            t = t.set_column(i, t.schema.field(c), v.cast(typ))
    return t


def replicate(demo: Path, root: Path, n: int) -> int:
    """Write the replicated MEDS root (atomically); returns the number of events (rows)."""
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shards = sorted((demo / "data").rglob("*.parquet"))
    listed: dict[str, list[int]] = {}
    events = 0
    for src in shards:
        split = src.parent.relative_to(demo / "data")
        t = pq.read_table(src)
        subjects = pc.unique(t.column("subject_id")).to_pylist()
        for k in range(n):
            name = (split / str(k)).as_posix()
            dst = tmp / "data" / f"{name}.parquet"
            dst.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(_offset(t, k), dst)
            listed[name] = [s + k * OFFSET for s in subjects]
            events += t.num_rows
    meta, out = demo / "metadata", tmp / "metadata"
    out.mkdir(parents=True)
    for f in ("dataset.json", "codes.parquet"):
        shutil.copy(meta / f, out / f)
    if (meta / "subject_splits.parquet").exists():
        sp = pq.read_table(meta / "subject_splits.parquet")
        pq.write_table(
            pa.concat_tables([_offset(sp, k) for k in range(n)]), out / "subject_splits.parquet"
        )
    (out / ".shards.json").write_text(json.dumps(listed))
    (tmp / "rows.json").write_text(json.dumps({"events": events, "replicas": n}))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return events


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10,47", help="replicas of the demo; 47 ~ 50 M MEDS events")
    ap.add_argument("--work", default="/tmp/bench_meds")
    ap.add_argument("--demo", default=str(SHARED / "mimic4-demo-meds" / "with-microbiology"))
    ap.add_argument("--out", default=str(OUT), help="markdown file to write")
    ap.add_argument("--keep", action="store_true", help="keep the generated datasets")
    ap.add_argument("--full", action="store_true", help="accepted for run_all.py")
    args = ap.parse_args()
    work, demo = Path(args.work), Path(args.demo)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        root = work / f"x{n}"
        if (root / "rows.json").exists():
            events = json.loads((root / "rows.json").read_text())["events"]
        else:
            t0 = time.time()
            events = replicate(demo, root, n)
            print(f"replicated the demo {n} times in {time.time() - t0:.0f} s", flush=True)
        ext = work / f"ext{n}"
        shutil.rmtree(ext, ignore_errors=True)
        ext.mkdir(parents=True)
        r = run_child(CHILD, str(root), str(ext))
        assert r["events"] == events, (r["events"], events)
        r.update(replicas=n)
        r["extract_events_per_s"] = events / r["extract_s"]
        r["events_per_s"] = events / (r["extract_s"] + r["label_s"])
        rows.append(r)
        print(r, flush=True)
        shutil.rmtree(ext, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    sizes = [int(x) for x in args.sizes.split(",")]
    smoke = (
        [
            f"**Smoke run at a tiny size ({args.sizes} replicas), only to check that the benchmark "
            "works: not the full-size measurement (`--sizes 10,47`, ~50 M MEDS events); small sizes "
            "are dominated by fixed costs.**",
            "",
        ]
        if max(sizes) < 47
        else []
    )
    lines = [
        "# MEDS extract + Sepsis-3 labels on MEDS datasets made from the MIMIC-IV demo",
        "",
        *smoke,
        f"Command: `python benchmarks/bench_meds.py --sizes {args.sizes}`",
        machine_line() + " Data: the shards of mimic4-demo-meds/with-microbiology "
        "replicated N times (data/<split>/<k>.parquet, subject and ETL id columns offset per "
        "replica, metadata kept); generation is not included. Each size runs `meds.extract` + "
        "`derive_labels` in a fresh child process (peak RSS is that child's).",
        "",
        "| replicas | shards | MEDS events | extract s | label s | events/s extract | "
        "events/s end to end | stays | onsets | hourly label rows | peak RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['replicas']:,} | {r['shards']:,} | {r['events']:,} | {r['extract_s']:.1f} | "
            f"{r['label_s']:.1f} | {r['extract_events_per_s']:,.0f} | {r['events_per_s']:,.0f} | "
            f"{r['stays']:,} | {r['onsets']:,} | {r['label_rows']:,} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "Targets (issue 13): >= 2,000,000 MEDS events/s, peak RSS < 3 GB at any size.",
    ]
    write_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
