"""Streaming MIMIC-III reader: raw PhysioNet CSV tables -> `prepared/extracted/` (the events contract).

`extract(data_dir, out_dir, params)` reads a folder of MIMIC-III tables (`.csv` or `.csv.gz`,
upper- or lower-case file and column names, full timestamps or date-only columns) and writes
the extracted-events contract (docs/CONTRACTS.md, data_prep/io.py EVENTS and ADMISSION_EVENTS):

* `stays.parquet` (one row per ICU stay, with has_chart and the first weight);
* `events/` parts (io.EVENTS), one per raw table: `chartevents.parquet`, `labevents.parquet`,
  `outputevents.parquet`, `inputevents.parquet` (vasopressors, MetaVision + CareVue). Each row
  is named by the dictionary concept of its item and its value is in the concept's unit (the
  dictionary's `convert` and `negate`, applied through a vectorised item lookup,
  data_prep.sources.concept_map);
* `admission_events.parquet` (io.ADMISSION_EVENTS): antibiotics, cultures and sepsis
  diagnosis codes (data_prep.sources.mimic3_admission);
* `extraction_report.json`.

The big event tables (CHARTEVENTS has ~330 M rows) are streamed with `pyarrow.csv.open_csv`
in record batches: only the needed columns are decoded, the ITEMID filter runs on the integer
column before any timestamp parsing, and each filtered batch is appended to a parquet writer,
so peak memory depends on the batch size, not on the table size.

Malformed values are found in two passes: the fast pass lets the CSV decoder type the numeric
columns; if it fails, the table is re-read with every column as a string and converted batch by
batch, which can name the data row, column and value (or skip and count the row under
`on_bad_rows = "skip-and-count"`). Nothing is dropped without being counted in the report.

The streaming engine is data_prep.sources.csv_stream, the stay lookup stay_index, the tables
and parameters mimic3_tables, the infusions mimic3_inputs; this module holds the stays and the
chart, lab and output handlers.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_prep import io
from data_prep.concepts.dictionary import concepts
from data_prep.concepts.units import UnitChecker
from data_prep.errors import DataError
from data_prep.sources.concept_map import ConceptMap
from data_prep.sources.csv_stream import (  # noqa: F401  (ExtractionReport, peak_rss_mb re-exported)
    BOOL,
    F64,
    I64,
    STR,
    TS,
    US_PER_HOUR,
    Batch,
    ExtractionReport,
    ParquetSink,
    TableReport,
    drop_null,
    ids,
    keep_items,
    peak_rss_mb,
    read_small,
    resolve_columns,
    ts_us,
)
from data_prep.sources.mimic3_admission import admission_events
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
from data_prep.sources.mimic3_inputs import (  # noqa: F401  (cv_intervals re-exported)
    CV_MAX_HOURS,
    cv_intervals,
    inputevents_cv,
    inputevents_mv,
)
from data_prep.sources.mimic3_tables import (  # noqa: F401  (re-exported)
    SOURCE,
    TABLE_COLUMNS,
    TABLES,
    WEIGHT_MAX_KG,
    ReaderParams,
    find_table,
    scan,
)
from data_prep.sources.stay_index import FirstPerStay, StayIndex, keep_known_stays

log = logging.getLogger(__name__)

# Chart rows of a stay are kept inside [intime - 24 h, outtime + 1 h] (pre-admission vitals
# and documentation a little after discharge are common; anything further is another visit).
CHART_BEFORE_HOURS = 24.0
CHART_AFTER_HOURS = 1.0
AGE_CAP = 91.4  # MIMIC-III shifts ages > 89 to ~300 years; the customary median replacement
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
EVENT_PARTS = ("chartevents", "labevents", "outputevents", "inputevents")  # events/<part>.parquet
# extracted file (without .parquet) -> schema
SCHEMAS: dict[str, pa.Schema] = {
    "stays": STAYS_SCHEMA,
    **{f"events/{p}": io.EVENTS for p in EVENT_PARTS},
    "admission_events": io.ADMISSION_EVENTS,
}


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


def extract(
    data_dir: Path, out_dir: Path, params: ReaderParams, progress: bool = True
) -> ExtractionReport:
    """Stream the MIMIC-III tables in `data_dir` into the extracted-events contract, atomically.

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
    events = out / "events"
    events.mkdir()

    has_chart, chart_weights = _chartevents(data_dir, events, params, rep, index, progress)
    mv_vaso, mv_weights, mv_abx = inputevents_mv(
        data_dir, params, rep, index, chart_weights, progress
    )

    # weight_kg: first charted weight, else the first MetaVision admission weight
    w = chart_weights.set_index("stay_id")["weight_kg"]
    w = w.combine_first(mv_weights.set_index("stay_id")["weight_kg"]) if len(mv_weights) else w
    stays["weight_kg"] = stays["stay_id"].map(w).astype("float64")
    stays["has_chart"] = stays["stay_id"].isin(has_chart)

    inputevents_cv(data_dir, events, params, rep, index, stays, mv_vaso, progress)
    _labevents(data_dir, events, params, rep, index, progress)
    _outputevents(data_dir, events, params, rep, index, progress)
    admission_events(data_dir, out, params, rep, stays, mv_abx, progress)

    table = pa.Table.from_pandas(stays[STAYS_SCHEMA.names], preserve_index=False).cast(STAYS_SCHEMA)
    pq.write_table(table, out / "stays.parquet", compression="zstd")
    rep.outputs["stays.parquet"] = table.num_rows
    rep.warnings = [w for tr in rep.tables.values() for w in tr.warnings]
    rep.seconds = time.perf_counter() - t_start
    rep.peak_rss_mb = peak_rss_mb()
    log.info("MIMIC-III extraction: %s", {k: v for k, v in rep.outputs.items()})
    return rep


def _write_events(
    sink: ParquetSink,
    b: Batch,
    cmap: ConceptMap,
    stay: pa.Array,
    time_col: str,
    value_col: str,
    text: pa.Array | None = None,
) -> np.ndarray:
    """Append the batch's rows as events (concept and value by the item); the concept codes."""
    item = b["itemid"].to_numpy(zero_copy_only=False)
    code = cmap.code[item]
    n = len(b)
    sink.write(
        pa.table(
            {
                "stay_id": stay,
                "time": b[time_col],
                "concept": cmap.names.take(pa.array(code)),
                "value": cmap.value(item, b[value_col]),
                "end_time": pa.nulls(n, TS),
                "text": text if text is not None else pa.nulls(n, STR),
            }
        )
    )
    return code


def _chartevents(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    index: StayIndex,
    progress: bool,
) -> tuple[set[int], pd.DataFrame]:
    tr = rep.tables.setdefault("CHARTEVENTS", TableReport("CHARTEVENTS"))
    sc = scan(data_dir, "CHARTEVENTS", params, tr, progress)
    writer = ParquetSink(out / "chartevents.parquet", io.EVENTS, params.batch_rows)
    cmap = ConceptMap(SOURCE, "chartevents")
    weight_code = cmap.names.index("weight").as_py()
    units = UnitChecker("chartevents")
    warn_no_unit_column(sc)
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
        keep_items(b, tr, cmap.ids)
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
        b.filter(found & ~err & inside)
        check_units(b, sc, units)
        if not len(b):
            return
        text_rows = pc.is_in(b["itemid"], value_set=cmap.text_ids)
        text = pc.if_else(text_rows, b["value"], pa.scalar(None, STR))
        code = _write_events(writer, b, cmap, b["icustay_id"], "charttime", "valuenum", text)
        tr.rows_kept += len(b)
        wmask = code == weight_code
        if wmask.any():  # the first plausible weight (kg) of each stay
            item = b["itemid"].to_numpy(zero_copy_only=False)[wmask]
            raw = pc.fill_null(b["valuenum"], np.nan).to_numpy(zero_copy_only=False)[wmask]
            vals = raw * cmap.scale[item] + cmap.offset[item]
            plausible = (vals > 0) & (vals <= WEIGHT_MAX_KG)
            implausible[0] += int((~plausible).sum())
            wt = ts_us(pc.filter(b["charttime"], pa.array(wmask)), 0)  # after the unit filter
            first_w.add(ids(b["icustay_id"])[wmask][plausible], wt[plausible], vals[plausible])

    sc.run(handle, reset)
    rep.outputs["events/chartevents.parquet"] = writer.close()
    rep.tables.setdefault("stays", TableReport("stays")).drop(
        "implausible_charted_weight", implausible[0]
    )
    return set(index.ids[has_chart].tolist()), first_w.result()


def _labevents(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    index: StayIndex,
    progress: bool,
) -> None:
    tr = rep.tables.setdefault("LABEVENTS", TableReport("LABEVENTS"))
    sc = scan(data_dir, "LABEVENTS", params, tr, progress)
    writer = ParquetSink(out / "labevents.parquet", io.EVENTS, params.batch_rows)
    cmap = ConceptMap(SOURCE, "labevents")
    coded = _coded_items(cmap)
    units = UnitChecker("labevents")
    warn_no_unit_column(sc)

    def handle(b: Batch) -> None:
        b.convert("subject_id", "itemid", "valuenum")
        keep_items(b, tr, cmap.ids)
        for items, codes in coded:
            _code_text(b, tr, items, codes)
        drop_null(b, tr, "valuenum", "missing_valuenum")
        check_units(b, sc, units)
        b.convert("charttime")
        drop_null(b, tr, "charttime", "missing_charttime")
        stay = index.by_subject_time(
            ids(b["subject_id"]), ts_us(b["charttime"], 0), params.lab_lookback_hours
        )
        ok = stay >= 0
        b.filter(ok)
        tr.drop("no_stay_for_subject_time", int((~ok).sum()))
        if len(b):
            _write_events(writer, b, cmap, pa.array(stay[ok]), "charttime", "valuenum")
            tr.rows_kept += len(b)

    sc.run(handle, writer.reset)
    rep.outputs["events/labevents.parquet"] = writer.close()


def _coded_items(cmap: ConceptMap) -> list[tuple[pa.Array, dict[str, int]]]:
    """(items, text -> code) of the concepts whose text the dictionary codes (`codes`)."""
    d = concepts()
    names = cmap.names.to_pylist()
    return [
        (pa.array(cmap.of([c]), pa.int32()), dict(d[c].extra["codes"]))
        for c in names
        if "codes" in d[c].extra
    ]


def _code_text(b: Batch, tr: TableReport, items: pa.Array, codes: dict[str, int]) -> None:
    """Rows of a coded concept (blood-gas specimen type: text ART/VEN/MIX/CENTRAL VENOUS) get
    the numeric code of their text in VALUENUM (0 = other text), so events stay numeric."""
    is_coded = pc.fill_null(pc.is_in(b["itemid"], value_set=items), False)
    if not len(b) or not pc.any(is_coded).as_py() or not b.has("value"):
        return
    names = list(codes)
    text = pc.utf8_upper(pc.utf8_trim_whitespace(b["value"].cast(pa.string())))
    pos = pc.index_in(text, value_set=pa.array(names))
    code_of = np.array([codes[n] for n in names], np.float64)
    pos_np = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False)
    code = np.where(pos_np >= 0, code_of[np.maximum(pos_np, 0)], 0.0)
    b.cols["valuenum"] = pc.if_else(is_coded, pa.array(code), b["valuenum"].cast(pa.float64()))
    tr.count_unit("specimen_type_rows", int(pc.sum(is_coded).as_py() or 0))


def _outputevents(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    index: StayIndex,
    progress: bool,
) -> None:
    tr = rep.tables.setdefault("OUTPUTEVENTS", TableReport("OUTPUTEVENTS"))
    sc = scan(data_dir, "OUTPUTEVENTS", params, tr, progress)
    writer = ParquetSink(out / "outputevents.parquet", io.EVENTS, params.batch_rows)
    cmap = ConceptMap(SOURCE, "outputevents")

    def handle(b: Batch) -> None:
        b.convert("icustay_id", "itemid", "value")
        keep_items(b, tr, cmap.ids)
        drop_null(b, tr, "value", "missing_value")
        neg = pc.less(b["value"], 0.0)
        tr.drop("negative_value", int(pc.sum(neg).as_py() or 0))
        b.filter(pc.invert(neg))
        b.convert("charttime")
        drop_null(b, tr, "charttime", "missing_charttime")
        pos = keep_known_stays(b, tr, index, "icustay_id")
        ok = index.in_window(pos, ts_us(b["charttime"], 0), CHART_BEFORE_HOURS, CHART_AFTER_HOURS)
        b.filter(ok)
        tr.drop("outside_stay", int((~ok).sum()))
        if len(b):  # negated items (GU irrigant in: urine = irrigant out - irrigant in)
            _write_events(writer, b, cmap, b["icustay_id"], "charttime", "value")
            tr.rows_kept += len(b)

    sc.run(handle, writer.reset)
    rep.outputs["events/outputevents.parquet"] = writer.close()


def read_extracted(extracted_dir: Path, name: str) -> pa.Table:
    """Read one extracted parquet file (`SCHEMAS` key) and check it has the declared schema."""
    table = pq.read_table(Path(extracted_dir) / f"{name}.parquet")
    expected = SCHEMAS[name]
    if not table.schema.equals(expected, check_metadata=False):
        raise DataError(
            f"{extracted_dir}/{name}.parquet: schema {table.schema} differs from the declared {expected}"
        )
    return table
