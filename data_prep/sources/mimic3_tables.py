"""The MIMIC-III tables the reader reads (columns, kinds, optional columns) and its parameters.

Shared by the reader's modules (data_prep.sources.mimic3, mimic3_inputs, mimic3_admission);
`data_prep.sources.mimic3` re-exports `TABLE_COLUMNS`, `find_table` and `ReaderParams`.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.sources import csv_stream
from data_prep.sources.csv_files import ReaderParams  # noqa: F401  (re-exported)
from data_prep.sources.csv_stream import Scan, TableReport, TableSpec
from data_prep.sources.mimic3_checks import REQUIRED_TABLES

SOURCE = "mimic3"
WEIGHT_MAX_KG = 500.0  # a weight above this is implausible (charted or admission weight)

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
    "DIAGNOSES_ICD": {"subject_id": "i64", "hadm_id": "i64", "icd9_code": "str"},
}
# Without VALUEUOM every value is taken as in its expected unit (counted as no_unit).
_OPTIONAL = {
    ("CHARTEVENTS", "error"),
    ("INPUTEVENTS_MV", "statusdescription"),
    ("CHARTEVENTS", "valueuom"),
    ("LABEVENTS", "valueuom"),
    ("LABEVENTS", "value"),
}
TABLES: dict[str, TableSpec] = {
    t: TableSpec(
        t,
        cols,
        frozenset(c for tt, c in _OPTIONAL if tt == t),
        REQUIRED_TABLES.get(t),
        "MIMIC-III",
    )
    for t, cols in TABLE_COLUMNS.items()
}


def find_table(data_dir: Path, table: str) -> Path:
    """Path of MIMIC-III `table` in `data_dir` as TABLE.csv(.gz), any case; clear error when absent."""
    return csv_stream.find_table(data_dir, table, "MIMIC-III")


def scan(data_dir: Path, table: str, params: ReaderParams, tr: TableReport, progress: bool) -> Scan:
    """A streaming scan of MIMIC-III `table`."""
    return Scan(data_dir, TABLES[table], params, tr, progress)
