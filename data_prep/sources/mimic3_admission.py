"""MIMIC-III admission events -> `admission_events.parquet` (io.ADMISSION_EVENTS).

* antibiotic: PRESCRIPTIONS rows that are systemic antibiotics by the conventions the
  dictionary lists under `antibiotic.sources.mimic3` (drug types, excluded routes, route and
  name substrings) and the antibiotics.txt name match; every other row is dropped and counted.
  time = startdate ("order date"); rows without a startdate or an admission are kept (time or
  hadm_id null), for the infection concept to count. Then the MetaVision administrations
  (mimic3_inputs.inputevents_mv; time_source "administration").
* culture: every MICROBIOLOGYEVENTS row; time = charttime ("charted"), else 00:00 of the
  chartdate ("date only"), else null (time_source null); text = spec_type_desc.
* sepsis_diagnosis: DIAGNOSES_ICD rows whose code (dots removed, stripped) is one of the
  dictionary's ICD-9 codes; text = that code.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_prep import io
from data_prep.concepts.dictionary import concepts
from data_prep.concepts.infection import antibiotic_names
from data_prep.sources.csv_stream import STR, Batch, ExtractionReport, TableReport, drop_null
from data_prep.sources.mimic3_tables import SOURCE, ReaderParams, scan

ORDER_DATE, ADMINISTRATION = "order date", "administration"
CHARTED, DATE_ONLY = "charted", "date only"


def _arr(x, type_: pa.DataType) -> pa.Array:
    return x.cast(type_) if isinstance(x, pa.Array) else pa.array(x, type_)


def _events(patient, hadm, time, concept: str, text, time_source) -> pa.Table:
    """Admission events of one concept; `time_source` an array or one value for every row."""
    n = len(patient)
    if time_source is None or isinstance(time_source, str):
        time_source = pa.array([time_source] * n, STR)
    return pa.table(
        {
            "patient_id": _arr(patient, pa.int64()),
            "hadm_id": _arr(hadm, pa.int64()),
            "time": _arr(time, io.TS),
            "concept": pa.array([concept] * n, STR),
            "text": _arr(text, STR),
            "time_source": time_source,
        },
        schema=io.ADMISSION_EVENTS,
    )


def antibiotic_rules() -> tuple[dict, re.Pattern | str]:
    """The PRESCRIPTIONS conventions of the dictionary, and the antibiotic-name pattern."""
    (m,) = concepts()["antibiotic"].mappings(SOURCE, "prescriptions")
    pattern = "|".join(re.escape(n) for n in antibiotic_names())
    return m.extra, pattern


def systemic_antibiotics(p: pd.DataFrame, tr: TableReport) -> np.ndarray:
    """Mask of the PRESCRIPTIONS rows (drug, drug_type, route) that are systemic antibiotics;
    the others are counted in `tr` by the first rule that drops them."""
    rules, pattern = antibiotic_rules()
    drug = p["drug"].astype("string").str.lower().fillna("")
    dtype = p["drug_type"].astype("string").str.upper().str.strip()
    route = p["route"].astype("string").str.strip().fillna("")
    keep_type = dtype.isin(rules["drug_types"]).fillna(False).to_numpy(bool)
    tr.drop("not_main_or_additive", int((~keep_type).sum()))
    is_abx = np.zeros(len(p), bool)
    is_abx[keep_type] = (
        drug[keep_type].str.contains(pattern, regex=True).fillna(False).to_numpy(bool)
    )
    tr.drop("not_antibiotic", int((keep_type & ~is_abx).sum()))
    cand = keep_type & is_abx
    route_u, route_l = route.str.upper(), route.str.lower()
    bad_route = route_u.isin(rules["exclude_routes"]).to_numpy(bool).copy()
    for sub in rules["exclude_route_substrings"]:
        bad_route |= route_l.str.contains(sub, regex=False).fillna(False).to_numpy(bool)
    bad_name = np.zeros(len(p), bool)
    for sub in rules["exclude_name_substrings"]:
        bad_name |= drug.str.contains(sub, regex=False).fillna(False).to_numpy(bool)
    tr.drop("antibiotic_route_excluded", int((cand & bad_route).sum()))
    tr.drop("antibiotic_name_excluded", int((cand & ~bad_route & bad_name).sum()))
    return cand & ~bad_route & ~bad_name


class AdmissionEvents:
    """Collects the admission events of the tables read (per table, so that a table's second
    pass replaces only its own rows) and writes them in order."""

    def __init__(self) -> None:
        self.parts: dict[str, list[pa.Table]] = {}

    def scan_into(
        self,
        data_dir: Path,
        table: str,
        params: ReaderParams,
        rep: ExtractionReport,
        progress: bool,
        handle,
    ) -> None:
        tr = rep.tables.setdefault(table, TableReport(table))
        sc = scan(data_dir, table, params, tr, progress)
        parts = self.parts.setdefault(table, [])

        def run(b: Batch) -> None:
            b.convert(*sc.logical)
            drop_null(b, tr, "subject_id", "missing_subject_id")
            t = handle(b, tr)
            tr.rows_kept += t.num_rows
            parts.append(t)

        sc.run(run, parts.clear)

    def add(self, name: str, table: pa.Table) -> None:
        self.parts.setdefault(name, []).append(table)

    def write(self, path: Path, rep: ExtractionReport) -> None:
        tables = [t for ts in self.parts.values() for t in ts]
        table = pa.concat_tables(tables) if tables else io.ADMISSION_EVENTS.empty_table()
        pq.write_table(table, path, compression="zstd")
        rep.outputs[path.name] = table.num_rows


def _prescriptions(b: Batch, tr: TableReport) -> pa.Table:
    cols = ("drug", "drug_type", "route")
    p = pd.DataFrame({c: b[c].to_pandas() for c in cols})
    keep = pa.array(systemic_antibiotics(p, tr))
    return _events(
        pc.filter(b["subject_id"], keep),
        pc.filter(b["hadm_id"], keep),
        pc.filter(b["startdate"], keep),
        "antibiotic",
        pc.filter(b["drug"], keep),
        ORDER_DATE,
    )


def _microbiology(b: Batch, tr: TableReport) -> pa.Table:
    ct, cd = b["charttime"].cast(io.TS), b["chartdate"].cast(io.TS)
    day = pc.floor_temporal(cd, 1, "day")
    charted = pc.is_valid(ct)
    source = pc.if_else(
        charted,
        pa.scalar(CHARTED, STR),
        pc.if_else(pc.is_valid(cd), pa.scalar(DATE_ONLY, STR), pa.scalar(None, STR)),
    )
    return _events(
        b["subject_id"],
        b["hadm_id"],
        pc.if_else(charted, ct, day),
        "culture",
        b["spec_type_desc"],
        source,
    )


def _diagnoses(b: Batch, tr: TableReport) -> pa.Table:
    (m,) = concepts()["sepsis_diagnosis"].mappings(SOURCE, "diagnoses_icd")
    code = b["icd9_code"].to_pandas().astype("string").str.replace(".", "", regex=False).str.strip()
    keep = code.isin([str(c) for c in m.extra["icd9"]]).fillna(False).to_numpy(bool)
    tr.drop("not_sepsis_code", int((~keep).sum()))
    mask = pa.array(keep)
    return _events(
        pc.filter(b["subject_id"], mask),
        pc.filter(b["hadm_id"], mask),
        pa.nulls(int(keep.sum()), io.TS),
        "sepsis_diagnosis",
        pa.array(code[keep].astype(object).to_numpy(), STR),
        None,
    )


def administrations(abx: pd.DataFrame, stays: pd.DataFrame) -> pa.Table:
    """MetaVision antibiotic administrations (stay_id, time, drug) as admission events of
    their stay's patient and admission."""
    s = stays.set_index("stay_id")
    sid = abx["stay_id"].to_numpy(np.int64)
    return _events(
        pa.array(s["patient_id"].reindex(sid).astype("Int64"), pa.int64()),
        pa.array(s["hadm_id"].reindex(sid).astype("Int64"), pa.int64()),
        abx["time"].to_numpy(dtype="datetime64[us]"),
        "antibiotic",
        abx["drug"].astype(object).to_numpy(),
        ADMINISTRATION,
    )


def admission_events(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    stays: pd.DataFrame,
    mv_antibiotics: pd.DataFrame,
    progress: bool,
) -> None:
    """Read PRESCRIPTIONS, MICROBIOLOGYEVENTS and DIAGNOSES_ICD; write admission_events.parquet."""
    ev = AdmissionEvents()
    ev.scan_into(data_dir, "PRESCRIPTIONS", params, rep, progress, _prescriptions)
    ev.add("INPUTEVENTS_MV", administrations(mv_antibiotics, stays))
    ev.scan_into(data_dir, "MICROBIOLOGYEVENTS", params, rep, progress, _microbiology)
    ev.scan_into(data_dir, "DIAGNOSES_ICD", params, rep, progress, _diagnoses)
    ev.write(out / "admission_events.parquet", rep)
