"""Checks of raw MIMIC-III input for the streaming reader (data_prep.sources.mimic3).

The error types, the tables that must have rows, the messages for corrupt streams and
non-UTF-8 text, and the per-batch unit check against concepts/units.csv.
"""

from __future__ import annotations

import errno
import logging
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data_prep.concepts import variables as V
from data_prep.concepts.units import UnitChecker
from data_prep.errors import DataError

if TYPE_CHECKING:  # the reader's classes, for annotations only (no import cycle)
    from data_prep.sources.mimic3 import _Batch, _Scan

log = logging.getLogger("data_prep.sources.mimic3")


class MalformedRowError(DataError):
    """A raw row could not be read; the message names file, data row, column and value."""


class MissingTableError(DataError, FileNotFoundError):
    """A required MIMIC-III table (or the folder) is absent."""


class CorruptFileError(DataError):
    """A raw file cannot be decompressed or decoded (truncated or corrupt gzip, not UTF-8)."""


class EmptyTableError(DataError):
    """A required table has a header but no data rows."""


# Tables that must have data rows, with what each row is (for the error message). An empty
# one would not fail later but silently change the result: no stays, no ages or deaths, no
# vitals or labs for SOFA, or (DIAGNOSES_ICD) no ICD-9 sepsis codes, which disables the
# control exclusion. The other tables may legitimately be empty in a subset (a CareVue-only
# extract has no INPUTEVENTS_MV rows): that is recorded as a warning in the report.
REQUIRED_TABLES: dict[str, str] = {
    "ICUSTAYS": "ICU stay",
    "PATIENTS": "patient",
    "ADMISSIONS": "hospital admission",
    "CHARTEVENTS": "charted observation",
    "LABEVENTS": "laboratory measurement",
    "DIAGNOSES_ICD": "ICD-9 diagnosis of an admission (without them no control can be "
    "excluded for a sepsis code)",
}
# Reading errors of a compressed or text stream (zlib.error for Python's gzip module, OSError
# for pyarrow's and for BadGzipFile, EOFError for a truncated stream).
STREAM_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError)


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


def warn_no_unit_column(scan: _Scan) -> None:
    if "valueuom" not in scan.actual:
        msg = (
            f"{scan.path}: no VALUEUOM column; every value is taken as in its expected unit "
            "(counted as no_unit)"
        )
        log.warning("%s", msg)
        scan.report.warnings.append(msg)


def check_units(b: _Batch, scan: _Scan, units: UnitChecker) -> None:
    """Convert VALUENUM to the expected units (concepts/units.csv), count empty units; an
    unknown unit raises (on_bad_rows: error) or drops and counts the row per group and unit."""
    if not len(b):
        return
    tr = scan.report
    uom = b["valueuom"] if b.has("valueuom") else None
    res = units.apply(b["itemid"].to_numpy(zero_copy_only=False), b["valuenum"], uom)
    b.cols["valuenum"] = res.valuenum
    for group, n in res.no_unit.items():
        tr.count_unit(f"no_unit:{group}", n)
    for (group, unit), n in res.converted.items():
        tr.count_unit(f"converted:{group}:{unit}", n)
    if not res.unknown.any():
        return
    if scan.params.on_bad_rows == "error":
        i = int(np.flatnonzero(res.unknown)[0])
        item = int(b["itemid"][i].as_py())
        group = V.unit_groups(scan.table.lower())[item]
        row = int(b.row_numbers()[i])
        raise MalformedRowError(
            f"{scan.path}: data row {row} (line {row + 1}), column "
            f"{scan.actual['valueuom']!r}: unit {uom[i].as_py()!r} of ITEMID {item} ({group}) is "
            f"not known; expected {units.describe(group)} (table {scan.table}; add a conversion "
            "to data_prep/concepts/units.csv, or set on_bad_rows: skip-and-count to skip and "
            "count such rows)"
        )
    for (group, unit), n in res.unknown_counts.items():
        tr.drop(f"unknown_unit:{group}:{unit}", n)
    b.filter(~res.unknown)
