"""Benchmark the streaming MIMIC-III reader on generated CHARTEVENTS-shaped `.csv.gz` files.

Target (issue 3): >= 1 million CHARTEVENTS rows/s end to end from `.csv.gz` on 2 cores, and
peak RSS < 3 GB whatever the input size, shown at two sizes. For each size the script writes a
MIMIC-III folder (CHARTEVENTS.csv.gz of N rows with the full MIMIC column set, a realistic
value mix and ~35% rows with ITEMIDs the pipeline does not need, plus small companion
tables), runs `extract()` in a fresh subprocess, and records the CHARTEVENTS rows/s, the end
to end time and the child's peak RSS (ru_maxrss from wait4). As the ceiling it measures the
raw single-threaded gunzip rate of the same file (pyarrow's gzip stream, counted in rows/s).

Usage: python benchmarks/bench_extract.py [--sizes 5000000,20000000] [--full] [--workdir DIR]
`--full` adds 50 M rows. Generated files are cached in --workdir (default /tmp/bench_extract).
Writes docs/benchmarks/extract.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from child import write_markdown  # noqa: E402

from data_prep.concepts import variables as V  # noqa: E402
from data_prep.concepts.units import UnitChecker  # noqa: E402
from data_prep.sources.synthetic import COLUMNS  # noqa: E402  (MIMIC-III v1.4 column order)

CHART_COLUMNS = list(COLUMNS["CHARTEVENTS"])
N_STAYS = 20_000
CHUNK = 1_000_000
T0 = np.datetime64("2150-01-01T00:00:00", "s")


def _stays(n_stays: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    subject = np.arange(n_stays, dtype=np.int64) + 10_000
    intime = T0 + rng.integers(0, 50 * 365 * 86400, n_stays).astype("timedelta64[s]")
    los_s = rng.integers(12 * 3600, 20 * 86400, n_stays)
    return {
        "subject": subject,
        "hadm": subject + 100_000,
        "stay": subject + 200_000,
        "intime": intime,
        "outtime": intime + los_s.astype("timedelta64[s]"),
        "mv": rng.random(n_stays) < 0.5,
    }


def _write_companions(folder: Path, st: dict[str, np.ndarray]) -> None:
    """ICUSTAYS, PATIENTS, ADMISSIONS for the stays, and header-only versions of the other tables."""
    n = len(st["stay"])

    def fmt(t: np.ndarray) -> list[str]:
        return [str(x).replace("T", " ") for x in t]

    rows = [
        "ROW_ID,SUBJECT_ID,HADM_ID,ICUSTAY_ID,DBSOURCE,FIRST_CAREUNIT,LAST_CAREUNIT,FIRST_WARDID,"
        "LAST_WARDID,INTIME,OUTTIME,LOS"
    ]
    for i, (a, b) in enumerate(zip(fmt(st["intime"]), fmt(st["outtime"]), strict=True)):
        db = "metavision" if st["mv"][i] else "carevue"
        rows.append(
            f"{i},{st['subject'][i]},{st['hadm'][i]},{st['stay'][i]},{db},MICU,MICU,1,1,{a},{b},1.0"
        )
    (folder / "ICUSTAYS.csv").write_text("\n".join(rows) + "\n")
    rows = ["ROW_ID,SUBJECT_ID,GENDER,DOB,DOD,DOD_HOSP,DOD_SSN,EXPIRE_FLAG"]
    for i in range(n):
        dob = str(st["intime"][i] - np.timedelta64(60 * 365 * 86400, "s"))[:10]
        rows.append(f"{i},{st['subject'][i]},{'MF'[i % 2]},{dob} 00:00:00,,,,0")
    (folder / "PATIENTS.csv").write_text("\n".join(rows) + "\n")
    rows = ["ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,HOSPITAL_EXPIRE_FLAG"]
    for i, a in enumerate(fmt(st["intime"])):
        rows.append(f"{i},{st['subject'][i]},{st['hadm'][i]},{a},0")
    (folder / "ADMISSIONS.csv").write_text("\n".join(rows) + "\n")
    headers = {
        "LABEVENTS": "ROW_ID,SUBJECT_ID,HADM_ID,ITEMID,CHARTTIME,VALUE,VALUENUM,VALUEUOM,FLAG",
        "OUTPUTEVENTS": "ROW_ID,SUBJECT_ID,HADM_ID,ICUSTAY_ID,CHARTTIME,ITEMID,VALUE,VALUEUOM",
        "INPUTEVENTS_MV": "ROW_ID,SUBJECT_ID,HADM_ID,ICUSTAY_ID,STARTTIME,ENDTIME,ITEMID,RATE,RATEUOM,"
        "PATIENTWEIGHT,STATUSDESCRIPTION",
        "INPUTEVENTS_CV": "ROW_ID,SUBJECT_ID,HADM_ID,ICUSTAY_ID,CHARTTIME,ITEMID,RATE,RATEUOM",
        "PRESCRIPTIONS": "ROW_ID,SUBJECT_ID,HADM_ID,ICUSTAY_ID,STARTDATE,ENDDATE,DRUG_TYPE,DRUG,ROUTE",
        "MICROBIOLOGYEVENTS": "ROW_ID,SUBJECT_ID,HADM_ID,CHARTDATE,CHARTTIME,SPEC_ITEMID,SPEC_TYPE_DESC",
        "DIAGNOSES_ICD": "ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE",
    }
    # LABEVENTS and DIAGNOSES_ICD are required tables: one row each (an empty one is an error)
    first = fmt(st["intime"][:1])[0]
    rows = {
        "LABEVENTS": f"1,{st['subject'][0]},{st['hadm'][0]},50912,{first},1.0,1.0,mg/dL,",
        "DIAGNOSES_ICD": f"1,{st['subject'][0]},{st['hadm'][0]},1,4019",
    }
    for name, header in headers.items():
        (folder / f"{name}.csv").write_text(
            header + "\n" + (rows[name] + "\n" if name in rows else "")
        )


def _chart_chunk(
    start: int, n: int, st: dict[str, np.ndarray], rng: np.random.Generator
) -> pa.Table:
    """n CHARTEVENTS rows: ~65% needed ITEMIDs, numeric values with some text, MIMIC column set."""
    needed = np.array(sorted(V.chart_itemids_needed()), np.int64)
    other = np.array(
        [
            2,
            3,
            5,
            26,
            31,
            32,
            80,
            87,
            113,
            161,
            184 + 1000,
            212,
            432,
            467,
            547,
            550,
            593,
            599,
            617,
            640,
            644,
            674,
            707,
            1125,
            1126,
            1484,
            3353,
            3450,
            5815,
            5817,
            5819,
            5820,
            8549,
            220046,
            220047,
            220048,
            223751,
            223752,
            223791,
            223792,
            223794,
            223795,
            224015,
            224054,
            224055,
            224056,
            224058,
            224059,
            224080,
            224082,
            224084,
            224086,
            224087,
            224088,
            224089,
            224093,
            226531,
            227944,
            228096,
        ],
        np.int64,
    )
    stay_i = rng.integers(0, len(st["stay"]), n)
    wanted = rng.random(n) < 0.65
    pick_needed = rng.integers(0, len(needed), n)
    itemid = np.where(wanted, needed[pick_needed], other[rng.integers(0, len(other), n)])
    span = (st["outtime"][stay_i] - st["intime"][stay_i]).astype(np.int64)
    charttime = st["intime"][stay_i] + (rng.random(n) * span).astype("timedelta64[s]")
    storetime = charttime + rng.integers(0, 3600, n).astype("timedelta64[s]")
    numeric = rng.random(n) < 0.8
    valuenum = np.round(rng.normal(80, 25, n), 1)
    vnum = pa.array(valuenum, mask=~numeric)
    text_vocab = pa.array(
        [
            "Normal <3 secs",
            "Sinus Rhythm",
            "Oriented x 3",
            "No Response-ETT",
            "Assist Control",
            "Clear",
            "Diminished",
            "None",
            "Other/Remarks",
            "Yes",
        ]
    )
    text = pc.take(text_vocab, pa.array(rng.integers(0, len(text_vocab), n)))
    value = pc.if_else(pa.array(numeric), pc.cast(vnum.fill_null(0.0), pa.string()), text)
    # needed items get their expected unit (an unknown one would stop the reader) or, 10%,
    # none; the other items a random one
    units = UnitChecker("chartevents")
    item_uom = pa.array([units.expected_unit(V.unit_groups("chartevents")[i]) for i in needed])
    uom_vocab = pa.array(["bpm", "mmHg", "%", "insp/min", "Deg. F", None])
    expected = pc.take(item_uom, pa.array(pick_needed))
    uom = pc.if_else(
        pa.array(wanted),
        pc.if_else(pa.array(rng.random(n) < 0.9), expected, pa.scalar(None, pa.string())),
        pc.take(uom_vocab, pa.array(rng.integers(0, len(uom_vocab), n))),
    )
    mv = st["mv"][stay_i]
    return pa.table(
        {
            "ROW_ID": pa.array(np.arange(start, start + n, dtype=np.int64)),
            "SUBJECT_ID": pa.array(st["subject"][stay_i]),
            "HADM_ID": pa.array(st["hadm"][stay_i]),
            "ICUSTAY_ID": pa.array(st["stay"][stay_i]),
            "ITEMID": pa.array(itemid),
            "CHARTTIME": pa.array(charttime),
            "STORETIME": pa.array(storetime),
            "CGID": pa.array(rng.integers(14000, 21000, n)),
            "VALUE": value,
            "VALUENUM": vnum,
            "VALUEUOM": uom,
            "WARNING": pa.array(np.where(mv, 0, 0), mask=~mv),
            "ERROR": pa.array(np.where(mv, 0, 0), mask=~mv),
            "RESULTSTATUS": pa.nulls(n, pa.string()),
            "STOPPED": pc.if_else(
                pa.array(mv), pa.scalar(None, pa.string()), pa.scalar("NotStopd")
            ),
        }
    )


def generate(folder: Path, n_rows: int, seed: int = 0) -> Path:
    """Write a MIMIC-III folder whose CHARTEVENTS.csv.gz has n_rows rows (cached by a marker)."""
    marker = folder / ".complete"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    st = _stays(N_STAYS, rng)
    _write_companions(folder, st)
    t0 = time.perf_counter()
    with open(folder / "CHARTEVENTS.csv.gz", "wb") as fh:
        gz = subprocess.Popen(["gzip", "-6", "-c"], stdin=subprocess.PIPE, stdout=fh)
        assert gz.stdin is not None
        gz.stdin.write((",".join(CHART_COLUMNS) + "\n").encode())
        opts = pacsv.WriteOptions(include_header=False)
        for start in range(0, n_rows, CHUNK):
            n = min(CHUNK, n_rows - start)
            sink = pa.BufferOutputStream()
            pacsv.write_csv(_chart_chunk(start, n, st, rng), sink, opts)
            gz.stdin.write(sink.getvalue().to_pybytes())
        gz.stdin.close()
        if gz.wait():
            raise RuntimeError("gzip failed")
    print(f"generated {n_rows:,} rows in {time.perf_counter() - t0:.0f} s -> {folder}", flush=True)
    marker.write_text(str(n_rows))
    return folder


def gunzip_rate(path: Path, n_rows: int) -> tuple[float, float]:
    """Seconds and rows/s to only decompress the file (pyarrow gzip stream, one thread)."""
    t0 = time.perf_counter()
    with pa.CompressedInputStream(pa.OSFile(str(path)), "gzip") as s:
        while s.read(8 << 20):
            pass
    sec = time.perf_counter() - t0
    return sec, n_rows / sec


CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from data_prep.sources.mimic3 import extract, ReaderParams
t0 = time.perf_counter()
rep = extract(Path(sys.argv[1]), Path(sys.argv[2]), ReaderParams(), progress=False)
ce = rep.tables["CHARTEVENTS"]
print(json.dumps({"wall": time.perf_counter() - t0, "chart_rows": ce.rows_read, "chart_kept": ce.rows_kept,
                  "chart_s": ce.seconds, "chart_rows_s": ce.rows_per_s, "peak_rss_mb": rep.peak_rss_mb}))
"""


def run_extract(folder: Path, out: Path) -> dict:
    """extract() in a fresh subprocess; adds the child's peak RSS from wait4."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), str(out), str(ROOT)], stdout=subprocess.PIPE
    )
    stdout = p.stdout.read()  # type: ignore[union-attr]
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise RuntimeError(f"extract failed with exit code {p.returncode}")
    res = json.loads(stdout.decode().strip().splitlines()[-1])
    res["child_maxrss_mb"] = ru.ru_maxrss / 1024.0
    shutil.rmtree(out, ignore_errors=True)
    return res


NOTES = """## What limits it

* **gzip is single-threaded.** One `.csv.gz` stream cannot be decompressed in parallel; the
  gunzip-only column is the ceiling for any reader of the file on this machine. The reader
  decompresses in its own thread (zlib releases the GIL) while pyarrow parses the previous
  chunk on both cores, so decompression and parsing overlap; the Python batch handler (ITEMID
  `is_in`, one combined stay/error/window filter, the parquet append) runs between parses.
  On an idle machine the reader / gunzip ratio is ~0.5 (about 1.6 M rows/s; one profile of
  5 M rows: 1.3 s CSV parsing, 1.2 s handler, 0.25 s parquet writes, 0.2 s waiting on
  gunzip). With other jobs on the 2 cores the gunzip thread is starved first and rows/s
  drops towards 1.0 M: compare the rows within one run, not across runs.
* **Memory is flat in the input size.** pyarrow's `open_csv` streaming reader reads ahead
  without bound when the consumer is slower than the decompressor (its allocations grew
  ~40 MB/s on CHARTEVENTS, 920 MiB at 20 M rows); the reader therefore feeds pyarrow
  32 MiB chunks of whole lines from a queue of at most two, and keeps only per-stay state
  (has_chart flags, first weight). Parquet row groups are `batch_rows` (2 M) rows. Peak RSS
  varies between runs; in one earlier run (under load) it rose from 468 to 556 MiB between
  5 M and 50 M rows (allocator fragmentation and parquet footer metadata are the suspects;
  not profiled further): far from 3 GB, but not proven exactly flat.
* Full MIMIC-III CHARTEVENTS (330 M rows, ~4 GB gzipped) extrapolates to ~3.5-5.5 min at
  1.0-1.6 M rows/s. A faster inflate (python-isal / igzip, ~2-3x zlib) would raise the
  ceiling; it is not a dependency of the project.
"""


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes", default="5000000,20000000", help="comma-separated CHARTEVENTS row counts"
    )
    ap.add_argument("--full", action="store_true", help="add 50 M rows")
    ap.add_argument(
        "--workdir", default="/tmp/bench_extract", help="where generated data is cached"
    )
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "extract.md"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.full:
        sizes.append(50_000_000)
    work = Path(args.workdir)
    results = []
    for n in sizes:
        folder = generate(work / f"chart_{n}", n)
        gz = folder / "CHARTEVENTS.csv.gz"
        g_sec, g_rate = gunzip_rate(gz, n)
        res = run_extract(folder, work / f"out_{n}")
        res.update(n=n, gz_mb=gz.stat().st_size / 2**20, gunzip_s=g_sec, gunzip_rows_s=g_rate)
        print(json.dumps(res), flush=True)
        results.append(res)
    cmd = "python benchmarks/bench_extract.py " + " ".join(sys.argv[1:])
    lines = [
        "# Streaming MIMIC-III reader (`data_prep.sources.mimic3.extract`)",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
        f"pyarrow {pa.__version__}, Python {platform.python_version()}; shared machine, timings are noisy.",
        "",
        "Generated CHARTEVENTS.csv.gz (gzip -6, full MIMIC-III column set, ~65% rows with needed ITEMIDs, "
        f"{N_STAYS:,} stays). Each size: `extract()` in a fresh subprocess, default `ReaderParams()` "
        "(batch_rows 2,000,000). CHARTEVENTS rows/s = rows read / seconds spent on that table "
        "(decompress + parse + filter + convert + parquet write); gunzip = decompressing the same file "
        "alone in one thread, the ceiling for any reader of a single .gz stream.",
        "",
        "| rows | .gz MiB | CHARTEVENTS s | rows/s | gunzip-only rows/s | reader / gunzip | end-to-end s | "
        "peak RSS MiB (child) | rows kept |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['n']:,} | {r['gz_mb']:.0f} | {r['chart_s']:.1f} | {r['chart_rows_s']:,.0f} | "
            f"{r['gunzip_rows_s']:,.0f} | {r['chart_rows_s'] / r['gunzip_rows_s']:.2f} | {r['wall']:.1f} | "
            f"{r['child_maxrss_mb']:,.0f} | {r['chart_kept']:,} |"
        )
    met_speed = all(r["chart_rows_s"] >= 1e6 for r in results)
    met_mem = all(r["child_maxrss_mb"] < 3000 for r in results)
    lines += [
        "",
        f"Target >= 1,000,000 rows/s: {'met' if met_speed else 'NOT met'}; "
        f"peak RSS < 3 GB: {'met' if met_mem else 'NOT met'}.",
        "",
        NOTES,
    ]
    write_markdown(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
