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

The streaming engine (scan, batches, parquet writer, reports) is data_prep.sources.csv_stream
and the stay lookup data_prep.sources.stay_index; this module holds the MIMIC-III tables,
columns and per-table handlers.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_prep.concepts import variables as V
from data_prep.concepts.infection import mv_antibiotic_items
from data_prep.concepts.units import UnitChecker
from data_prep.errors import DataError
from data_prep.sources import csv_stream
from data_prep.sources.csv_stream import (  # noqa: F401  (ExtractionReport, peak_rss_mb re-exported)
    BOOL,
    F64,
    I32,
    I64,
    STR,
    TS,
    US_PER_HOUR,
    Batch,
    ExtractionReport,
    ParquetSink,
    Scan,
    TableReport,
    TableSpec,
    drop_null,
    ids,
    keep_items,
    peak_rss_mb,
    read_small,
    resolve_columns,
    times_to_arrow,
    ts_us,
)
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
from data_prep.sources.stay_index import FirstPerStay, StayIndex, keep_known_stays

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
US_PER_YEAR = 365.25 * 24 * US_PER_HOUR

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


def _scan(
    data_dir: Path, table: str, params: ReaderParams, tr: TableReport, progress: bool
) -> Scan:
    return Scan(data_dir, TABLES[table], params, tr, progress)


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


def _stays_base(
    data_dir: Path, params: ReaderParams, rep: ExtractionReport, progress: bool
) -> pd.DataFrame:
    icu = read_small(data_dir, TABLES["ICUSTAYS"], params, rep, progress).to_pandas()
    pat = read_small(data_dir, TABLES["PATIENTS"], params, rep, progress).to_pandas()
    adm = read_small(data_dir, TABLES["ADMISSIONS"], params, rep, progress).to_pandas()
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


def _vaso_rates(df: pd.DataFrame, scan: Scan, tr: TableReport, weight_col: str) -> pd.DataFrame:
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
    for spec in TABLES.values():
        resolve_columns(find_table(data_dir, spec.name), spec, data_dir)

    stays = _stays_base(data_dir, params, rep, progress)
    index = StayIndex(stays)

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
    index: StayIndex,
    progress: bool,
) -> tuple[set[int], pd.DataFrame]:
    tr = rep.tables.setdefault("CHARTEVENTS", TableReport("CHARTEVENTS"))
    scan = _scan(data_dir, "CHARTEVENTS", params, tr, progress)
    writer = ParquetSink(out / "chart.parquet", CHART_SCHEMA, params.batch_rows)
    wanted = pa.array(sorted(V.chart_itemids_needed()), I32)
    text_items = pa.array(sorted(CHART_TEXT_ITEMIDS), I32)
    weight_items = np.array(sorted({*V.WEIGHT_ITEMIDS_KG, *V.WEIGHT_ITEMIDS_LB}), np.int32)
    lb_items = np.array(V.WEIGHT_ITEMIDS_LB, np.int32)
    units = UnitChecker("chartevents")
    warn_no_unit_column(scan)
    # Constant-size state, whatever the table size: a flag per stay and one weight per stay.
    has_chart = np.zeros(len(index.ids), dtype=bool)
    first_w = FirstPerStay(index)
    implausible = [0]

    def reset() -> None:
        writer.reset()
        has_chart[:] = False
        first_w.clear()
        implausible[0] = 0

    def handle(b: Batch) -> None:
        b.convert("icustay_id", "itemid", "valuenum")  # numeric columns: validated on every row
        ids_found, ids_pos = index.by_id(ids(pc.unique(b["icustay_id"])))
        has_chart[ids_pos[ids_found]] = True
        n = len(b)
        keep = pc.is_in(b["itemid"], value_set=wanted)
        b.filter(keep)
        tr.drop("itemid_not_needed", n - len(b))
        b.convert("charttime")  # only the kept rows pay for timestamp parsing
        drop_null(b, tr, "charttime", "missing_charttime")
        # stay, error flag and time window decided together: one filter pass instead of three
        found, pos = index.by_id(ids(b["icustay_id"]))
        t = ts_us(b["charttime"], 0)
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
            wt = ts_us(pc.filter(b["charttime"], pa.array(wmask)), 0)  # after the unit filter
            first_w.add(ids(b["icustay_id"])[wmask][plausible], wt[plausible], vals[plausible])

    scan.run(handle, reset)
    rep.outputs["chart.parquet"] = writer.close()
    rep.tables.setdefault("stays", TableReport("stays")).drop(
        "implausible_charted_weight", implausible[0]
    )
    return set(index.ids[has_chart].tolist()), first_w.result()


def _inputevents_mv(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    index: StayIndex,
    chart_weights: pd.DataFrame,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MetaVision vasopressor rates (written to a part file) and first admission weight per stay."""
    tr = rep.tables.setdefault("INPUTEVENTS_MV", TableReport("INPUTEVENTS_MV"))
    scan = _scan(data_dir, "INPUTEVENTS_MV", params, tr, progress)
    wanted = pa.array(sorted(MV_VASO_ITEMIDS), I32)
    stay_w = chart_weights.set_index("stay_id")["weight_kg"]
    parts: list[pd.DataFrame] = []
    weights = FirstPerStay(index)
    abx_items = mv_antibiotic_items()
    abx_wanted = pa.array(sorted(abx_items), I32)
    abx_parts: list[pd.DataFrame] = []

    def reset() -> None:
        parts.clear()
        weights.clear()
        abx_parts.clear()

    def antibiotics(b: Batch) -> None:
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
            t = ts_us(pc.cast(pc.filter(b["starttime"], sel), TS), -1)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            t = np.full(int(pc.sum(sel).as_py() or 0), -1, np.int64)
        sid = ids(pc.filter(b["icustay_id"], sel))
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

    def handle(b: Batch) -> None:
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
                    ids(pc.filter(b["icustay_id"], has_w))[ok],
                    ts_us(st, np.iinfo(np.int64).max)[ok],
                    w[ok],
                )
        antibiotics(b)
        keep_items(b, tr, wanted)
        if b.has("statusdescription"):
            rewritten = pc.fill_null(
                pc.equal(pc.utf8_lower(b["statusdescription"]), "rewritten"), False
            )
            tr.drop("status_rewritten", int(pc.sum(rewritten).as_py() or 0))
            b.filter(pc.invert(rewritten))
        b.convert("starttime", "endtime")
        drop_null(b, tr, "starttime", "missing_starttime")
        drop_null(b, tr, "endtime", "missing_endtime")
        drop_null(b, tr, "rate", "missing_rate")
        keep_known_stays(b, tr, index, "icustay_id")
        if not len(b):
            return
        df = pd.DataFrame(
            {
                "stay_id": ids(b["icustay_id"]),
                "itemid": b["itemid"].to_numpy(zero_copy_only=False),
                "starttime": ts_us(b["starttime"], 0),
                "endtime": ts_us(b["endtime"], 0),
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
    index: StayIndex,
    stays: pd.DataFrame,
    mv_vaso: pd.DataFrame,
    progress: bool,
) -> None:
    """CareVue vasopressor rates -> intervals; written with the MetaVision rows."""
    tr = rep.tables.setdefault("INPUTEVENTS_CV", TableReport("INPUTEVENTS_CV"))
    scan = _scan(data_dir, "INPUTEVENTS_CV", params, tr, progress)
    wanted = pa.array(sorted(CV_VASO_ITEMIDS), I32)
    stay_w = stays.set_index("stay_id")["weight_kg"]
    parts: list[pd.DataFrame] = []

    def handle(b: Batch) -> None:
        b.convert("icustay_id", "itemid", "rate")
        keep_items(b, tr, wanted)
        b.convert("charttime")
        drop_null(b, tr, "charttime", "missing_charttime")
        drop_null(b, tr, "rate", "missing_rate")
        keep_known_stays(b, tr, index, "icustay_id")
        if not len(b):
            return
        df = pd.DataFrame(
            {
                "stay_id": ids(b["icustay_id"]),
                "itemid": b["itemid"].to_numpy(zero_copy_only=False),
                "starttime": ts_us(b["charttime"], 0),
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
            "starttime": times_to_arrow(vaso["starttime"].to_numpy(np.int64)),
            "endtime": times_to_arrow(vaso["endtime"].to_numpy(np.int64)),
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
    index: StayIndex,
    progress: bool,
) -> None:
    tr = rep.tables.setdefault("LABEVENTS", TableReport("LABEVENTS"))
    scan = _scan(data_dir, "LABEVENTS", params, tr, progress)
    writer = ParquetSink(out / "lab.parquet", LAB_SCHEMA, params.batch_rows)
    wanted = pa.array(sorted(V.lab_itemids_needed()), I32)
    units = UnitChecker("labevents")
    warn_no_unit_column(scan)

    def handle(b: Batch) -> None:
        b.convert("subject_id", "itemid", "valuenum")
        keep_items(b, tr, wanted)
        _code_specimen_types(b, tr)
        drop_null(b, tr, "valuenum", "missing_valuenum")
        check_units(b, scan, units)
        b.convert("charttime")
        drop_null(b, tr, "charttime", "missing_charttime")
        stay = index.by_subject_time(
            ids(b["subject_id"]), ts_us(b["charttime"], 0), params.lab_lookback_hours
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


def _code_specimen_types(b: Batch, tr: TableReport) -> None:
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
    index: StayIndex,
    progress: bool,
) -> None:
    tr = rep.tables.setdefault("OUTPUTEVENTS", TableReport("OUTPUTEVENTS"))
    scan = _scan(data_dir, "OUTPUTEVENTS", params, tr, progress)
    writer = ParquetSink(out / "urine.parquet", URINE_SCHEMA, params.batch_rows)
    wanted = pa.array(sorted({*V.URINE_ITEMIDS, V.URINE_IRRIGANT_IN}), I32)

    def handle(b: Batch) -> None:
        b.convert("icustay_id", "itemid", "value")
        keep_items(b, tr, wanted)
        drop_null(b, tr, "value", "missing_value")
        neg = pc.less(b["value"], 0.0)
        tr.drop("negative_value", int(pc.sum(neg).as_py() or 0))
        b.filter(pc.invert(neg))
        irrigant_in = pc.fill_null(pc.equal(b["itemid"], V.URINE_IRRIGANT_IN), False)
        if len(b) and pc.any(irrigant_in).as_py():  # urine = irrigant out - irrigant in
            b.cols["value"] = pc.if_else(irrigant_in, pc.negate(b["value"]), b["value"])
        b.convert("charttime")
        drop_null(b, tr, "charttime", "missing_charttime")
        pos = keep_known_stays(b, tr, index, "icustay_id")
        ok = index.in_window(pos, ts_us(b["charttime"], 0), CHART_BEFORE_HOURS, CHART_AFTER_HOURS)
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
    scan = _scan(data_dir, table, params, tr, progress)
    schema = SCHEMAS[name]
    writer = ParquetSink(out / f"{name}.parquet", schema, params.batch_rows)

    def handle(b: Batch) -> None:
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
