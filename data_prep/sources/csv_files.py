"""The raw CSV tables a `Scan` reads: the reading errors, the table declarations
(`TableSpec`, `ScanParams`), and finding, opening and resolving the columns of a table's
file (`data_prep.sources.csv_stream`, which re-exports every name here)."""

from __future__ import annotations

import csv
import errno
import gzip
import logging
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from data_prep.errors import DataError

log = logging.getLogger("data_prep.sources.csv_stream")  # the streaming engine's messages

_VALUES_IN_BYTES_EST = 120  # fallback bytes per CSV row when a sample cannot be read


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class MalformedRowError(DataError):
    """A raw row could not be read; the message names file, data row, column and value."""


class MissingTableError(DataError, FileNotFoundError):
    """A required raw table (or the folder) is absent."""


class CorruptFileError(DataError):
    """A raw file cannot be decompressed or decoded (truncated or corrupt gzip, not UTF-8)."""


class EmptyTableError(DataError):
    """A required table has a header but no data rows."""


try:  # ISA-L's gzip decoder: ~1.7x zlib's speed (gunzip is ~1/4 of a CHARTEVENTS pass)
    from isal import igzip as _igzip
    from isal.isal_zlib import error as _isal_error
except ImportError:  # pragma: no cover - isal is a dependency; Python's gzip still works
    _igzip, _isal_error = None, zlib.error

# Reading errors of a compressed or text stream (zlib.error for Python's gzip module,
# IsalError for ISA-L's, OSError for BadGzipFile, EOFError for a truncated stream).
STREAM_ERRORS = (OSError, EOFError, zlib.error, _isal_error, UnicodeDecodeError)


def open_gzip_binary(raw):
    """A binary reader of the gzip stream in the open file `raw` (ISA-L when installed)."""
    if _igzip is not None:
        return _igzip.IGzipFile(fileobj=raw, mode="rb")
    import gzip

    return gzip.GzipFile(fileobj=raw, mode="rb")


def utf8_error(path: Path, data: bytes, first_row: int) -> CorruptFileError:
    """CorruptFileError naming the data row of the first invalid UTF-8 byte in a chunk."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        n = first_row + data.count(b"\n", 0, exc.start)
        bad = data[exc.start : exc.start + 1]
        return CorruptFileError(
            f"{path}: data row {n:,} (line {n + 1:,}): text that is not valid UTF-8 (byte {bad!r}); "
            "expected a UTF-8 CSV file"
        )
    return CorruptFileError(f"{path}: text that is not valid UTF-8; expected a UTF-8 CSV file")


def stream_error(path: Path, exc: BaseException, rows: int | None) -> CorruptFileError:
    """CorruptFileError naming `path` and the last data row read before `exc`."""
    where = "in its first lines" if rows is None else f"after data row {rows:,}"
    detail = str(exc).strip() or type(exc).__name__
    if isinstance(exc, UnicodeDecodeError):
        what = "text that is not valid UTF-8"
    elif path.name.lower().endswith(".gz"):
        what = "truncated or corrupt gzip stream"
    else:
        what = "read error"
    return CorruptFileError(f"{path}: {what} {where} ({detail}); expected a complete CSV file")


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` is a write failure for lack of space (pyarrow reports it in the text)."""
    if not isinstance(exc, OSError) or isinstance(exc, DataError):
        return False
    codes = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    return exc.errno in codes or "No space left" in str(exc) or "Disk quota" in str(exc)


# --------------------------------------------------------------------------------------
# Table declarations
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec:
    """What a source reads from one raw table."""

    name: str  # the table name, also the file name stem (NAME.csv or NAME.csv.gz, any case)
    columns: Mapping[str, str]  # column (lower case) -> kind (KIND_TYPE)
    optional: frozenset[str] = field(default_factory=frozenset)  # columns that may be absent
    # What one row is ("ICU stay"), when the table must have rows (EmptyTableError otherwise);
    # None: a table without rows is read as empty, with a report warning.
    required: str | None = None
    source: str = "CSV"  # the database, in messages ("MIMIC-III table X not found ...")


class ScanParams(Protocol):
    """The reader parameters a `Scan` uses (a source's own parameters carry these)."""

    on_bad_rows: str  # "error" | "skip-and-count"
    batch_rows: int  # record batch size of the streaming reader


@dataclass(frozen=True)
class ReaderParams:
    """Parameters of a streaming CSV reader (MIMIC-III, MIMIC-IV; from the YAML `labels`
    section). A source may subclass it to change a default."""

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


# --------------------------------------------------------------------------------------


def find_table(data_dir: Path, table: str, source: str = "CSV") -> Path:
    """Path of `table` in `data_dir` as TABLE.csv(.gz), any case; clear error when absent.

    `source` names the database in the error ("MIMIC-III table ICUSTAYS not found ...").
    """
    wanted = {f"{table.lower()}.csv.gz": 0, f"{table.lower()}.csv": 1}
    hits = sorted(
        (wanted[p.name.lower()], p.name, p)
        for p in Path(data_dir).iterdir()
        if p.name.lower() in wanted and p.is_file()
    )
    if not hits:
        raise MissingTableError(
            f"{source} table {table} not found in folder {data_dir}: expected {table}.csv.gz or "
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


def open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return open(path, newline="", encoding="utf-8")


def header_and_row_bytes(path: Path) -> tuple[list[str], float]:
    """Column names of a CSV file and the mean bytes per data row of its first lines."""
    try:
        with open_text(path) as fh:
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


def resolve_columns(
    path: Path, spec: TableSpec, data_dir: Path
) -> tuple[dict[str, str], float, list[str]]:
    """Map our lower-case column names to the file's spelling; clear error for missing ones."""
    names, row_bytes = header_and_row_bytes(path)
    by_lower = {n.strip().lower(): n for n in names}
    out: dict[str, str] = {}
    missing = []
    for col in spec.columns:
        if col in by_lower:
            out[col] = by_lower[col]
        elif col not in spec.optional:
            missing.append(col.upper())
    if missing:
        raise DataError(
            f"{spec.source} table {spec.name} ({path.name} in folder {data_dir}) lacks required column(s) "
            f"{', '.join(missing)}; its header has: {', '.join(names)}"
        )
    return out, row_bytes, names
