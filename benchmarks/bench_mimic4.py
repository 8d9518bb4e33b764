"""Extract AND label a MIMIC-IV-layout database of full size, made from the demo (issue 13).

For each size N: the demo's hosp/ and icu/ tables that the mimic4 reader reads
(data_prep/sources/mimic4_tables.TABLE_COLUMNS), each replicated N times with the subject,
admission, stay, specimen, pharmacy and order ids offset per replica (icu/chartevents from
the demo's chartevents_reconstructed_from_meds), written as gzip CSVs (not timed). Then in a
fresh child process `mimic4.extract_into` and `sepsis3.derive_labels`, recording wall time,
chartevents rows per second end to end (rows / (extract + label seconds)) and the child's
peak RSS. Writes docs/benchmarks/mimic4.md.

Usage: python benchmarks/bench_mimic4.py [--sizes 10,75] [--work /tmp/bench_mimic4] [--out PATH]
(75 replicas = 50.2 M chartevents rows; the demo has 668,862.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from child import label_child, machine_line, run_child, write_markdown  # noqa: E402

OUT = ROOT / "docs" / "benchmarks" / "mimic4.md"
SHARED = Path(os.environ.get("SEPSIS_SHARED_DATA", ROOT.parent / "shared" / "data"))
OFFSET = 100_000_000  # per replica, added to every id column (the demo's ids are < 1e8)
ID_COLUMNS = (
    "subject_id",
    "hadm_id",
    "stay_id",
    "specimen_id",
    "micro_specimen_id",
    "pharmacy_id",
    "labevent_id",
    "microevent_id",
    "orderid",
    "linkorderid",
)

CHILD = label_child(
    "from data_prep.sources import mimic4\n"
    "from data_prep.sources.mimic4_tables import Mimic4Params",
    "mimic4.extract_into(db, ext, Mimic4Params(lab_lookback_hours=lp.data_lookback_hours), "
    "progress=False)",
    '"chart_rows_read": rep.tables["chartevents"].rows_read,',
)


def _read_strings(path: Path) -> pa.Table:
    """A CSV with every column as string (empty cells null), so it is written back as read."""
    names = pcsv.open_csv(path).schema.names
    return pcsv.read_csv(
        path,
        convert_options=pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=True
        ),
    )


def _offset(t: pa.Table, k: int) -> pa.Table:
    if k == 0:
        return t
    for c in ID_COLUMNS:
        if c in t.column_names:
            i = t.column_names.index(c)
            v = pc.add(t.column(c).cast(pa.int64()), pa.scalar(k * OFFSET, pa.int64()))
            t = t.set_column(i, c, v.cast(pa.string()))
    return t


def replicate(demo: Path, db: Path, n: int) -> int:
    """Write the replicated tables into `db` (atomically); returns the chartevents rows."""
    sys.path.insert(0, str(ROOT))
    from data_prep.sources import mimic4_tables as T

    tmp = db.with_name(db.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    chart_rows = 0
    for table, (module, _cols, _opt) in T.TABLE_COLUMNS.items():
        src, _name = T.table_path(demo, table)
        dst = tmp / module / f"{table}.csv.gz"
        dst.parent.mkdir(parents=True, exist_ok=True)
        t = _read_strings(src)
        z = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip, fast: generation is not timed
        with open(dst, "wb") as fh:
            for k in range(n):
                buf = pa.BufferOutputStream()
                pcsv.write_csv(_offset(t, k), buf, pcsv.WriteOptions(include_header=k == 0))
                fh.write(z.compress(buf.getvalue().to_pybytes()))
            fh.write(z.flush())
        if table == "chartevents":
            chart_rows = t.num_rows * n
    (tmp / "rows.json").write_text(json.dumps({"chartevents": chart_rows, "replicas": n}))
    shutil.rmtree(db, ignore_errors=True)
    tmp.rename(db)
    return chart_rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--sizes", default="10,75", help="replicas of the demo; 75 ~ 50 M chartevents rows"
    )
    ap.add_argument("--work", default="/tmp/bench_mimic4")
    ap.add_argument("--demo", default=str(SHARED / "mimic4-demo"))
    ap.add_argument("--out", default=str(OUT), help="markdown file to write")
    ap.add_argument("--keep", action="store_true", help="keep the generated databases")
    ap.add_argument("--full", action="store_true", help="accepted for run_all.py")
    args = ap.parse_args()
    work, demo = Path(args.work), Path(args.demo)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        db = work / f"x{n}"
        if (db / "rows.json").exists():
            chart_rows = json.loads((db / "rows.json").read_text())["chartevents"]
        else:
            t0 = time.time()
            chart_rows = replicate(demo, db, n)
            print(f"replicated the demo {n} times in {time.time() - t0:.0f} s", flush=True)
        ext = work / f"ext{n}"
        shutil.rmtree(ext, ignore_errors=True)
        r = run_child(CHILD, str(db), str(ext))
        r.update(replicas=n, chart_rows=chart_rows)
        r["rows_per_s"] = chart_rows / (r["extract_s"] + r["label_s"])
        rows.append(r)
        print(r, flush=True)
        shutil.rmtree(ext, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(db, ignore_errors=True)
    sizes = [int(x) for x in args.sizes.split(",")]
    smoke = (
        [
            f"**Smoke run at a tiny size ({args.sizes} replicas), only to check that the benchmark "
            "works: not the full-size measurement (`--sizes 10,75`, ~50 M chartevents rows); small sizes "
            "are dominated by fixed costs.**",
            "",
        ]
        if max(sizes) < 75
        else []
    )
    lines = [
        "# Extract + Sepsis-3 labels on MIMIC-IV-layout databases made from the demo",
        "",
        *smoke,
        f"Command: `python benchmarks/bench_mimic4.py --sizes {args.sizes}`",
        machine_line() + " Data: the MIMIC-IV demo's tables that the reader reads, "
        "replicated N times with every id column offset per replica (icu/chartevents from "
        "chartevents_reconstructed_from_meds), gzip CSV; generation is not included. Each size runs "
        "`mimic4.extract_into` + `derive_labels` in a fresh child process (peak RSS is that child's).",
        "",
        "| replicas | chartevents rows | extract s | label s | chartevents rows/s end to end | stays | "
        "onsets | hourly label rows | peak RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['replicas']:,} | {r['chart_rows']:,} | {r['extract_s']:.1f} | {r['label_s']:.1f} | "
            f"{r['rows_per_s']:,.0f} | {r['stays']:,} | {r['onsets']:,} | {r['label_rows']:,} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "Targets (issue 13): >= 1,000,000 chartevents rows/s end to end, peak RSS < 3 GB at any size.",
    ]
    write_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
