"""First pass over a MEDS dataset: ICU stays, patients and hospital admissions.

Only the rows of the stay, patient and admission codes of the mapping are kept (a few per
stay), so this pass holds little memory whatever the dataset size. ICU stays are delimited
by the mapping's admission / discharge codes: paired on the stay id column when the ETL has
one, else the k-th admission of a subject with the first discharge after it (stays then get
ids 1..N in subject and time order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from data_prep.sources import meds_mapping as mm
from data_prep.sources.meds_read import CodeTable, MedsDataError, Shard, batches

SOURCE_NAME = "meds"
DIED_AFTER_DISCHARGE_HOURS = 24.0  # a death this soon after leaving hospital counts as in-hospital
US_PER_YEAR = 365.25 * 24 * 3_600_000_000


@dataclass
class StayTables:
    stays: pd.DataFrame  # io.EXTRACTED_STAYS columns but has_chart / weight_kg
    admissions: pd.DataFrame  # patient_id, hadm_id, admittime, dischtime, start
    counts: dict[str, int] = field(default_factory=dict)


def _i64(a) -> np.ndarray:
    return pc.fill_null(a.cast("int64"), -1).to_numpy(zero_copy_only=False)


def read_stays(
    shards: list[Shard], mapping: mm.Mapping, codes: CodeTable, batch_rows: int
) -> StayTables:
    stay_col, hadm_col = mapping.column("stay_id"), mapping.column("hadm_id")
    cols = ["subject_id", "time", "code", *(c for c in (stay_col, hadm_col) if c)]
    roles_of = np.array([], np.int8)
    parts: list[pd.DataFrame] = []
    for shard in shards:
        for b in batches(shard, cols, batch_rows):
            cls = codes.rows(b.column("code"), count=False)
            if len(codes.classes) != len(roles_of):
                roles_of = np.array([c.role for c in codes.classes], np.int8)
            role = np.where(cls >= 0, roles_of[np.maximum(cls, 0)], -1)
            keep = np.isin(role, mm.PASS1_ROLES)
            if not keep.any():
                continue
            rows = np.flatnonzero(keep)

            def take(name, b=b, rows=rows):
                return b.column(name).take(rows) if name else None

            t = take("time").cast("int64")
            parts.append(
                pd.DataFrame(
                    {
                        "role": role[rows],
                        "cls": cls[rows],
                        "subject": _i64(take("subject_id")),
                        "t": pc.fill_null(t, np.iinfo(np.int64).min).to_numpy(zero_copy_only=False),
                        "stay": _i64(take(stay_col)) if stay_col else -1,
                        "hadm": _i64(take(hadm_col)) if hadm_col else -1,
                        "shard": shard.name,
                    }
                )
            )
    rows = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(
            {
                k: pd.Series(dtype=d)
                for k, d in [
                    ("role", "int8"),
                    ("cls", "int32"),
                    ("subject", "int64"),
                    ("t", "int64"),
                    ("stay", "int64"),
                    ("hadm", "int64"),
                    ("shard", "object"),
                ]
            }
        )
    )
    rows["text"] = [codes.classes[i].text for i in rows["cls"]]
    counts: dict[str, int] = {}
    stays = _stays(rows, mapping, counts)
    admissions = _admissions(rows, counts)
    stays = _patients(stays, rows, admissions, mapping, counts)
    return StayTables(stays, admissions, counts)


NULL_T = np.iinfo(np.int64).min  # a null time (NaT as int64 microseconds)


def _stays(rows: pd.DataFrame, mapping: mm.Mapping, counts: dict[str, int]) -> pd.DataFrame:
    a = rows[rows["role"] == mm.STAY_IN]
    d = rows[rows["role"] == mm.STAY_OUT]
    counts["icu_admission_rows"] = len(a)
    counts["icu_discharge_rows"] = len(d)
    no_t = a["t"] == NULL_T
    counts["icu_admission_without_time"] = int(no_t.sum())
    a, d = a[~no_t], d[d["t"] != NULL_T]
    if mapping.column("stay_id"):
        no_id = a["stay"] < 0
        counts["icu_admission_without_stay_id"] = int(no_id.sum())
        a = a[~no_id].drop_duplicates(["stay", "t", "subject"])
        dup = a["stay"].duplicated(keep=False)
        if dup.any():
            r = a[dup].iloc[0]
            raise MedsDataError(
                f"shard {r['shard']}: ICU stay {int(r['stay'])} ({mapping.column('stay_id')}) has "
                f"{int(dup.sum())} admission rows ({mapping.path.name}: stays.admission) at different "
                "times; expected one per stay"
            )
        out = d[d["stay"] >= 0].groupby("stay")["t"].max()
        a = a.assign(outtime=a["stay"].map(out).fillna(NULL_T).astype(np.int64))
        counts["icu_discharge_without_admission"] = int(
            (~d["stay"].isin(a["stay"]) & (d["stay"] >= 0)).sum()
        )
    else:  # pair each admission with the subject's first discharge after it
        a = a.sort_values(["t"]).reset_index(drop=True)
        dd = d.sort_values("t")[["subject", "t"]].rename(columns={"t": "outtime"})
        dd["t"] = dd["outtime"]
        a = pd.merge_asof(a, dd, on="t", by="subject", direction="forward")
        a["outtime"] = a["outtime"].fillna(NULL_T).astype(np.int64)
        a = a.sort_values(["subject", "t"]).reset_index(drop=True)
        a["stay"] = np.arange(1, len(a) + 1, dtype=np.int64)
    a = a.sort_values(["subject", "t"])
    no_out = a["outtime"] == NULL_T
    counts["icu_stays_without_discharge"] = int(no_out.sum())
    bad = ~no_out & (a["outtime"] < a["t"])
    counts["icu_stays_discharge_before_admission_dropped"] = int(bad.sum())
    a = a[~bad]
    intime = pd.Series(a["t"].to_numpy(np.int64).astype("datetime64[us]"))
    outtime = pd.Series(a["outtime"].to_numpy(np.int64).astype("datetime64[us]"))
    unit = a["text"] if mapping.stays["care_unit"] == "code_suffix" else None
    return pd.DataFrame(
        {
            "stay_id": a["stay"].to_numpy(np.int64),
            "patient_id": a["subject"].to_numpy(np.int64),
            "hadm_id": pd.Series(a["hadm"].to_numpy(np.int64), dtype="Int64").mask(
                a["hadm"].to_numpy() < 0
            ),
            "source": SOURCE_NAME,
            "intime": intime,
            "outtime": outtime,
            "los_hours": (outtime - intime) / pd.Timedelta(hours=1),
            "age": np.nan,
            "gender": pd.array([None] * len(a), dtype="string"),
            "dbsource": pd.array([None] * len(a), dtype="string"),
            "unit": pd.array(
                unit.to_numpy() if unit is not None else [None] * len(a), dtype="string"
            ),
            "died": pd.array([None] * len(a), dtype="boolean"),
        }
    ).reset_index(drop=True)


def _admissions(rows: pd.DataFrame, counts: dict[str, int]) -> pd.DataFrame:
    """patient_id, hadm_id, admittime, dischtime and ``start``: the earlier of admittime and
    the admission's emergency-department registration (`_ed_registrations`)."""
    s = rows[(rows["role"] == mm.ADM_START) & (rows["hadm"] >= 0) & (rows["t"] != NULL_T)]
    e = rows[(rows["role"] == mm.ADM_END) & (rows["hadm"] >= 0) & (rows["t"] != NULL_T)]
    start = s.groupby("hadm").agg(patient_id=("subject", "first"), admittime=("t", "min"))
    end = e.groupby("hadm")["t"].max().rename("dischtime")
    adm = start.join(end, how="left").reset_index().rename(columns={"hadm": "hadm_id"})
    counts["hospital_admissions"] = len(adm)
    ed = rows[(rows["role"] == mm.ED_REG) & (rows["t"] != NULL_T)]
    reg = _ed_registrations(adm, ed, counts)
    admit = adm["admittime"].to_numpy(np.int64)
    adm["start"] = np.where((reg != NULL_T) & (reg < admit), reg, admit)
    return adm


def _ed_registrations(adm: pd.DataFrame, ed: pd.DataFrame, counts: dict[str, int]) -> np.ndarray:
    """The ED registration time of each admission (int64 us; NULL_T: none), as MIMIC-IV's
    admissions.edregtime. MEDS ETLs write it without a hadm_id (MIMIC-IV: ``ED_REGISTRATION``), so an
    admission takes the subject's latest registration at or before its admittime and after
    the discharge of the subject's previous admission (a registration after admittime, as a
    few MIMIC-IV rows have, would not move the start, which is min(edregtime, admittime))."""
    out = np.full(len(adm), NULL_T, np.int64)
    counts["ed_registration_rows"] = len(ed)
    if not len(ed) or not len(adm):
        counts["admissions_with_ed_registration"] = 0
        return out
    a = (
        adm[["patient_id", "admittime", "dischtime"]]
        .reset_index()
        .sort_values(["patient_id", "admittime"])
    )
    a["prev_disch"] = a.groupby("patient_id")["dischtime"].shift()
    r = (
        ed[["subject", "t"]]
        .rename(columns={"subject": "patient_id", "t": "reg"})
        .drop_duplicates()
        .astype(np.int64)
        .sort_values("reg")
        .reset_index(drop=True)
    )
    r["ri"] = np.arange(len(r))  # the merge turns ints float: carry a row number instead
    m = pd.merge_asof(
        a.astype({"admittime": np.int64}).sort_values("admittime"),
        r[["patient_id", "reg", "ri"]],
        left_on="admittime",
        right_on="reg",
        by="patient_id",
        direction="backward",
    )
    ok = m["reg"].notna() & (m["prev_disch"].isna() | (m["reg"] > m["prev_disch"]))
    ri = m.loc[ok, "ri"].to_numpy(np.int64)
    out[m.loc[ok, "index"].to_numpy()] = r["reg"].to_numpy(np.int64)[ri]
    counts["admissions_with_ed_registration"] = int(ok.sum())
    return out


def _patients(
    stays: pd.DataFrame,
    rows: pd.DataFrame,
    adm: pd.DataFrame,
    mapping: mm.Mapping,
    counts: dict[str, int],
) -> pd.DataFrame:
    birth = rows[(rows["role"] == mm.BIRTH) & (rows["t"] != NULL_T)].groupby("subject")["t"].min()
    death = rows[(rows["role"] == mm.DEATH) & (rows["t"] != NULL_T)].groupby("subject")["t"].min()
    gender = rows[rows["role"] == mm.GENDER].groupby("subject")["text"].last()
    pid = stays["patient_id"]
    intime = stays["intime"].to_numpy().astype("datetime64[us]").astype(np.int64)
    outtime = stays["outtime"].to_numpy().astype("datetime64[us]")
    adm_i = adm.set_index("hadm_id")
    hadm = stays["hadm_id"].astype("float64")
    admit = hadm.map(adm_i["admittime"]).to_numpy(float)
    ref = np.where(np.isfinite(admit), admit, intime)
    b = pid.map(birth).to_numpy(float)
    stays["age"] = (ref - b) / US_PER_YEAR
    counts["stays_without_birth"] = int(np.isnan(b).sum())
    g = pid.map(gender).astype("string")
    stays["gender"] = g.where(g.isin(["M", "F"]))
    if "death" in mapping.patients:
        dt = pid.map(death).to_numpy(float)
        disch = hadm.map(adm_i["dischtime"]).to_numpy(float)
        out_us = np.where(np.isnat(outtime), np.nan, outtime.astype(np.int64).astype(float))
        end = np.where(np.isfinite(disch), disch, out_us)
        died = np.isfinite(dt) & (dt <= end + DIED_AFTER_DISCHARGE_HOURS * 3_600_000_000)
        stays["died"] = pd.array(died, dtype="boolean")
    return stays
