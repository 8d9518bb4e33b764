"""Streaming MIMIC-III reader: raw PhysioNet CSV tables -> `prepared/extracted/` parquet files.

`extract(data_dir, out_dir, params)` reads a folder of MIMIC-III tables (`.csv` or `.csv.gz`,
upper- or lower-case file and column names, full timestamps or date-only columns) and writes
the artifacts described in docs/CONTRACTS.md ("MIMIC-III extraction"): stays, chart, lab,
vasopressors, urine, prescriptions, microbiology, diagnoses and an extraction report.

The big event tables (CHARTEVENTS has ~330 M rows) are streamed with `pyarrow.csv.open_csv`
in record batches: only the needed columns are decoded, the ITEMID filter runs on the integer
column before any timestamp parsing, and each filtered batch is appended to a parquet writer,
so peak memory depends on the batch size, not on the table size.

Malformed values are found in two passes: the fast pass lets the CSV decoder type the numeric
columns; if it fails, the table is re-read with every column as a string and converted batch by
batch, which can name the data row, column and value (or skip and count the row under
`on_bad_rows = "skip-and-count"`). Nothing is dropped without being counted in the report.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import queue
import resource
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from data_prep.concepts import variables as V
from data_prep.concepts.infection import mv_antibiotic_items
from data_prep.concepts.units import UnitChecker
from data_prep.errors import DataError
from data_prep.ids import locate
from data_prep.sources.mimic3_checks import (  # noqa: F401  (error types re-exported)
    REQUIRED_TABLES,
    STREAM_ERRORS,
    CorruptFileError,
    EmptyTableError,
    MalformedRowError,
    MissingTableError,
    check_units,
    disk_full,
    stream_error,
    utf8_error,
    warn_no_unit_column,
)

log = logging.getLogger(__name__)

SOURCE = "mimic3"
# Chart rows of a stay are kept inside [intime - 24 h, outtime + 1 h] (pre-admission vitals
# and documentation a little after discharge are common; anything further is another visit).
CHART_BEFORE_HOURS = 24.0
CHART_AFTER_HOURS = 1.0
CV_MAX_HOURS = 4.0  # a CareVue rate holds until the next charting of the drug, at most this long
AGE_CAP = 91.4  # MIMIC-III shifts ages > 89 to ~300 years; the customary median replacement
WEIGHT_MAX_KG = 500.0
LB_TO_KG = 0.45359237
US_PER_HOUR = 3_600_000_000
US_PER_YEAR = 365.25 * 24 * US_PER_HOUR

TS = pa.timestamp("us")
I32, I64, F64, STR, BOOL = pa.int32(), pa.int64(), pa.float64(), pa.string(), pa.bool_()

STAYS_SCHEMA = pa.schema(
    [
        ("stay_id", I64),
        ("patient_id", I64),
        ("hadm_id", I64),
        ("source", STR),
        ("intime", TS),
        ("outtime", TS),
        ("los_hours", F64),
        ("age", F64),
        ("gender", STR),
        ("dbsource", STR),
        ("unit", STR),
        ("died", BOOL),
        ("has_chart", BOOL),
        ("weight_kg", F64),
    ]
)
CHART_SCHEMA = pa.schema(
    [("stay_id", I64), ("time", TS), ("itemid", I32), ("valuenum", F64), ("value", STR)]
)
LAB_SCHEMA = pa.schema([("stay_id", I64), ("time", TS), ("itemid", I32), ("valuenum", F64)])
VASO_SCHEMA = pa.schema(
    [("stay_id", I64), ("starttime", TS), ("endtime", TS), ("drug", STR), ("rate", F64)]
)
URINE_SCHEMA = pa.schema([("stay_id", I64), ("time", TS), ("value", F64)])
PRESCRIPTIONS_SCHEMA = pa.schema(
    [
        ("subject_id", I64),
        ("hadm_id", I64),
        ("startdate", TS),
        ("enddate", TS),
        ("drug", STR),
        ("drug_type", STR),
        ("route", STR),
    ]
)
MICRO_SCHEMA = pa.schema(
    [
        ("subject_id", I64),
        ("hadm_id", I64),
        ("charttime", TS),
        ("chartdate", TS),
        ("spec_type_desc", STR),
    ]
)
DIAG_SCHEMA = pa.schema([("hadm_id", I64), ("icd9_code", STR)])
ABX_MV_SCHEMA = pa.schema([("stay_id", I64), ("time", TS), ("itemid", I32), ("drug", STR)])

SCHEMAS: dict[str, pa.Schema] = {
    "stays": STAYS_SCHEMA,
    "chart": CHART_SCHEMA,
    "lab": LAB_SCHEMA,
    "vasopressors": VASO_SCHEMA,
    "urine": URINE_SCHEMA,
    "prescriptions": PRESCRIPTIONS_SCHEMA,
    "microbiology": MICRO_SCHEMA,
    "diagnoses": DIAG_SCHEMA,
    "antibiotics_mv": ABX_MV_SCHEMA,
}

# Chart items whose text `value` the concepts need (GCS verbal "No Response-ETT", vent type/mode).
CHART_TEXT_ITEMIDS = frozenset({*V.GCS_VERBAL, 720, 223848, 223849})
MV_VASO_ITEMIDS = frozenset({221906, 221289, 221662, 221653})
CV_VASO_ITEMIDS = frozenset(i for i in V.VASOPRESSOR_BY_ITEMID if i not in MV_VASO_ITEMIDS)
# Unit assumed when `rateuom` is empty (mimic-code conventions): CareVue norepinephrine 30047
# and epinephrine 30044 are charted in mcg/min, every other vasopressor item in mcg/kg/min.
DEFAULT_RATE_UNIT = {i: "mcgkgmin" for i in V.VASOPRESSOR_BY_ITEMID} | {
    30047: "mcgmin",
    30044: "mcgmin",
}
# Normalised unit -> (factor to mcg, divide by weight?, per-hour?)
RATE_UNITS: dict[str, tuple[float, bool, bool]] = {
    "mcgkgmin": (1.0, False, False),
    "mcgmin": (1.0, True, False),
    "mgkgmin": (1000.0, False, False),
    "mgmin": (1000.0, True, False),
    "mcgkghr": (1.0, False, True),
    "mcghr": (1.0, True, True),
    "mgkghr": (1000.0, False, True),
    "mghr": (1000.0, True, True),
    "ngkgmin": (1e-3, False, False),
    "ngmin": (1e-3, True, False),
}

# Column kinds: "i32", "i64", "f64" are numeric (typed by the CSV decoder in the fast pass and
# validated on every row); "ts" and "str" are read as strings, "ts" parsed after the filters.
_KIND_TYPE = {"i32": I32, "i64": I64, "f64": F64, "ts": TS, "str": STR}
_NUMERIC = ("i32", "i64", "f64")

# table -> {column (lower case): kind}; `_OPTIONAL` columns may be absent.
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "ICUSTAYS": {
        "subject_id": "i64",
        "hadm_id": "i64",
        "icustay_id": "i64",
        "dbsource": "str",
        "first_careunit": "str",
        "intime": "ts",
        "outtime": "ts",
    },
    "PATIENTS": {"subject_id": "i64", "gender": "str", "dob": "ts"},
    "ADMISSIONS": {"hadm_id": "i64", "admittime": "ts", "hospital_expire_flag": "i64"},
    "CHARTEVENTS": {
        "icustay_id": "i64",
        "itemid": "i32",
        "charttime": "ts",
        "valuenum": "f64",
        "value": "str",
        "error": "str",
        "valueuom": "str",
    },
    "LABEVENTS": {
        "subject_id": "i64",
        "itemid": "i32",
        "charttime": "ts",
        "value": "str",
        "valuenum": "f64",
        "valueuom": "str",
    },
    "OUTPUTEVENTS": {"icustay_id": "i64", "itemid": "i32", "charttime": "ts", "value": "f64"},
    "INPUTEVENTS_MV": {
        "icustay_id": "i64",
        "itemid": "i32",
        "starttime": "ts",
        "endtime": "ts",
        "rate": "f64",
        "rateuom": "str",
        "patientweight": "f64",
        "statusdescription": "str",
    },
    "INPUTEVENTS_CV": {
        "icustay_id": "i64",
        "itemid": "i32",
        "charttime": "ts",
        "rate": "f64",
        "rateuom": "str",
    },
    "PRESCRIPTIONS": {
        "subject_id": "i64",
        "hadm_id": "i64",
        "startdate": "ts",
        "enddate": "ts",
        "drug": "str",
        "drug_type": "str",
        "route": "str",
    },
    "MICROBIOLOGYEVENTS": {
        "subject_id": "i64",
        "hadm_id": "i64",
        "charttime": "ts",
        "chartdate": "ts",
        "spec_type_desc": "str",
    },
    "DIAGNOSES_ICD": {"hadm_id": "i64", "icd9_code": "str"},
}
# Without VALUEUOM every value is taken as in its expected unit (counted as no_unit).
_OPTIONAL = {
    ("CHARTEVENTS", "error"),
    ("INPUTEVENTS_MV", "statusdescription"),
    ("CHARTEVENTS", "valueuom"),
    ("LABEVENTS", "valueuom"),
    ("LABEVENTS", "value"),
}
MAX_BLOCK_BYTES = 32 << 20  # decompressed bytes per chunk handed to the CSV parser
_VALUES_IN_BYTES_EST = 120  # fallback bytes per CSV row when a sample cannot be read


@dataclass(frozen=True)
class ReaderParams:
    """Parameters of the MIMIC-III reader (embedded in the YAML `labels` section)."""

    on_bad_rows: str = "error"  # "error" | "skip-and-count"
    batch_rows: int = 2_000_000  # record batch size of the streaming reader
    lab_lookback_hours: float = 24.0  # labs up to this long before ICU admission belong to the stay

    def validate(self) -> None:
        """Raise ValueError("<key>: <what was expected>") for impossible values."""
        if self.on_bad_rows not in ("error", "skip-and-count"):
            raise ValueError(
                f"on_bad_rows: expected 'error' or 'skip-and-count', got {self.on_bad_rows!r}"
            )
        if not isinstance(self.batch_rows, int) or self.batch_rows < 1:
            raise ValueError(f"batch_rows: expected a positive integer, got {self.batch_rows!r}")
        if not (
            isinstance(self.lab_lookback_hours, (int, float))
            and math.isfinite(self.lab_lookback_hours)
            and self.lab_lookback_hours >= 0
        ):
            raise ValueError(
                f"lab_lookback_hours: expected a finite number >= 0, got {self.lab_lookback_hours!r}"
            )


@dataclass
class TableReport:
    """Row accounting and speed for one raw table."""

    table: str
    file: str = ""
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rows_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    passes: int = 0  # 2 when the fast pass hit a malformed value and the table was re-read
    warnings: list[str] = field(default_factory=list)  # e.g. an optional table without rows
    # value units (concepts/units.csv): "no_unit:<group>" accepted rows without a unit,
    # "converted:<group>:<unit>" rows converted to the group's expected unit
    units: dict[str, int] = field(default_factory=dict)

    def count_unit(self, key: str, n: int) -> None:
        """Count `n` rows under units[key] (zero counts are not recorded)."""
        if n:
            self.units[key] = self.units.get(key, 0) + int(n)

    def drop(self, reason: str, n: int) -> None:
        """Count `n` rows dropped for `reason` (zero counts are not recorded)."""
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)


@dataclass
class ExtractionReport:
    """What `extract` read, kept and dropped, per table, with speed and peak memory."""

    data_dir: str
    out_dir: str
    params: dict
    tables: dict[str, TableReport] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)  # parquet file -> rows
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    warnings: list[str] = field(default_factory=list)  # every table's warnings, collected

    def to_dict(self) -> dict:
        """JSON-ready dictionary (the content of extraction_report.json)."""
        return asdict(self)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------
# Files and headers
# --------------------------------------------------------------------------------------


def find_table(data_dir: Path, table: str) -> Path:
    """Path of `table` in `data_dir` as TABLE.csv(.gz), any case; clear error when absent."""
    wanted = {f"{table.lower()}.csv.gz": 0, f"{table.lower()}.csv": 1}
    hits = sorted(
        (wanted[p.name.lower()], p.name, p)
        for p in Path(data_dir).iterdir()
        if p.name.lower() in wanted and p.is_file()
    )
    if not hits:
        raise MissingTableError(
            f"MIMIC-III table {table} not found in folder {data_dir}: expected {table}.csv.gz or "
            f"{table}.csv (file names in upper or lower case)"
        )
    if len(hits) > 1:
        log.warning(
            "%s: several files for table %s (%s); reading %s",
            data_dir,
            table,
            ", ".join(h[1] for h in hits),
            hits[0][1],
        )
    return hits[0][2]


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return open(path, newline="", encoding="utf-8")


def _header_and_row_bytes(path: Path) -> tuple[list[str], float]:
    """Column names of a CSV file and the mean bytes per data row of its first lines."""
    try:
        with _open_text(path) as fh:
            header = fh.readline()
            sample = [fh.readline() for _ in range(200)]
    except STREAM_ERRORS as exc:
        raise stream_error(path, exc, None) from exc
    if not header.strip():
        raise DataError(f"{path}: empty file, expected a CSV header line")
    names = next(csv.reader([header.lstrip("\ufeff")]))
    sample = [s for s in sample if s]
    row_bytes = (
        (sum(len(s.encode()) for s in sample) / len(sample)) if sample else _VALUES_IN_BYTES_EST
    )
    return names, max(row_bytes, 8.0)


def _resolve_columns(
    path: Path, table: str, data_dir: Path
) -> tuple[dict[str, str], float, list[str]]:
    """Map our lower-case column names to the file's spelling; clear error for missing ones."""
    names, row_bytes = _header_and_row_bytes(path)
    by_lower = {n.strip().lower(): n for n in names}
    out: dict[str, str] = {}
    missing = []
    for col in TABLE_COLUMNS[table]:
        if col in by_lower:
            out[col] = by_lower[col]
        elif (table, col) not in _OPTIONAL:
            missing.append(col.upper())
    if missing:
        raise DataError(
            f"MIMIC-III table {table} ({path.name} in folder {data_dir}) lacks required column(s) "
            f"{', '.join(missing)}; its header has: {', '.join(names)}"
        )
    return out, row_bytes, names


# --------------------------------------------------------------------------------------
# Streaming scan with malformed-row handling
# --------------------------------------------------------------------------------------


class _Restart(Exception):
    """The fast pass met a value the CSV decoder could not type: re-read as strings."""


class _Batch:
    """One record batch as named columns, with the data row numbers of its rows."""

    def __init__(self, scan: _Scan, rb: pa.RecordBatch, first_row: int):
        self.scan = scan
        self.cols: dict[str, pa.Array] = {name: rb.column(i) for i, name in enumerate(scan.logical)}
        self.first_row = first_row  # data row number (1-based, header excluded) of rb row 0
        self.idx: np.ndarray | None = None  # positions in rb of the rows still here (None = all)
        self.n = rb.num_rows

    def __getitem__(self, name: str) -> pa.Array:
        return self.cols[name]

    def has(self, name: str) -> bool:
        """Whether the (optional) column is present in the file."""
        return name in self.cols

    def row_numbers(self) -> np.ndarray:
        """Data row numbers (1-based) of the rows still in the batch."""
        pos = np.arange(self.n) if self.idx is None else self.idx
        return self.first_row + pos

    def filter(self, mask) -> None:
        """Keep rows where `mask` (pyarrow or numpy boolean; null = False) is true."""
        if isinstance(mask, np.ndarray):
            np_mask = mask
            mask = pa.array(mask)
        else:
            mask = pc.fill_null(mask, False)
            np_mask = mask.to_numpy(zero_copy_only=False)
        self.cols = {k: pc.filter(v, mask) for k, v in self.cols.items()}
        pos = np.arange(self.n) if self.idx is None else self.idx
        self.idx = pos[np_mask]

    def __len__(self) -> int:
        return self.n if self.idx is None else len(self.idx)

    def convert(self, *names: str) -> None:
        """Convert string columns to their declared type; malformed values raise or are skipped."""
        for name in names:
            if name not in self.cols:
                continue
            kind = self.scan.kinds[name]
            target = _KIND_TYPE[kind]
            while self.cols[name].type != target:
                arr = self.cols[name]
                try:
                    self.cols[name] = pc.cast(arr, target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    bad = _locate_bad(
                        arr, target, first_only=self.scan.params.on_bad_rows == "error"
                    )
                    rows = self.row_numbers()
                    if not len(bad):  # whole column fails but no single value does: not expected
                        raise MalformedRowError(
                            f"{self.scan.path}: column {name!r} cannot be read as {target} "
                            f"in data rows {rows[0]}-{rows[-1]}"
                        ) from None
                    if self.scan.params.on_bad_rows == "error":
                        i = int(bad[0])
                        raise MalformedRowError(
                            _bad_message(self.scan, int(rows[i]), name, arr[i].as_py(), kind)
                        ) from None
                    self.scan.report.drop(f"malformed_{name}", len(bad))
                    keep = np.ones(len(arr), dtype=bool)
                    keep[bad] = False
                    self.filter(keep)


def _bad_message(scan: _Scan, row: int, column: str, value, kind: str) -> str:
    expected = {
        "i32": "an integer",
        "i64": "an integer",
        "f64": "a number",
        "ts": "a timestamp YYYY-MM-DD[ HH:MM:SS]",
    }.get(kind, kind)
    return (
        f"{scan.path}: data row {row} (line {row + 1}), column {scan.actual.get(column, column)!r}: "
        f"cannot read {value!r} as {expected} (table {scan.table}; set on_bad_rows: skip-and-count "
        f"to skip and count such rows)"
    )


def _locate_bad(arr: pa.Array, target: pa.DataType, first_only: bool) -> np.ndarray:
    """Positions of the values that do not cast to `target` (slow path, only after a failure)."""
    bad: list[int] = []
    step = 4096
    for start in range(0, len(arr), step):
        part = arr.slice(start, step)
        try:
            pc.cast(part, target)
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        for j in range(len(part)):
            try:
                pc.cast(part.slice(j, 1), target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                bad.append(start + j)
                if first_only:
                    return np.array(bad, dtype=np.int64)
    return np.array(bad, dtype=np.int64)


class _Scan:
    """Stream one raw table in record batches and hand each batch to a handler."""

    def __init__(
        self, data_dir: Path, table: str, params: ReaderParams, report: TableReport, progress: bool
    ):
        self.table = table
        self.path = find_table(data_dir, table)
        self.actual, self.row_bytes, self.names = _resolve_columns(self.path, table, data_dir)
        self.logical = list(self.actual)
        self.kinds = {c: TABLE_COLUMNS[table][c] for c in self.logical}
        self.params = params
        self.report = report
        self.progress = progress
        report.file = str(self.path)

    def run(self, handler: Callable[[_Batch], None], reset: Callable[[], None]) -> None:
        """Feed all batches to `handler`; on a typing failure in the fast pass, reset and re-read."""
        t0 = time.perf_counter()
        try:
            self.report.passes = 1
            self._run(handler, typed=True)
        except _Restart as exc:
            log.info(
                "%s: %s; re-reading the table with string columns to locate it", self.path, exc
            )
            reset()
            self.report.rows_read = self.report.rows_kept = 0
            self.report.dropped.clear()
            self.report.units.clear()
            self.report.passes = 2
            self._run(handler, typed=False)
        self._check_not_empty()
        self.report.seconds = time.perf_counter() - t0
        self.report.rows_per_s = self.report.rows_read / max(self.report.seconds, 1e-9)
        self.report.peak_rss_mb = peak_rss_mb()

    def _check_not_empty(self) -> None:
        """A required table without data rows is an error; an optional one a report warning."""
        if self.report.rows_read or self.report.dropped.get("malformed_row"):
            return
        if self.table in REQUIRED_TABLES:
            raise EmptyTableError(
                f"{self.path}: has a header but no data rows; expected one row per "
                f"{REQUIRED_TABLES[self.table]} (table {self.table} is required)"
            )
        msg = f"{self.path}: has a header but no data rows (optional table, read as empty)"
        log.warning("%s", msg)
        self.report.warnings.append(msg)

    def _chunks(self, stop: threading.Event) -> Iterator[tuple[bytes, int] | BaseException]:
        """Decompressed text in chunks of whole lines, read ahead by a background thread.

        pyarrow's own streaming reader (open_csv) reads ahead without bound when the consumer
        is slower than gunzip: its memory grew ~40 MB/s on CHARTEVENTS. Here at most two chunks
        wait in the queue, while decompression (which releases the GIL) still overlaps parsing.
        Yields (data, position in the raw file) pairs; data starts after the header line.
        """
        chunk_bytes = int(
            min(max(self.params.batch_rows * self.row_bytes, 1 << 16), MAX_BLOCK_BYTES)
        )
        q: queue.Queue = queue.Queue(maxsize=2)

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                with pa.OSFile(str(self.path), "rb") as raw:
                    gz = self.path.name.lower().endswith(".gz")
                    stream = pa.CompressedInputStream(raw, "gzip") if gz else raw
                    leftover, header_done = b"", False
                    while not stop.is_set():
                        buf = stream.read(chunk_bytes)
                        if not buf:
                            if header_done and leftover.strip():
                                put((leftover + b"\n", raw.tell()))
                            break
                        data = leftover + buf if leftover else buf
                        if not header_done:
                            i = data.find(b"\n")
                            if i < 0:
                                leftover = data
                                continue
                            data, header_done = data[i + 1 :], True
                        j = data.rfind(b"\n")
                        if j < 0:
                            leftover = data
                            continue
                        leftover = data[j + 1 :]
                        if not put((data[: j + 1], raw.tell())):
                            return
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)
            finally:
                put(None)

        thread = threading.Thread(target=produce, name=f"gunzip-{self.table}", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                yield item
        finally:
            stop.set()
            thread.join(timeout=5)

    def _batches(self, typed: bool) -> Iterator[tuple[pa.RecordBatch, int, int]]:
        """(record batch, data row number of its first row, raw file position) of the table."""
        bad_row: dict = {}
        skipped = [0]

        def on_invalid(row) -> str:
            if self.params.on_bad_rows == "skip-and-count":
                self.report.drop("malformed_row", 1)
                skipped[0] += 1
                return "skip"
            bad_row.update(
                number=row.number,
                text=row.text,
                expected=row.expected_columns,
                actual=row.actual_columns,
            )
            return "error"

        # Fast pass: numeric AND timestamp columns are typed by the multithreaded CSV decoder.
        # Measured on CHARTEVENTS, parsing timestamps there costs less than carrying them as
        # strings through the ITEMID filter and casting afterwards (the string copy dominates).
        # The string pass (after a failure) parses timestamps only for the rows kept.
        types = {
            self.actual[c]: (_KIND_TYPE[k] if typed and k != "str" else STR)
            for c, k in self.kinds.items()
        }
        parse = pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False)
        convert = pacsv.ConvertOptions(
            include_columns=[self.actual[c] for c in self.logical],
            column_types=types,
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        )
        first_row = 1
        stop = threading.Event()
        for item in self._chunks(stop):
            if isinstance(item, BaseException):
                if isinstance(item, STREAM_ERRORS):
                    raise stream_error(self.path, item, first_row - 1) from item
                raise item
            data, pos = item
            # Blocks of a quarter chunk: both cores parse one chunk in parallel.
            opts = pacsv.ReadOptions(
                column_names=self.names,
                use_threads=True,
                block_size=max(len(data) // 4 + 1, 1 << 16),
            )
            try:
                table = pacsv.read_csv(
                    pa.py_buffer(data),
                    read_options=opts,
                    parse_options=parse,
                    convert_options=convert,
                )
            except pa.ArrowInvalid as exc:
                if bad_row:
                    # the parser knows no row number when multithreaded: find the row's text
                    at = data.find(bad_row["text"].encode())
                    n = first_row + data.count(b"\n", 0, at) if at >= 0 else None
                    where = f"data row {n} (line {n + 1})" if n is not None else "a row"
                    raise MalformedRowError(
                        f"{self.path}: {where} has {bad_row['actual']} fields, expected {bad_row['expected']} "
                        f"(table {self.table}): {bad_row['text'][:200]!r}"
                    ) from None
                if "invalid utf8" in str(exc).lower():
                    raise utf8_error(self.path, data, first_row) from None
                if typed and "conversion error" in str(exc).lower():
                    raise _Restart(str(exc).splitlines()[0]) from None
                raise MalformedRowError(f"{self.path} (table {self.table}): {exc}") from None
            row = first_row
            for rb in table.to_batches():
                yield rb, row, pos
                row += rb.num_rows
            # data rows in the chunk = parsed + skipped (blank lines, which the parser ignores,
            # would shift later numbers; MIMIC-III files have none)
            first_row += table.num_rows + skipped[0]
            skipped[0] = 0

    def _run(self, handler: Callable[[_Batch], None], typed: bool) -> None:
        size = self.path.stat().st_size
        bar = tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=self.table,
            disable=not self.progress,
            leave=False,
        )
        rows = 0
        seen = 0
        t0 = time.perf_counter()
        try:
            for rb, first_row, pos in self._batches(typed):
                batch = _Batch(self, rb, first_row)
                rows += rb.num_rows
                self.report.rows_read += rb.num_rows
                handler(batch)
                bar.update(max(pos - seen, 0))
                seen = pos
                bar.set_postfix(
                    rows=f"{rows:,}", rows_s=f"{rows / max(time.perf_counter() - t0, 1e-9):,.0f}"
                )
        finally:
            bar.close()


# --------------------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------------------


class _Writer:
    """Append tables to one parquet file in row groups of about `group_rows` rows.

    Created even when nothing is written. Snappy, and dictionary encoding only for string
    columns: zstd and dictionary-encoded timestamps/floats cost twice the write time.
    """

    def __init__(self, path: Path, schema: pa.Schema, group_rows: int = 2_000_000):
        self.path, self.schema, self.rows, self.group_rows = path, schema, 0, group_rows
        self._w: pq.ParquetWriter | None = None
        self._buf: list[pa.Table] = []
        self._buf_rows = 0

    def _open(self) -> pq.ParquetWriter:
        if self._w is None:
            strings = [f.name for f in self.schema if pa.types.is_string(f.type)]
            self._w = pq.ParquetWriter(
                self.path, self.schema, compression="snappy", use_dictionary=strings
            )
        return self._w

    def write(self, table: pa.Table) -> None:
        """Append `table` (cast to the declared schema)."""
        if table.num_rows:
            self._buf.append(table.select(self.schema.names).cast(self.schema))
            self._buf_rows += table.num_rows
            self.rows += table.num_rows
            if self._buf_rows >= self.group_rows:
                self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._open().write_table(
                pa.concat_tables(self._buf), row_group_size=max(self._buf_rows, 1)
            )
            self._buf, self._buf_rows = [], 0

    def reset(self) -> None:
        """Discard what was written (the table is being re-read)."""
        self._buf, self._buf_rows = [], 0
        if self._w is not None:
            self._w.close()
            self._w = None
        self.path.unlink(missing_ok=True)
        self.rows = 0

    def close(self) -> int:
        """Finish the file; returns the rows written."""
        self._flush()
        self._open().close()
        return self.rows


def _ts_us(arr: pa.Array, fill: int) -> np.ndarray:
    """Timestamp array -> int64 microseconds with nulls replaced by `fill`."""
    return pc.fill_null(arr.cast(I64), fill).to_numpy(zero_copy_only=False)


def _ids(arr: pa.Array, fill: int = -1) -> np.ndarray:
    return pc.fill_null(arr.cast(I64), fill).to_numpy(zero_copy_only=False)


class _StayIndex:
    """Vectorised lookup of stays by ICU stay id, and by subject and time (for labs)."""

    def __init__(self, stays: pd.DataFrame):
        s = stays.sort_values("stay_id")
        self.ids = s["stay_id"].to_numpy(np.int64)
        self.intime = _col_us(s["intime"], np.iinfo(np.int64).max // 2)
        self.outtime = _col_us(s["outtime"], np.iinfo(np.int64).max // 2)
        self.intime_known = s["intime"].notna().to_numpy()
        self.outtime_known = s["outtime"].notna().to_numpy()
        # Stay ids are dense in MIMIC-III (200000-299999): a lookup table beats a binary search.
        self.lut: np.ndarray | None = None
        if len(self.ids):
            self.lut_min = int(self.ids[0])
            span = int(self.ids[-1]) - self.lut_min + 1
            if span <= 10 * len(self.ids) + 1_000_000:
                self.lut = np.full(span, -1, dtype=np.int32)
                self.lut[self.ids - self.lut_min] = np.arange(len(self.ids), dtype=np.int32)
        self._windows: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] = {}
        # by subject: sorted by (subject, intime)
        k = stays[stays["intime"].notna()].sort_values(["patient_id", "intime"])
        self.k_subject = k["patient_id"].fillna(-2).to_numpy(np.int64)
        self.k_stay = k["stay_id"].to_numpy(np.int64)
        self.k_in = _col_us(k["intime"], 0)
        self.k_out = _col_us(k["outtime"], np.iinfo(np.int64).max // 2)

    def by_id(self, stay: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, position in the sorted stay arrays) for stay ids (-1 = null)."""
        if self.lut is not None:
            off = stay - self.lut_min
            inside = (off >= 0) & (off < len(self.lut))
            pos = self.lut[np.where(inside, off, 0)]
            found = inside & (pos >= 0)
            return found, np.where(found, pos, 0)
        pos, found = locate(self.ids, stay)
        return found, pos

    def in_window(
        self, pos: np.ndarray, t: np.ndarray, before_h: float, after_h: float
    ) -> np.ndarray:
        """Whether times `t` (us) lie in [intime - before, outtime + after] of stays at `pos`."""
        key = (before_h, after_h)
        if key not in self._windows:  # unknown bounds become open ends
            big = np.iinfo(np.int64).max
            lo = np.where(self.intime_known, self.intime - int(before_h * US_PER_HOUR), -big)
            hi = np.where(self.outtime_known, self.outtime + int(after_h * US_PER_HOUR), big)
            self._windows[key] = (lo, hi)
        lo, hi = self._windows[key]
        return (t >= lo[pos]) & (t <= hi[pos])

    def by_subject_time(self, subject: np.ndarray, t: np.ndarray, lookback_h: float) -> np.ndarray:
        """Stay id of the same subject with intime - lookback <= t <= outtime, else -1.

        When windows of a subject's stays overlap, the stay with the latest admission wins;
        the one before it is tried when the latest does not contain t.
        """
        out = np.full(len(t), -1, dtype=np.int64)
        if not len(self.k_stay) or not len(t):
            return out
        lb = int(lookback_h * US_PER_HOUR)
        lo_subj = np.searchsorted(self.k_subject, subject, side="left")
        hi_subj = np.searchsorted(self.k_subject, subject, side="right")
        # among the subject's stays (a contiguous block sorted by intime), the last one with
        # intime - lb <= t; if it ended before t, the one before it (overlapping windows)
        for back in (0, 1):
            todo = out < 0
            if not todo.any():
                break
            lo_s, hi_s, tt = lo_subj[todo], hi_subj[todo], t[todo]
            cand = self._last_start_le(lo_s, hi_s, tt + lb) - back
            ok = (cand >= lo_s) & (cand < hi_s)
            c = np.where(ok, cand, 0)
            ok &= (self.k_in[c] - lb <= tt) & (tt <= self.k_out[c])
            res = out[todo]
            res[ok] = self.k_stay[c[ok]]
            out[todo] = res
        return out

    def _last_start_le(self, lo: np.ndarray, hi: np.ndarray, t: np.ndarray) -> np.ndarray:
        """For each row, the last position p in [lo, hi) with k_in[p] <= t (lo - 1 if none)."""
        # vectorised binary search inside each subject's block
        a, b = lo.copy(), hi.copy()  # invariant: answer in [a - 1, b - 1]
        while True:
            active = a < b
            if not active.any():
                break
            mid = (a + b) // 2
            midc = np.where(active, mid, 0)
            go_right = active & (self.k_in[midc] <= t)
            a = np.where(go_right, mid + 1, a)
            b = np.where(active & ~go_right, mid, b)
        return a - 1


def _col_us(s: pd.Series, fill: int) -> np.ndarray:
    v = s.to_numpy(dtype="datetime64[us]").astype(np.int64)
    v[s.isna().to_numpy()] = fill
    return v


def _times_to_arrow(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype("datetime64[us]"), type=TS)


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


def _read_small(
    data_dir: Path, table: str, params: ReaderParams, rep: ExtractionReport, progress: bool
) -> pa.Table:
    """Read a small table fully (all rows), converting every declared column."""
    tr = rep.tables.setdefault(table, TableReport(table))
    scan = _Scan(data_dir, table, params, tr, progress)
    parts: list[pa.Table] = []

    def handle(b: _Batch) -> None:
        b.convert(*scan.logical)
        parts.append(pa.table(b.cols))
        tr.rows_kept += len(b)

    scan.run(handle, parts.clear)
    if parts:
        return pa.concat_tables(parts)
    return pa.table({c: pa.array([], _KIND_TYPE[k]) for c, k in scan.kinds.items()})


def _stays_base(
    data_dir: Path, params: ReaderParams, rep: ExtractionReport, progress: bool
) -> pd.DataFrame:
    icu = _read_small(data_dir, "ICUSTAYS", params, rep, progress).to_pandas()
    pat = _read_small(data_dir, "PATIENTS", params, rep, progress).to_pandas()
    adm = _read_small(data_dir, "ADMISSIONS", params, rep, progress).to_pandas()
    tr = rep.tables["ICUSTAYS"]
    n = len(icu)
    icu = icu[icu["icustay_id"].notna()]
    tr.drop("missing_icustay_id", n - len(icu))
    dup = icu["icustay_id"].duplicated()
    if dup.any():
        raise DataError(
            f"ICUSTAYS in {data_dir}: ICUSTAY_ID {int(icu.loc[dup, 'icustay_id'].iloc[0])} "
            "appears more than once; expected one row per ICU stay"
        )
    tr.rows_kept = len(icu)
    pat = pat.drop_duplicates("subject_id")
    adm = adm.drop_duplicates("hadm_id")
    df = icu.merge(pat, on="subject_id", how="left").merge(adm, on="hadm_id", how="left")
    admit = df["admittime"].fillna(df["intime"])
    age = (admit - df["dob"]) / pd.Timedelta(days=365.25)
    los = (df["outtime"] - df["intime"]) / pd.Timedelta(hours=1)
    gender = df["gender"].astype("string").str.upper().where(lambda g: g.isin(["M", "F"]))
    db = (
        df["dbsource"]
        .astype("string")
        .str.lower()
        .where(lambda d: d.isin(["carevue", "metavision"]))
    )
    died = df["hospital_expire_flag"].map({1: True, 0: False}).astype("boolean")
    return pd.DataFrame(
        {
            "stay_id": df["icustay_id"].astype("int64"),
            "patient_id": df["subject_id"].astype("Int64"),
            "hadm_id": df["hadm_id"].astype("Int64"),
            "source": SOURCE,
            "intime": df["intime"],
            "outtime": df["outtime"],
            "los_hours": los.astype("float64"),
            "age": age.clip(upper=AGE_CAP).astype("float64"),
            "gender": gender,
            "dbsource": db,
            "unit": df["first_careunit"].astype("string"),
            "died": died,
        }
    )


def _normalise_unit(u: str | None) -> str | None:
    if u is None:
        return None
    s = "".join(ch for ch in u.lower() if ch.isalnum())
    s = s.replace("ug", "mcg").replace("hour", "hr").replace("mcgmcg", "mcg")
    if s.endswith("h") and not s.endswith("hr"):
        s += "r"
    return s or None


def _vaso_rates(df: pd.DataFrame, scan: _Scan, tr: TableReport, weight_col: str) -> pd.DataFrame:
    """Convert `rate`/`rateuom` to mcg/kg/min using `weight_col`; count/raise unknown units."""
    units = df["rateuom"].map(_normalise_unit, na_action="ignore")
    units = units.fillna(df["itemid"].map(DEFAULT_RATE_UNIT))
    known = units.isin(list(RATE_UNITS))
    if (~known).any():
        if scan.params.on_bad_rows == "error":
            i = np.flatnonzero(~known.to_numpy())[0]
            raise MalformedRowError(
                f"{scan.path}: data row {int(df['_row'].iloc[i])} (line {int(df['_row'].iloc[i]) + 1}), column "
                f"{scan.actual.get('rateuom', 'rateuom')!r}: unknown vasopressor rate unit "
                f"{df['rateuom'].iloc[i]!r} for ITEMID {int(df['itemid'].iloc[i])} (expected one of mcg/kg/min, "
                f"mcg/min, mg/kg/min, mg/min, per hour; table {scan.table})"
            )
        tr.drop("unknown_rate_unit", int((~known).sum()))
        df, units = df[known], units[known]
    spec = units.map(RATE_UNITS)
    factor = spec.map(lambda x: x[0]).astype(float)
    per_kg = spec.map(lambda x: x[1]).astype(bool)
    per_hr = spec.map(lambda x: x[2]).astype(bool)
    w = df[weight_col].astype(float)
    no_w = per_kg & ~((w > 0) & (w <= WEIGHT_MAX_KG))
    tr.drop("no_weight_for_rate_unit", int(no_w.sum()))
    rate = df["rate"].astype(float) * factor
    rate = rate.where(~per_kg, rate / w)
    rate = rate.where(~per_hr, rate / 60.0)
    out = df.assign(rate=rate)
    return out[~no_w.to_numpy()]


def extract(
    data_dir: Path, out_dir: Path, params: ReaderParams, progress: bool = True
) -> ExtractionReport:
    """Stream the MIMIC-III tables in `data_dir` into the parquet files of CONTRACTS.md, atomically.

    Writes into a temporary folder next to `out_dir` and renames it into place at the end, so
    a failure never leaves a partial `out_dir` (an existing `out_dir` is replaced only on
    success). Inputs are only read. Returns the report also written as extraction_report.json.
    """
    params.validate()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise MissingTableError(f"MIMIC-III folder {data_dir} does not exist")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        report = _extract_into(data_dir, tmp, params, progress)
        report.out_dir = str(out_dir)
        (tmp / "extraction_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(exc):
            raise DataError(
                f"{out_dir}: cannot write the extracted tables ({exc}); expected free space on "
                f"the disk of {out_dir.parent} (nothing was written there)"
            ) from exc
        raise
    return report


def _extract_into(
    data_dir: Path, out: Path, params: ReaderParams, progress: bool
) -> ExtractionReport:
    t_start = time.perf_counter()
    rep = ExtractionReport(data_dir=str(data_dir), out_dir=str(out), params=asdict(params))
    # Resolve every table and its columns first, so a missing one fails in seconds, not hours.
    for table in TABLE_COLUMNS:
        _resolve_columns(find_table(data_dir, table), table, data_dir)

    stays = _stays_base(data_dir, params, rep, progress)
    index = _StayIndex(stays)

    has_chart, chart_weights = _chartevents(data_dir, out, params, rep, index, progress)
    mv_vaso, mv_weights = _inputevents_mv(
        data_dir, out, params, rep, index, chart_weights, progress
    )

    # weight_kg: first charted weight, else the first MetaVision admission weight
    w = chart_weights.set_index("stay_id")["weight_kg"]
    w = w.combine_first(mv_weights.set_index("stay_id")["weight_kg"]) if len(mv_weights) else w
    stays["weight_kg"] = stays["stay_id"].map(w).astype("float64")
    stays["has_chart"] = stays["stay_id"].isin(has_chart)

    _inputevents_cv(data_dir, out, params, rep, index, stays, mv_vaso, progress)
    _labevents(data_dir, out, params, rep, index, progress)
    _outputevents(data_dir, out, params, rep, index, progress)
    _passthrough(data_dir, out, params, rep, "PRESCRIPTIONS", "prescriptions", progress)
    _passthrough(data_dir, out, params, rep, "MICROBIOLOGYEVENTS", "microbiology", progress)
    _passthrough(data_dir, out, params, rep, "DIAGNOSES_ICD", "diagnoses", progress)

    table = pa.Table.from_pandas(stays[STAYS_SCHEMA.names], preserve_index=False).cast(STAYS_SCHEMA)
    pq.write_table(table, out / "stays.parquet", compression="zstd")
    rep.outputs["stays.parquet"] = table.num_rows
    rep.warnings = [w for tr in rep.tables.values() for w in tr.warnings]
    rep.seconds = time.perf_counter() - t_start
    rep.peak_rss_mb = peak_rss_mb()
    log.info("MIMIC-III extraction: %s", {k: v for k, v in rep.outputs.items()})
    return rep


def _chartevents(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    index: _StayIndex,
    progress: bool,
) -> tuple[set[int], pd.DataFrame]:
    tr = rep.tables.setdefault("CHARTEVENTS", TableReport("CHARTEVENTS"))
    scan = _Scan(data_dir, "CHARTEVENTS", params, tr, progress)
    writer = _Writer(out / "chart.parquet", CHART_SCHEMA, params.batch_rows)
    wanted = pa.array(sorted(V.chart_itemids_needed()), I32)
    text_items = pa.array(sorted(CHART_TEXT_ITEMIDS), I32)
    weight_items = np.array(sorted({*V.WEIGHT_ITEMIDS_KG, *V.WEIGHT_ITEMIDS_LB}), np.int32)
    lb_items = np.array(V.WEIGHT_ITEMIDS_LB, np.int32)
    units = UnitChecker("chartevents")
    warn_no_unit_column(scan)
    # Constant-size state, whatever the table size: a flag per stay and one weight per stay.
    has_chart = np.zeros(len(index.ids), dtype=bool)
    first_w = _FirstPerStay(index)
    implausible = [0]

    def reset() -> None:
        writer.reset()
        has_chart[:] = False
        first_w.clear()
        implausible[0] = 0

    def handle(b: _Batch) -> None:
        b.convert("icustay_id", "itemid", "valuenum")  # numeric columns: validated on every row
        ids_found, ids_pos = index.by_id(_ids(pc.unique(b["icustay_id"])))
        has_chart[ids_pos[ids_found]] = True
        n = len(b)
        keep = pc.is_in(b["itemid"], value_set=wanted)
        b.filter(keep)
        tr.drop("itemid_not_needed", n - len(b))
        b.convert("charttime")  # only the kept rows pay for timestamp parsing
        _drop_null(b, tr, "charttime", "missing_charttime")
        # stay, error flag and time window decided together: one filter pass instead of three
        found, pos = index.by_id(_ids(b["icustay_id"]))
        t = _ts_us(b["charttime"], 0)
        err = np.zeros(len(b), dtype=bool)
        if b.has("error"):
            err = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(b["error"]), "1"), False).to_numpy(
                zero_copy_only=False
            )
        inside = index.in_window(pos, t, CHART_BEFORE_HOURS, CHART_AFTER_HOURS)
        tr.drop("unknown_stay", int((~found).sum()))
        tr.drop("error_flag", int((found & err).sum()))
        tr.drop("outside_stay", int((found & ~err & ~inside).sum()))
        ok = found & ~err & inside
        b.filter(ok)
        check_units(b, scan, units)
        if not len(b):
            return
        itemid = b["itemid"]
        value = pc.if_else(pc.is_in(itemid, value_set=text_items), b["value"], pa.scalar(None, STR))
        writer.write(
            pa.table(
                {
                    "stay_id": b["icustay_id"],
                    "time": b["charttime"],
                    "itemid": itemid,
                    "valuenum": b["valuenum"],
                    "value": value,
                }
            )
        )
        tr.rows_kept += len(b)
        item_np = itemid.to_numpy(zero_copy_only=False)
        wmask = np.isin(item_np, weight_items)
        if wmask.any():
            vals = pc.fill_null(b["valuenum"], np.nan).to_numpy(zero_copy_only=False)[wmask]
            vals = np.where(np.isin(item_np[wmask], lb_items), vals * LB_TO_KG, vals)
            plausible = (vals > 0) & (vals <= WEIGHT_MAX_KG)
            implausible[0] += int((~plausible).sum())
            wt = _ts_us(pc.filter(b["charttime"], pa.array(wmask)), 0)  # after the unit filter
            first_w.add(_ids(b["icustay_id"])[wmask][plausible], wt[plausible], vals[plausible])

    scan.run(handle, reset)
    rep.outputs["chart.parquet"] = writer.close()
    rep.tables.setdefault("stays", TableReport("stays")).drop(
        "implausible_charted_weight", implausible[0]
    )
    return set(index.ids[has_chart].tolist()), first_w.result()


class _FirstPerStay:
    """Running first (earliest time) weight per stay in arrays over the stay index: O(stays) memory."""

    def __init__(self, index: _StayIndex) -> None:
        self.index = index
        self.clear()

    def clear(self) -> None:
        """Forget everything (the table is being re-read)."""
        self.t = np.full(len(self.index.ids), np.iinfo(np.int64).max, dtype=np.int64)
        self.w = np.full(len(self.index.ids), np.nan)

    def add(self, stay: np.ndarray, t: np.ndarray, w: np.ndarray) -> None:
        """Merge candidate (stay id, time us, weight) rows; unknown stays are ignored."""
        found, pos = self.index.by_id(stay)
        pos, t, w = pos[found], t[found], w[found]
        if not len(pos):
            return
        before = self.t.copy()
        np.minimum.at(self.t, pos, t)
        better = (t == self.t[pos]) & (t < before[pos])
        # among rows tying at the new earliest time, the first one in file order wins
        order = np.flatnonzero(better)[::-1]
        self.w[pos[order]] = w[order]

    def result(self) -> pd.DataFrame:
        """(stay_id, weight_kg), one row per stay with a weight."""
        has = ~np.isnan(self.w)
        return pd.DataFrame({"stay_id": self.index.ids[has], "weight_kg": self.w[has]})


def _drop_null(b: _Batch, tr: TableReport, col: str, reason: str) -> None:
    nulls = b[col].null_count
    if nulls:
        b.filter(pc.is_valid(b[col]))
        tr.drop(reason, nulls)


def _keep_items(b: _Batch, tr: TableReport, wanted: pa.Array) -> None:
    """Keep the rows whose ITEMID is in `wanted`; the rest are counted as not needed."""
    n = len(b)
    b.filter(pc.is_in(b["itemid"], value_set=wanted))
    tr.drop("itemid_not_needed", n - len(b))


def _keep_known_stays(b: _Batch, tr: TableReport, index: _StayIndex) -> np.ndarray:
    """Keep the rows of known ICU stays (others counted); their positions in `index`."""
    found, pos = index.by_id(_ids(b["icustay_id"]))
    b.filter(found)
    tr.drop("unknown_stay", int((~found).sum()))
    return pos[found]


def _inputevents_mv(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    index: _StayIndex,
    chart_weights: pd.DataFrame,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MetaVision vasopressor rates (written to a part file) and first admission weight per stay."""
    tr = rep.tables.setdefault("INPUTEVENTS_MV", TableReport("INPUTEVENTS_MV"))
    scan = _Scan(data_dir, "INPUTEVENTS_MV", params, tr, progress)
    wanted = pa.array(sorted(MV_VASO_ITEMIDS), I32)
    stay_w = chart_weights.set_index("stay_id")["weight_kg"]
    parts: list[pd.DataFrame] = []
    weights = _FirstPerStay(index)
    abx_items = mv_antibiotic_items()
    abx_wanted = pa.array(sorted(abx_items), I32)
    abx_parts: list[pd.DataFrame] = []

    def reset() -> None:
        parts.clear()
        weights.clear()
        abx_parts.clear()

    def antibiotics(b: _Batch) -> None:
        """Take the antibiotic rows out of the batch: their administration times (issue 14,
        defect 2) are kept, rewritten (superseded) rows and rows without a start or a known
        stay are dropped and counted."""
        items = pc.fill_null(pc.is_in(b["itemid"], value_set=abx_wanted), False)
        if not pc.any(items).as_py():
            return
        sel = items
        if b.has("statusdescription"):
            rewritten = pc.fill_null(
                pc.equal(pc.utf8_lower(b["statusdescription"]), "rewritten"), False
            )
            rw = pc.and_(items, rewritten)
            tr.drop("status_rewritten", int(pc.sum(rw).as_py() or 0))
            sel = pc.and_(items, pc.invert(rewritten))
        try:
            t = _ts_us(pc.cast(pc.filter(b["starttime"], sel), TS), -1)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            t = np.full(int(pc.sum(sel).as_py() or 0), -1, np.int64)
        sid = _ids(pc.filter(b["icustay_id"], sel))
        item = pc.filter(b["itemid"], sel).to_numpy(zero_copy_only=False)
        keep = (t >= 0) & np.isin(sid, index.ids)
        tr.drop("antibiotic_without_start_or_known_stay", int((~keep).sum()))
        tr.rows_kept += int(keep.sum())
        abx_parts.append(
            pd.DataFrame(
                {
                    "stay_id": sid[keep],
                    "time": t[keep].astype("datetime64[us]"),
                    "itemid": item[keep].astype(np.int32),
                    "drug": [abx_items[int(i)] for i in item[keep]],
                }
            )
        )
        b.filter(pc.invert(items))

    def handle(b: _Batch) -> None:
        b.convert("icustay_id", "itemid", "rate", "patientweight")
        # admission weight per stay, from every row (the first by starttime wins later)
        pw = b["patientweight"]
        has_w = pc.and_(pc.is_valid(b["icustay_id"]), pc.greater(pc.fill_null(pw, 0.0), 0.0))
        if pc.any(has_w).as_py():
            try:  # best effort: a malformed start time of a non-vasopressor row only loses its weight
                st = pc.cast(pc.filter(b["starttime"], has_w), TS)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                st = None
            if st is not None:
                w = pc.filter(pw, has_w).to_numpy(zero_copy_only=False)
                ok = w <= WEIGHT_MAX_KG
                weights.add(
                    _ids(pc.filter(b["icustay_id"], has_w))[ok],
                    _ts_us(st, np.iinfo(np.int64).max)[ok],
                    w[ok],
                )
        antibiotics(b)
        _keep_items(b, tr, wanted)
        if b.has("statusdescription"):
            rewritten = pc.fill_null(
                pc.equal(pc.utf8_lower(b["statusdescription"]), "rewritten"), False
            )
            tr.drop("status_rewritten", int(pc.sum(rewritten).as_py() or 0))
            b.filter(pc.invert(rewritten))
        b.convert("starttime", "endtime")
        _drop_null(b, tr, "starttime", "missing_starttime")
        _drop_null(b, tr, "endtime", "missing_endtime")
        _drop_null(b, tr, "rate", "missing_rate")
        _keep_known_stays(b, tr, index)
        if not len(b):
            return
        df = pd.DataFrame(
            {
                "stay_id": _ids(b["icustay_id"]),
                "itemid": b["itemid"].to_numpy(zero_copy_only=False),
                "starttime": _ts_us(b["starttime"], 0),
                "endtime": _ts_us(b["endtime"], 0),
                "rate": b["rate"].to_numpy(zero_copy_only=False),
                "rateuom": b["rateuom"].to_pandas(),
                "patientweight": pc.fill_null(b["patientweight"], np.nan).to_numpy(
                    zero_copy_only=False
                ),
                "_row": b.row_numbers(),
            }
        )
        bad_order = df["endtime"] < df["starttime"]
        tr.drop("endtime_before_starttime", int(bad_order.sum()))
        df = df[~bad_order]
        pwt = df["patientweight"]
        df["weight"] = pwt.where((pwt > 0) & (pwt <= WEIGHT_MAX_KG), df["stay_id"].map(stay_w))
        df = _vaso_rates(df, scan, tr, "weight")
        tr.rows_kept += len(df)
        parts.append(df)

    scan.run(handle, reset)
    cols = ["stay_id", "itemid", "starttime", "endtime", "rate"]
    vaso = pd.concat(parts)[cols] if parts else pd.DataFrame(columns=cols)
    abx = (
        pd.concat(abx_parts, ignore_index=True)
        if abx_parts
        else pd.DataFrame({n: pd.Series(dtype=object) for n in ABX_MV_SCHEMA.names})
    )
    table = pa.Table.from_pandas(abx, preserve_index=False, schema=ABX_MV_SCHEMA)
    pq.write_table(table, out / "antibiotics_mv.parquet")
    rep.outputs["antibiotics_mv.parquet"] = table.num_rows
    return vaso, weights.result()


def _inputevents_cv(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    index: _StayIndex,
    stays: pd.DataFrame,
    mv_vaso: pd.DataFrame,
    progress: bool,
) -> None:
    """CareVue vasopressor rates -> intervals; written with the MetaVision rows."""
    tr = rep.tables.setdefault("INPUTEVENTS_CV", TableReport("INPUTEVENTS_CV"))
    scan = _Scan(data_dir, "INPUTEVENTS_CV", params, tr, progress)
    wanted = pa.array(sorted(CV_VASO_ITEMIDS), I32)
    stay_w = stays.set_index("stay_id")["weight_kg"]
    parts: list[pd.DataFrame] = []

    def handle(b: _Batch) -> None:
        b.convert("icustay_id", "itemid", "rate")
        _keep_items(b, tr, wanted)
        b.convert("charttime")
        _drop_null(b, tr, "charttime", "missing_charttime")
        _drop_null(b, tr, "rate", "missing_rate")
        _keep_known_stays(b, tr, index)
        if not len(b):
            return
        df = pd.DataFrame(
            {
                "stay_id": _ids(b["icustay_id"]),
                "itemid": b["itemid"].to_numpy(zero_copy_only=False),
                "starttime": _ts_us(b["charttime"], 0),
                "rate": b["rate"].to_numpy(zero_copy_only=False),
                "rateuom": b["rateuom"].to_pandas(),
                "_row": b.row_numbers(),
            }
        )
        df["weight"] = df["stay_id"].map(stay_w)
        df = _vaso_rates(df, scan, tr, "weight")
        tr.rows_kept += len(df)
        parts.append(df)

    scan.run(handle, parts.clear)
    cv = (
        pd.concat(parts)
        if parts
        else pd.DataFrame(columns=["stay_id", "itemid", "starttime", "rate"])
    )
    cv = cv_intervals(cv)
    frames = [f for f in (mv_vaso, cv) if len(f)]
    vaso = (
        pd.concat(frames)
        if frames
        else pd.DataFrame(columns=["stay_id", "itemid", "starttime", "endtime", "rate"])
    )
    table = pa.table(
        {
            "stay_id": pa.array(vaso["stay_id"].to_numpy(np.int64)),
            "starttime": _times_to_arrow(vaso["starttime"].to_numpy(np.int64)),
            "endtime": _times_to_arrow(vaso["endtime"].to_numpy(np.int64)),
            "drug": pa.array(
                vaso["itemid"].map(V.VASOPRESSOR_BY_ITEMID).astype(object).to_numpy(), STR
            ),
            "rate": pa.array(vaso["rate"].to_numpy(np.float64)),
        },
        schema=VASO_SCHEMA,
    )
    table = table.sort_by([("stay_id", "ascending"), ("starttime", "ascending")])
    pq.write_table(table, out / "vasopressors.parquet", compression="zstd")
    rep.outputs["vasopressors.parquet"] = table.num_rows


def cv_intervals(cv: pd.DataFrame, max_hours: float = CV_MAX_HOURS) -> pd.DataFrame:
    """CareVue rates (stay_id, itemid, starttime us, rate) -> rows with an `endtime` (us).

    A rate holds from its charttime until the next (strictly later) charting of the same drug
    in the same stay, at most `max_hours`.
    """
    if not len(cv):
        return cv.assign(endtime=pd.Series(dtype=np.int64))
    cv = cv.assign(drug=cv["itemid"].map(V.VASOPRESSOR_BY_ITEMID))
    cv = cv.sort_values(["stay_id", "drug", "starttime"], kind="stable").reset_index(drop=True)
    group = cv.groupby(["stay_id", "drug"], sort=False).ngroup().to_numpy(np.int64)
    t = cv["starttime"].to_numpy(np.int64)
    # rows are sorted by (group, time): the first row strictly after (g, t) is the next charting
    keys = np.rec.fromarrays([group, t])
    nxt = np.searchsorted(keys, keys, side="right")
    nxt_c = np.minimum(nxt, len(t) - 1)
    has_next = (nxt < len(t)) & (group[nxt_c] == group)
    cap = t + int(max_hours * US_PER_HOUR)
    end = np.where(has_next, np.minimum(t[nxt_c], cap), cap)
    return cv.assign(endtime=end).drop(columns="drug")


def _labevents(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    index: _StayIndex,
    progress: bool,
) -> None:
    tr = rep.tables.setdefault("LABEVENTS", TableReport("LABEVENTS"))
    scan = _Scan(data_dir, "LABEVENTS", params, tr, progress)
    writer = _Writer(out / "lab.parquet", LAB_SCHEMA, params.batch_rows)
    wanted = pa.array(sorted(V.lab_itemids_needed()), I32)
    units = UnitChecker("labevents")
    warn_no_unit_column(scan)

    def handle(b: _Batch) -> None:
        b.convert("subject_id", "itemid", "valuenum")
        _keep_items(b, tr, wanted)
        _code_specimen_types(b, tr)
        _drop_null(b, tr, "valuenum", "missing_valuenum")
        check_units(b, scan, units)
        b.convert("charttime")
        _drop_null(b, tr, "charttime", "missing_charttime")
        stay = index.by_subject_time(
            _ids(b["subject_id"]), _ts_us(b["charttime"], 0), params.lab_lookback_hours
        )
        ok = stay >= 0
        b.filter(ok)
        tr.drop("no_stay_for_subject_time", int((~ok).sum()))
        if len(b):
            writer.write(
                pa.table(
                    {
                        "stay_id": pa.array(stay[ok]),
                        "time": b["charttime"],
                        "itemid": b["itemid"],
                        "valuenum": b["valuenum"],
                    }
                )
            )
            tr.rows_kept += len(b)

    scan.run(handle, writer.reset)
    rep.outputs["lab.parquet"] = writer.close()


def _code_specimen_types(b: _Batch, tr: TableReport) -> None:
    """Blood-gas specimen type rows (text ART/VEN/MIX/CENTRAL VENOUS) get a numeric code in
    VALUENUM (variables.SPECIMEN_CODES; 0 = other text), so lab.parquet stays numeric."""
    is_spec = pc.fill_null(pc.equal(b["itemid"], V.LAB_SPECIMEN_TYPE), False)
    if not len(b) or not pc.any(is_spec).as_py() or not b.has("value"):
        return
    names = list(V.SPECIMEN_CODES)
    text = pc.utf8_upper(pc.utf8_trim_whitespace(b["value"].cast(pa.string())))
    pos = pc.index_in(text, value_set=pa.array(names))
    codes = np.array([V.SPECIMEN_CODES[n] for n in names], np.float64)
    pos_np = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False)
    code = np.where(pos_np >= 0, codes[np.maximum(pos_np, 0)], 0.0)
    b.cols["valuenum"] = pc.if_else(is_spec, pa.array(code), b["valuenum"].cast(pa.float64()))
    tr.count_unit("specimen_type_rows", int(pc.sum(is_spec).as_py() or 0))


def _outputevents(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    index: _StayIndex,
    progress: bool,
) -> None:
    tr = rep.tables.setdefault("OUTPUTEVENTS", TableReport("OUTPUTEVENTS"))
    scan = _Scan(data_dir, "OUTPUTEVENTS", params, tr, progress)
    writer = _Writer(out / "urine.parquet", URINE_SCHEMA, params.batch_rows)
    wanted = pa.array(sorted({*V.URINE_ITEMIDS, V.URINE_IRRIGANT_IN}), I32)

    def handle(b: _Batch) -> None:
        b.convert("icustay_id", "itemid", "value")
        _keep_items(b, tr, wanted)
        _drop_null(b, tr, "value", "missing_value")
        neg = pc.less(b["value"], 0.0)
        tr.drop("negative_value", int(pc.sum(neg).as_py() or 0))
        b.filter(pc.invert(neg))
        irrigant_in = pc.fill_null(pc.equal(b["itemid"], V.URINE_IRRIGANT_IN), False)
        if len(b) and pc.any(irrigant_in).as_py():  # urine = irrigant out - irrigant in
            b.cols["value"] = pc.if_else(irrigant_in, pc.negate(b["value"]), b["value"])
        b.convert("charttime")
        _drop_null(b, tr, "charttime", "missing_charttime")
        pos = _keep_known_stays(b, tr, index)
        ok = index.in_window(pos, _ts_us(b["charttime"], 0), CHART_BEFORE_HOURS, CHART_AFTER_HOURS)
        b.filter(ok)
        tr.drop("outside_stay", int((~ok).sum()))
        if len(b):
            writer.write(
                pa.table({"stay_id": b["icustay_id"], "time": b["charttime"], "value": b["value"]})
            )
            tr.rows_kept += len(b)

    scan.run(handle, writer.reset)
    rep.outputs["urine.parquet"] = writer.close()


def _passthrough(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    table: str,
    name: str,
    progress: bool,
) -> None:
    """Tables copied whole (prescriptions, microbiology, diagnoses): typed and renamed only."""
    tr = rep.tables.setdefault(table, TableReport(table))
    scan = _Scan(data_dir, table, params, tr, progress)
    schema = SCHEMAS[name]
    writer = _Writer(out / f"{name}.parquet", schema, params.batch_rows)

    def handle(b: _Batch) -> None:
        b.convert(*scan.logical)
        writer.write(pa.table({c: b[c] for c in schema.names}))
        tr.rows_kept += len(b)

    scan.run(handle, writer.reset)
    rep.outputs[f"{name}.parquet"] = writer.close()


def read_extracted(extracted_dir: Path, name: str) -> pa.Table:
    """Read one extracted parquet file and check it has the declared schema."""
    table = pq.read_table(Path(extracted_dir) / f"{name}.parquet")
    expected = SCHEMAS[name]
    if not table.schema.equals(expected, check_metadata=False):
        raise DataError(
            f"{extracted_dir}/{name}.parquet: schema {table.schema} differs from the declared {expected}"
        )
    return table
