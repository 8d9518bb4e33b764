"""Extract AND label a synthetic MIMIC-III database end to end, at two sizes (issue 3).

For each size: generate the database (not timed as part of the pipeline), then in a fresh
child process run `mimic3.extract` and `sepsis3.derive_labels` and record wall time,
CHARTEVENTS rows per second end to end (rows / (extract + label seconds)) and the child's
peak RSS. Writes docs/benchmarks/labels.md.

Usage: python benchmarks/bench_labels.py [--sizes 10000,90000] [--work /tmp/bench_labels] [--out PATH]
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from child import label_child, machine_line, run_child, write_markdown  # noqa: E402

OUT = ROOT / "docs" / "benchmarks" / "labels.md"

CHILD = label_child(
    "from data_prep.sources import mimic3",
    "mimic3.extract(db, ext, mimic3.ReaderParams(), progress=False)",
)


def _count_rows(path: Path) -> int:
    with gzip.open(path, "rb") as fh:
        return sum(1 for _ in fh) - 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--sizes", default="10000,90000", help="patients; 90,000 ~ 50 M CHARTEVENTS rows"
    )
    ap.add_argument("--work", default="/tmp/bench_labels")
    ap.add_argument("--out", default=str(OUT), help="markdown file to write")
    ap.add_argument("--full", action="store_true", help="accepted for run_all.py")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from data_prep.sources.synthetic import SyntheticParams, generate

    work = Path(args.work)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        db = work / f"db{n}"
        if not (db / "CHARTEVENTS.csv.gz").exists():
            t0 = time.time()
            generate(db, SyntheticParams(n_patients=n, seed=0), progress=True)
            print(f"generated {n} patients in {time.time() - t0:.0f} s", flush=True)
        chart_rows = _count_rows(db / "CHARTEVENTS.csv.gz")
        r = run_child(CHILD, str(db), str(work / f"ext{n}"))
        r.update(n_patients=n, chart_rows=chart_rows)
        r["rows_per_s"] = chart_rows / (r["extract_s"] + r["label_s"])
        rows.append(r)
        print(r, flush=True)
    lines = [
        "# Extract + Sepsis-3 labels on synthetic MIMIC-III databases",
        "",
        f"Command: `python benchmarks/bench_labels.py --sizes {args.sizes}`",
        machine_line() + " Each size runs extract + derive_labels in a fresh child "
        "process (peak RSS is that child's); generation is not included.",
        "",
        "| patients | CHARTEVENTS rows | extract s | label s | CHARTEVENTS rows/s end to end | stays | onsets | "
        "hourly label rows | peak RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_patients']:,} | {r['chart_rows']:,} | {r['extract_s']:.1f} | {r['label_s']:.1f} | "
            f"{r['rows_per_s']:,.0f} | {r['stays']:,} | {r['onsets']:,} | {r['label_rows']:,} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "Targets (issue 3): >= 1,000,000 CHARTEVENTS rows/s end to end, peak RSS < 3 GB at any size.",
    ]
    write_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
