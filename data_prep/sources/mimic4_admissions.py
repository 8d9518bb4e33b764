"""MIMIC-IV admission events (io.ADMISSION_EVENTS): antibiotics, cultures, sepsis codes.

* antibiotic: hosp/prescriptions (time = ``starttime``, a clock time: "order time"; the
  dictionary's rules: drug_type, excluded routes, excluded names, antibiotics.txt names),
  hosp/emar administrations (time = ``charttime``: "administration"; the ``administered``
  event_txt values; emar has no route, so a row whose ``pharmacy_id`` is a prescription
  dropped for its route is dropped, and the emar name exclusions are wider) and the
  antibiotic items of icu/inputevents ("administration", read by mimic4_inputs).
* culture: hosp/microbiologyevents, one event per ``micro_specimen_id`` (the table has a
  row per organism and antibiotic tested); time = charttime ("charted"), else 00:00 of
  chartdate ("date only").
* sepsis_diagnosis: hosp/diagnoses_icd codes of the dictionary by ``icd_version``.

MIMIC-IV leaves ``hadm_id`` empty for events outside a hospital admission record (a third
of the demo's microbiology rows; some emar rows): such an event gets the admission of the
same subject whose [min(edregtime, admittime), dischtime] contains its time (a date-only
culture: overlaps its day), as mimic-code's MIMIC-IV suspicion of infection pairs by subject
and time; the rest keep a null hadm_id (the infection concept counts them). Counted in the
report (table ``admission_events``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_prep import io as dio
from data_prep.concepts.dictionary import concepts
from data_prep.concepts.infection import antibiotic_names
from data_prep.sources import mimic4_tables as T
from data_prep.sources.csv_stream import STR, Batch, ExtractionReport, TableReport, ids

CHARTED, DATE_ONLY = "charted", "date only"
COLUMNS = ["patient_id", "hadm_id", "time", "concept", "text", "time_source"]


def _rules(table: str) -> dict:
    (m,) = concepts()["antibiotic"].mappings(T.SOURCE, table)
    return m.extra


def _lower(a: pa.Array) -> pa.Array:
    return pc.utf8_lower(pc.utf8_trim_whitespace(a.cast(STR)))


def _contains_any(text: pa.Array, subs) -> np.ndarray:
    out = np.zeros(len(text), bool)
    for s in subs:
        out |= pc.fill_null(pc.match_substring(text, str(s).lower()), False).to_numpy(
            zero_copy_only=False
        )
    return out


def _is_antibiotic(lower_name: pa.Array) -> np.ndarray:
    pattern = "|".join(re.escape(n) for n in antibiotic_names())
    return pc.fill_null(pc.match_substring_regex(lower_name, pattern), False).to_numpy(
        zero_copy_only=False
    )


def _frame(b: Batch, keep: np.ndarray, time: str, text: str) -> pd.DataFrame:
    """The kept rows (time column converted only for them) as admission-event columns."""
    b.filter(keep)
    b.convert(time)
    return pd.DataFrame(
        {
            "patient_id": b["subject_id"].to_pandas().astype("Int64"),
            "hadm_id": b["hadm_id"].to_pandas().astype("Int64"),
            "time": b[time].to_pandas(),
            "text": b[text].to_pandas(),
        }
    )


def prescriptions(
    data_dir: Path, params: T.Mimic4Params, rep: ExtractionReport, progress: bool
) -> tuple[pd.DataFrame, set[int]]:
    """Systemic antibiotic orders; also the pharmacy_ids of antibiotic orders dropped for
    their route (their emar administrations are dropped too)."""
    rules = _rules("prescriptions")
    scan = T.scan(data_dir, "prescriptions", params, rep, progress)
    tr = scan.report
    parts: list[pd.DataFrame] = []
    route_dropped: set[int] = set()
    types = pa.array([str(t).upper() for t in rules["drug_types"]])
    routes = pa.array([str(r).upper() for r in rules["exclude_routes"]])

    def reset() -> None:
        parts.clear()
        route_dropped.clear()

    def handle(b: Batch) -> None:
        b.convert("subject_id", "hadm_id", "pharmacy_id")
        drug = _lower(b["drug"])
        type_ok = pc.fill_null(
            pc.is_in(pc.utf8_upper(pc.utf8_trim_whitespace(b["drug_type"])), value_set=types), False
        ).to_numpy(zero_copy_only=False)
        tr.drop("not_main_or_additive", int((~type_ok).sum()))
        abx = _is_antibiotic(drug)
        tr.drop("not_antibiotic", int((type_ok & ~abx).sum()))
        cand = type_ok & abx
        route = pc.utf8_trim_whitespace(b["route"].cast(STR))
        bad_route = pc.fill_null(pc.is_in(pc.utf8_upper(route), value_set=routes), False).to_numpy(
            zero_copy_only=False
        ) | _contains_any(pc.utf8_lower(route), rules["exclude_route_substrings"])
        bad_name = _contains_any(drug, rules["exclude_name_substrings"])
        tr.drop("antibiotic_route_excluded", int((cand & bad_route).sum()))
        tr.drop("antibiotic_name_excluded", int((cand & ~bad_route & bad_name).sum()))
        if b.has("pharmacy_id"):
            ph = ids(b["pharmacy_id"])[cand & bad_route]
            route_dropped.update(int(x) for x in ph[ph >= 0])
        keep = cand & ~bad_route & ~bad_name
        if not keep.any():
            return
        parts.append(_frame(b, keep, "starttime", "drug"))
        tr.rows_kept += len(b)

    scan.run(handle, reset)
    df = pd.concat(parts, ignore_index=True) if parts else _empty()
    return df.assign(concept="antibiotic", time_source=rules["time_source"]), route_dropped


def emar(
    data_dir: Path,
    params: T.Mimic4Params,
    rep: ExtractionReport,
    route_dropped: set[int],
    progress: bool,
) -> pd.DataFrame:
    """Antibiotic administrations charted in the eMAR."""
    rules = _rules("emar")
    scan = T.scan(data_dir, "emar", params, rep, progress)
    tr = scan.report
    parts: list[pd.DataFrame] = []
    given = pa.array(sorted({str(e).strip().lower() for e in rules["administered"]}))
    dropped_ph = pa.array(sorted(route_dropped), pa.int64())

    def handle(b: Batch) -> None:
        b.convert("subject_id", "hadm_id", "pharmacy_id")
        med = _lower(b["medication"])
        abx = _is_antibiotic(med)
        tr.drop("not_antibiotic", int((~abx).sum()))
        done = pc.fill_null(pc.is_in(_lower(b["event_txt"]), value_set=given), False).to_numpy(
            zero_copy_only=False
        )
        tr.drop("antibiotic_not_administered", int((abx & ~done).sum()))
        cand = abx & done
        bad_name = _contains_any(med, rules["exclude_name_substrings"])
        tr.drop("antibiotic_name_excluded", int((cand & bad_name).sum()))
        cand &= ~bad_name
        if b.has("pharmacy_id") and len(dropped_ph):
            bad_route = pc.fill_null(
                pc.is_in(b["pharmacy_id"].cast(pa.int64()), value_set=dropped_ph), False
            ).to_numpy(zero_copy_only=False)
            tr.drop("antibiotic_route_excluded_by_prescription", int((cand & bad_route).sum()))
            cand &= ~bad_route
        if not cand.any():
            return
        parts.append(_frame(b, cand, "charttime", "medication"))
        tr.rows_kept += len(b)

    scan.run(handle, parts.clear)
    df = pd.concat(parts, ignore_index=True) if parts else _empty()
    return df.assign(concept="antibiotic", time_source=rules["time_source"])


def microbiology(
    data_dir: Path, params: T.Mimic4Params, rep: ExtractionReport, progress: bool
) -> pd.DataFrame:
    """One culture event per micro_specimen_id (rows without one: one event each)."""
    scan = T.scan(data_dir, "microbiologyevents", params, rep, progress)
    tr = scan.report
    parts: list[pd.DataFrame] = []

    def handle(b: Batch) -> None:
        b.convert(*scan.logical)
        df = pd.DataFrame(
            {
                "patient_id": b["subject_id"].to_pandas().astype("Int64"),
                "hadm_id": b["hadm_id"].to_pandas().astype("Int64"),
                "specimen": b["micro_specimen_id"].to_pandas().astype("Int64"),
                "charttime": b["charttime"].to_pandas(),
                "chartdate": b["chartdate"].to_pandas(),
                "text": b["spec_type_desc"].to_pandas(),
            }
        )
        dup = df["specimen"].duplicated() & df["specimen"].notna()  # within the batch
        tr.drop("same_specimen_row", int(dup.sum()))
        parts.append(df[~dup])

    scan.run(handle, parts.clear)
    m = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(
            columns=["patient_id", "hadm_id", "specimen", "charttime", "chartdate", "text"]
        )
    )
    no_id = m["specimen"].isna()
    tr.count_unit("rows_without_micro_specimen_id", int(no_id.sum()))
    dup = m["specimen"].duplicated() & ~no_id
    tr.drop("same_specimen_row", int(dup.sum()))
    m = m[~dup]
    tr.rows_kept = len(m)
    ct = pd.to_datetime(m["charttime"])
    cd = pd.to_datetime(m["chartdate"]).dt.normalize()
    time = ct.where(ct.notna(), cd)
    source = np.where(ct.notna(), CHARTED, np.where(cd.notna(), DATE_ONLY, None))
    tr.count_unit("date_only", int((ct.isna() & cd.notna()).sum()))
    tr.count_unit("without_time", int(time.isna().sum()))
    return pd.DataFrame(
        {
            "patient_id": m["patient_id"].to_numpy(),
            "hadm_id": m["hadm_id"].to_numpy(),
            "time": time.to_numpy(),
            "concept": "culture",
            "text": m["text"].to_numpy(),
            "time_source": source,
        }
    )


def diagnoses(
    data_dir: Path, params: T.Mimic4Params, rep: ExtractionReport, progress: bool
) -> pd.DataFrame:
    """sepsis_diagnosis events: ICD-9 codes of `icd9`, ICD-10 codes of `icd10` or starting
    with an `icd10_prefixes` entry, chosen by icd_version (codes without dots, upper case)."""
    (m,) = concepts()["sepsis_diagnosis"].mappings(T.SOURCE, "diagnoses_icd")
    icd9 = pa.array([str(c) for c in m.extra.get("icd9", [])], STR)
    icd10 = pa.array([str(c) for c in m.extra.get("icd10", [])], STR)
    prefixes = [str(p) for p in m.extra.get("icd10_prefixes", [])]
    scan = T.scan(data_dir, "diagnoses_icd", params, rep, progress)
    tr = scan.report
    parts: list[pd.DataFrame] = []

    def handle(b: Batch) -> None:
        b.convert("subject_id", "hadm_id", "icd_version")
        code = pc.utf8_upper(pc.replace_substring(pc.utf8_trim_whitespace(b["icd_code"]), ".", ""))
        version = pc.fill_null(b["icd_version"], -1).to_numpy(zero_copy_only=False)
        in9 = pc.fill_null(pc.is_in(code, value_set=icd9), False).to_numpy(zero_copy_only=False)
        in10 = pc.fill_null(pc.is_in(code, value_set=icd10), False).to_numpy(zero_copy_only=False)
        for p in prefixes:
            in10 |= pc.fill_null(pc.starts_with(code, p), False).to_numpy(zero_copy_only=False)
        hit = ((version == 9) & in9) | ((version == 10) & in10)
        tr.drop("not_a_sepsis_code", int((~hit).sum()))
        if hit.any():
            sel = pa.array(hit)
            parts.append(
                pd.DataFrame(
                    {
                        "patient_id": pc.filter(b["subject_id"], sel).to_pandas().astype("Int64"),
                        "hadm_id": pc.filter(b["hadm_id"], sel).to_pandas().astype("Int64"),
                        "text": pc.filter(code, sel).to_pandas(),
                    }
                )
            )
            tr.rows_kept += int(hit.sum())

    scan.run(handle, parts.clear)
    df = pd.concat(parts, ignore_index=True) if parts else _empty()
    return df.assign(time=pd.NaT, concept="sepsis_diagnosis", time_source=None)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": pd.Series(dtype="Int64"),
            "hadm_id": pd.Series(dtype="Int64"),
            "time": pd.Series(dtype="datetime64[us]"),
            "text": pd.Series(dtype=object),
        }
    )


def assign_hadm(events: pd.DataFrame, admissions: pd.DataFrame, tr: TableReport) -> pd.DataFrame:
    """Fill a null hadm_id with the subject's admission whose [min(edregtime, admittime),
    dischtime] contains the event's time (a date-only event: overlaps its day)."""
    miss = events["hadm_id"].isna() & events["time"].notna() & events["patient_id"].notna()
    tr.count_unit("without_hadm_id", int(events["hadm_id"].isna().sum()))
    if not miss.any() or not len(admissions):
        return events
    a = admissions
    start = a["admittime"]
    if "edregtime" in a:
        start = start.where(
            a["edregtime"].isna() | (a["admittime"] <= a["edregtime"]), a["edregtime"]
        )
    right = (
        pd.DataFrame(
            {
                "patient_id": a["subject_id"].astype(np.int64),
                "start": pd.to_datetime(start).astype("datetime64[us]"),
                "disch": pd.to_datetime(a["dischtime"]).astype("datetime64[us]"),
                "hadm_fill": a["hadm_id"].astype(np.int64),
            }
        )
        .dropna(subset=["start"])
        .sort_values("start")
    )
    e = events.loc[miss, ["patient_id", "time", "time_source"]]
    t0 = pd.to_datetime(e["time"]).astype("datetime64[us]")
    day = (e["time_source"] == DATE_ONLY).to_numpy()
    t1 = t0 + pd.to_timedelta(np.where(day, 86_400_000_000 - 1, 0), unit="us")
    left = pd.DataFrame(
        {
            "patient_id": e["patient_id"].astype(np.int64).to_numpy(),
            "t0": t0.to_numpy(),
            "t1": t1.to_numpy(),
            "row": e.index.to_numpy(),
        }
    ).sort_values("t1")
    m = pd.merge_asof(
        left, right, left_on="t1", right_on="start", by="patient_id", direction="backward"
    )
    ok = m["hadm_fill"].notna() & (m["disch"] >= m["t0"])
    tr.count_unit("hadm_id_from_subject_and_time", int(ok.sum()))
    tr.count_unit("hadm_id_not_found", int((~ok).sum()))
    events = events.copy()
    events.loc[m.loc[ok, "row"].to_numpy(), "hadm_id"] = (
        m.loc[ok, "hadm_fill"].astype(np.int64).to_numpy()
    )
    return events


def write(
    data_dir: Path,
    out: Path,
    params: T.Mimic4Params,
    rep: ExtractionReport,
    admissions: pd.DataFrame,
    inputevents_abx: pd.DataFrame,
    progress: bool,
) -> dict[str, int]:
    """Read the admission-event tables and write admission_events.parquet; rows per concept."""
    orders, route_dropped = prescriptions(data_dir, params, rep, progress)
    given = emar(data_dir, params, rep, route_dropped, progress)
    infused = inputevents_abx.drop(columns=["stay_id"]).assign(
        concept="antibiotic", time_source=_rules("inputevents")["time_source"]
    )
    frames = [
        orders,
        given,
        infused,
        microbiology(data_dir, params, rep, progress),
        diagnoses(data_dir, params, rep, progress),
    ]
    frames = [f[COLUMNS] for f in frames if len(f)]
    ev = (
        pd.concat(frames, ignore_index=True)
        if frames
        else _empty().assign(concept=None, time_source=None)[COLUMNS]
    )
    ev["patient_id"] = ev["patient_id"].astype("Int64")
    ev["hadm_id"] = ev["hadm_id"].astype("Int64")
    ev["time"] = pd.to_datetime(ev["time"]).astype("datetime64[us]")
    tr = rep.tables.setdefault("admission_events", TableReport("admission_events"))
    no_subject = ev["patient_id"].isna()
    tr.drop("without_subject_id", int(no_subject.sum()))
    ev = assign_hadm(ev[~no_subject].reset_index(drop=True), admissions, tr)
    tr.rows_kept = len(ev)
    dio.write_parquet(ev, out / "admission_events.parquet", dio.ADMISSION_EVENTS)
    rep.outputs["admission_events.parquet"] = len(ev)
    return {str(k): int(v) for k, v in ev["concept"].value_counts().items()}
