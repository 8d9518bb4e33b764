"""The MIMIC-IV source (v2.x and v3.x, modules hosp/ and icu/): raw tables -> the
extracted-events contract (docs/CONTRACTS.md; notes in data_prep/sources/__init__.py).

Writes into the folder it is given (the pipeline's extract stage makes it atomic):

* ``stays.parquet`` (io.EXTRACTED_STAYS): one row per icu/icustays stay; age = anchor_age +
  year(intime) - anchor_year; died = the admission's hospital_expire_flag (hospital death,
  as MIMIC-III), else deathtime set or dod on or before the discharge day; unit =
  first_careunit; dbsource null (MIMIC-IV has no CareVue/MetaVision split); has_chart = the
  stay has chartevents rows; weight_kg = the first charted weight (226512/224639 kg,
  226531 lb), else the first inputevents ``patientweight``.
* ``events/`` (io.EVENTS): chartevents, labevents, outputevents, inputevents (vasopressor
  rates in mcg/kg/min), procedureevents (ventilation intervals), by the ``mimic4`` mappings
  of data_prep/concepts/dictionary.yaml (data_prep.sources.mimic4_events, mimic4_inputs).
* ``admission_events.parquet`` (io.ADMISSION_EVENTS): antibiotics, cultures and sepsis
  codes (data_prep.sources.mimic4_admissions).
* ``extraction_report.json``: rows read, kept and dropped (with reasons) per table.

The big tables stream through data_prep.sources.csv_stream in record batches (memory bounded
by the batch size); every table and column is checked before the first one is read, so a
missing table or an older layout fails in seconds, naming the file.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from data_prep import io as dio
from data_prep.errors import DataError
from data_prep.sources import ReaderOptions, Source
from data_prep.sources import mimic4_admissions as A
from data_prep.sources import mimic4_events as E
from data_prep.sources import mimic4_tables as T
from data_prep.sources.csv_stream import ExtractionReport, TableReport, disk_full, peak_rss_mb
from data_prep.sources.mimic4_inputs import inputevents
from data_prep.sources.mimic4_tables import Mimic4Params
from data_prep.sources.stay_index import StayIndex

log = logging.getLogger(__name__)


def stays_base(
    data_dir: Path, params: Mimic4Params, rep: ExtractionReport, progress: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(stays without has_chart/weight_kg, admissions) from icustays, patients, admissions."""
    icu = T.small(data_dir, "icustays", params, rep, progress).to_pandas()
    pat = T.small(data_dir, "patients", params, rep, progress).to_pandas()
    adm = T.small(data_dir, "admissions", params, rep, progress).to_pandas()
    tr = rep.tables["icustays"]
    n = len(icu)
    icu = icu[icu["stay_id"].notna()]
    tr.drop("missing_stay_id", n - len(icu))
    dup = icu["stay_id"].duplicated()
    if dup.any():
        raise DataError(
            f"icu/icustays in {data_dir}: stay_id {int(icu.loc[dup, 'stay_id'].iloc[0])} "
            "appears more than once; expected one row per ICU stay"
        )
    tr.rows_kept = len(icu)
    pat = pat.drop_duplicates("subject_id")
    adm = adm.drop_duplicates("hadm_id")
    df = icu.merge(pat, on="subject_id", how="left").merge(
        adm.drop(columns=["subject_id"]), on="hadm_id", how="left"
    )
    age = df["anchor_age"] + df["intime"].dt.year - df["anchor_year"]
    los = (df["outtime"] - df["intime"]) / pd.Timedelta(hours=1)
    gender = df["gender"].astype("string").str.upper().where(lambda g: g.isin(["M", "F"]))
    died = pd.Series(pd.NA, index=df.index, dtype="boolean")
    if "hospital_expire_flag" in df:
        died = df["hospital_expire_flag"].map({1: True, 0: False}).astype("boolean")
    fallback = pd.Series(False, index=df.index)
    if "deathtime" in df:
        fallback |= df["deathtime"].notna()
    if "dod" in df:
        fallback |= df["dod"].notna() & (df["dod"] <= df["dischtime"].dt.normalize())
    known = df["dischtime"].notna() | fallback
    died = died.fillna(fallback.where(known).astype("boolean"))
    stays = pd.DataFrame(
        {
            "stay_id": df["stay_id"].astype("int64"),
            "patient_id": df["subject_id"].astype("Int64"),
            "hadm_id": df["hadm_id"].astype("Int64"),
            "source": T.SOURCE,
            "intime": df["intime"],
            "outtime": df["outtime"],
            "los_hours": los.astype("float64"),
            "age": age.astype("float64"),
            "gender": gender,
            "dbsource": pd.Series(pd.NA, index=df.index, dtype="string"),
            "unit": df["first_careunit"].astype("string"),
            "died": died,
        }
    )
    return stays, adm


def extract_into(
    data_dir: Path, out: Path, params: Mimic4Params, progress: bool = True
) -> ExtractionReport:
    """Read every MIMIC-IV table of `data_dir` and write the contract into `out`."""
    params.validate()
    t0 = time.perf_counter()
    data_dir, out = Path(data_dir), Path(out)
    rep = ExtractionReport(data_dir=str(data_dir), out_dir=str(out), params=asdict(params))
    for table in T.TABLE_COLUMNS:  # every table and column first: fail in seconds
        T.check_columns(data_dir, table)
    out.mkdir(parents=True, exist_ok=True)
    stays, adm = stays_base(data_dir, params, rep, progress)
    index = StayIndex(stays)
    has_chart, chart_w = E.chartevents(data_dir, out, params, rep, index, progress)
    input_w, abx_admin = inputevents(data_dir, out, params, rep, index, stays, chart_w, progress)
    w = chart_w.set_index("stay_id")["weight_kg"]
    if len(input_w):
        w = w.combine_first(input_w.set_index("stay_id")["weight_kg"])
    stays["weight_kg"] = stays["stay_id"].map(w).astype("float64")
    stays["has_chart"] = stays["stay_id"].isin(index.ids[has_chart])
    st = rep.tables.setdefault("stays", TableReport("stays"))
    st.count_unit("weight_from_chartevents", int(stays["stay_id"].isin(chart_w["stay_id"]).sum()))
    st.count_unit(
        "weight_from_inputevents_patientweight",
        int((stays["weight_kg"].notna() & ~stays["stay_id"].isin(chart_w["stay_id"])).sum()),
    )
    E.labevents(data_dir, out, params, rep, index, progress)
    E.outputevents(data_dir, out, params, rep, index, progress)
    E.procedureevents(data_dir, out, params, rep, index, progress)
    A.write(data_dir, out, params, rep, adm, abx_admin, progress)
    dio.write_parquet(stays[dio.EXTRACTED_STAYS.names], out / "stays.parquet", dio.EXTRACTED_STAYS)
    rep.outputs["stays.parquet"] = len(stays)
    rep.warnings = [w for tr in rep.tables.values() for w in tr.warnings]
    rep.seconds = time.perf_counter() - t0
    rep.peak_rss_mb = peak_rss_mb()
    log.info("MIMIC-IV extraction: %s", rep.outputs)
    return rep


def extract(data_dir: Path, out_dir: Path, options: ReaderOptions, progress: bool = True) -> dict:
    """Source.extract: the contract and extraction_report.json into `out_dir`."""
    params = Mimic4Params(
        on_bad_rows=options.on_bad_rows, lab_lookback_hours=options.lookback_hours
    )
    out_dir = Path(out_dir)
    try:
        rep = extract_into(Path(data_dir), out_dir, params, progress)
    except OSError as exc:
        if disk_full(exc):
            raise DataError(
                f"{out_dir}: cannot write the extracted tables ({exc}); expected free space on "
                f"the disk of {out_dir.parent}"
            ) from exc
        raise
    counts = rep.to_dict()
    (out_dir / "extraction_report.json").write_text(json.dumps(counts, indent=2) + "\n")
    return counts


def inputs(data_dir: Path) -> list[Path]:
    """Exactly the tables the reader reads (MissingTableError naming a missing one)."""
    return T.inputs(Path(data_dir))


SOURCE = Source(
    name=T.SOURCE,
    description="MIMIC-IV v2.x/v3.x CSV tables (modules hosp/ and icu/)",
    extract=extract,
    inputs=inputs,
    attributes=(),
)
