"""The MIMIC-IV tables the reader reads: modules, columns, parameters and layout checks.

MIMIC-IV v2.x and v3.x keep their tables in two modules, ``hosp/`` and ``icu/``, as
``NAME.csv.gz`` or ``NAME.csv``. v1.0 had a ``core/`` module (patients, admissions,
transfers) and older builds other column names (``icustay_id``); both get an error naming
the file and saying that MIMIC-IV v2/v3 is expected. ``icu/chartevents`` may be stood in
for by ``icu/chartevents_reconstructed_from_meds`` (the open demo lacks the real file); the
real one is preferred when both exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import DataError
from data_prep.sources import csv_stream
from data_prep.sources.csv_files import ReaderParams
from data_prep.sources.csv_stream import (
    ExtractionReport,
    MissingTableError,
    Scan,
    TableReport,
    TableSpec,
    read_small,
    resolve_columns,
)

SOURCE = "mimic4"
DATABASE = "MIMIC-IV"
EXPECTED = "MIMIC-IV v2/v3 expected"
CHARTEVENTS_STAND_INS = ("chartevents", "chartevents_reconstructed_from_meds")

# table -> (module, {column: kind}, optional columns)
TABLE_COLUMNS: dict[str, tuple[str, dict[str, str], frozenset[str]]] = {
    "icustays": (
        "icu",
        {
            "subject_id": "i64",
            "hadm_id": "i64",
            "stay_id": "i64",
            "first_careunit": "str",
            "intime": "ts",
            "outtime": "ts",
        },
        frozenset(),
    ),
    "patients": (
        "hosp",
        {
            "subject_id": "i64",
            "gender": "str",
            "anchor_age": "f64",
            "anchor_year": "i64",
            "dod": "ts",
        },
        frozenset({"dod"}),
    ),
    "admissions": (
        "hosp",
        {
            "subject_id": "i64",
            "hadm_id": "i64",
            "admittime": "ts",
            "dischtime": "ts",
            "deathtime": "ts",
            "edregtime": "ts",
            "hospital_expire_flag": "i64",
        },
        frozenset({"deathtime", "edregtime", "hospital_expire_flag"}),
    ),
    "chartevents": (
        "icu",
        {
            "stay_id": "i64",
            "itemid": "i32",
            "charttime": "ts",
            "value": "str",
            "valuenum": "f64",
            "valueuom": "str",
        },
        frozenset({"valueuom"}),
    ),
    "labevents": (
        "hosp",
        {
            "subject_id": "i64",
            "hadm_id": "i64",
            "specimen_id": "i64",
            "itemid": "i32",
            "charttime": "ts",
            "value": "str",
            "valuenum": "f64",
            "valueuom": "str",
        },
        frozenset({"valueuom"}),
    ),
    "outputevents": (
        "icu",
        {"stay_id": "i64", "itemid": "i32", "charttime": "ts", "value": "f64"},
        frozenset(),
    ),
    "inputevents": (
        "icu",
        {
            "subject_id": "i64",
            "hadm_id": "i64",
            "stay_id": "i64",
            "itemid": "i32",
            "starttime": "ts",
            "endtime": "ts",
            "rate": "f64",
            "rateuom": "str",
            "patientweight": "f64",
            "statusdescription": "str",
        },
        frozenset({"statusdescription"}),
    ),
    "procedureevents": (
        "icu",
        {
            "stay_id": "i64",
            "itemid": "i32",
            "starttime": "ts",
            "endtime": "ts",
            "statusdescription": "str",
        },
        frozenset({"statusdescription"}),
    ),
    "prescriptions": (
        "hosp",
        {
            "subject_id": "i64",
            "hadm_id": "i64",
            "pharmacy_id": "i64",
            "starttime": "ts",
            "drug_type": "str",
            "drug": "str",
            "route": "str",
        },
        frozenset({"pharmacy_id"}),
    ),
    "emar": (
        "hosp",
        {
            "subject_id": "i64",
            "hadm_id": "i64",
            "pharmacy_id": "i64",
            "charttime": "ts",
            "medication": "str",
            "event_txt": "str",
        },
        frozenset({"pharmacy_id"}),
    ),
    "microbiologyevents": (
        "hosp",
        {
            "subject_id": "i64",
            "hadm_id": "i64",
            "micro_specimen_id": "i64",
            "chartdate": "ts",
            "charttime": "ts",
            "spec_type_desc": "str",
        },
        frozenset(),
    ),
    "diagnoses_icd": (
        "hosp",
        {"subject_id": "i64", "hadm_id": "i64", "icd_code": "str", "icd_version": "i64"},
        frozenset(),
    ),
}
# Tables that must have rows (what a row is, for the message), as for MIMIC-III.
REQUIRED: dict[str, str] = {
    "icustays": "ICU stay",
    "patients": "patient",
    "admissions": "hospital admission",
    "chartevents": "charted observation",
    "labevents": "laboratory measurement",
    "diagnoses_icd": "ICD diagnosis of an admission (without them no control can be "
    "excluded for a sepsis code)",
}
# Column spellings of older MIMIC builds: found instead of a missing column, named in the error.
_OLD_NAMES = {"stay_id": "icustay_id", "icd_code": "icd9_code", "anchor_age": "dob"}


@dataclass(frozen=True)
class Mimic4Params(ReaderParams):
    """Parameters of the MIMIC-IV reader (from the YAML `labels` section)."""

    lab_lookback_hours: float = 48.0  # labs this long before ICU admission belong to the stay


def _module(data_dir: Path, module: str) -> Path:
    folder = Path(data_dir) / module
    if folder.is_dir():
        return folder
    if not Path(data_dir).is_dir():
        raise MissingTableError(f"MIMIC-IV folder {data_dir} does not exist")
    if (Path(data_dir) / "core").is_dir():
        raise MissingTableError(
            f"{data_dir}: has a core/ module but no {module}/ (the MIMIC-IV v1.0 layout); "
            f"{EXPECTED} (modules hosp/ and icu/)"
        )
    raise MissingTableError(
        f"MIMIC-IV module folder {folder} not found: expected {data_dir} to hold the modules "
        f"hosp/ and icu/ ({EXPECTED})"
    )


def table_path(data_dir: Path, table: str) -> tuple[Path, str]:
    """(file, file stem) of `table`; MissingTableError naming the file otherwise."""
    module = TABLE_COLUMNS[table][0]
    folder = _module(data_dir, module)
    names = CHARTEVENTS_STAND_INS if table == "chartevents" else (table,)
    for name in names:
        try:
            return csv_stream.find_table(folder, name, DATABASE), name
        except MissingTableError:
            if len(names) == 1:
                raise
    raise MissingTableError(
        f"MIMIC-IV table {module}/{table} not found in folder {folder}: expected "
        + " or ".join(f"{n}.csv.gz / {n}.csv" for n in names)
    )


def spec(data_dir: Path, table: str) -> tuple[Path, TableSpec]:
    """(module folder, TableSpec) of `table` as found in `data_dir`."""
    path, name = table_path(data_dir, table)
    _, cols, optional = TABLE_COLUMNS[table]
    return path.parent, TableSpec(name, cols, optional, REQUIRED.get(table), DATABASE)


def check_columns(data_dir: Path, table: str) -> None:
    """Every required column present; an error naming file, column and the expected version."""
    folder, sp = spec(data_dir, table)
    path = csv_stream.find_table(folder, sp.name, DATABASE)
    names, _ = csv_stream.header_and_row_bytes(path)
    have = {n.strip().lower() for n in names}
    missing = [c for c in sp.columns if c not in have and c not in sp.optional]
    if missing:
        old = [f"{_OLD_NAMES[c]} instead of {c}" for c in missing if _OLD_NAMES.get(c) in have]
        hint = f" (found {', '.join(old)}: an older MIMIC layout)" if old else ""
        raise DataError(
            f"{path}: MIMIC-IV table {table} lacks column(s) {', '.join(missing)}{hint}; "
            f"{EXPECTED}; its header has: {', '.join(names)}"
        )
    resolve_columns(path, sp, folder)


def scan(
    data_dir: Path, table: str, params: Mimic4Params, rep: ExtractionReport, progress: bool
) -> Scan:
    folder, sp = spec(data_dir, table)
    tr = rep.tables.setdefault(table, TableReport(table))
    return Scan(folder, sp, params, tr, progress)


def small(data_dir: Path, table: str, params: Mimic4Params, rep: ExtractionReport, progress: bool):
    """A small table read whole (pyarrow Table, every declared column converted)."""
    folder, sp = spec(data_dir, table)
    return read_small(folder, sp, params, rep, progress)


def inputs(data_dir: Path) -> list[Path]:
    """Exactly the files the reader reads (MissingTableError naming a missing one)."""
    return [table_path(Path(data_dir), t)[0] for t in TABLE_COLUMNS]
