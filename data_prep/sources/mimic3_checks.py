"""Checks of raw MIMIC-III input for the streaming reader (data_prep.sources.mimic3).

The tables that must have rows and the per-batch unit check against concepts/units.csv. The
error types and the messages for corrupt streams and non-UTF-8 text are the shared CSV
engine's (data_prep.sources.csv_stream), re-exported here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from data_prep.concepts import variables as V
from data_prep.concepts.units import UnitChecker
from data_prep.sources.csv_stream import (  # noqa: F401  (re-exported for the MIMIC-III reader)
    STREAM_ERRORS,
    CorruptFileError,
    EmptyTableError,
    MalformedRowError,
    MissingTableError,
    disk_full,
    stream_error,
    utf8_error,
)

if TYPE_CHECKING:  # the reader's classes, for annotations only (no import cycle)
    from data_prep.sources.csv_stream import Batch, Scan

log = logging.getLogger("data_prep.sources.mimic3")


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


def warn_no_unit_column(scan: Scan) -> None:
    if "valueuom" not in scan.actual:
        msg = (
            f"{scan.path}: no VALUEUOM column; every value is taken as in its expected unit "
            "(counted as no_unit)"
        )
        log.warning("%s", msg)
        scan.report.warnings.append(msg)


def check_units(b: Batch, scan: Scan, units: UnitChecker) -> None:
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
