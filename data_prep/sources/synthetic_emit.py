"""Per-table writers of a synthetic stay: its design and measurements as MIMIC-III rows.

Each function appends one stay's rows of one table (or, for `admission`, of PATIENTS,
ADMISSIONS, ICUSTAYS and DIAGNOSES_ICD) to the block's `Rows`. They draw nothing from the RNG:
the values come from `synthetic_scenario` and `synthetic_physiology`, the ITEMIDs, units and
reported decimals from `synthetic_items`. Rows of a table are in the order they are appended.
"""

from __future__ import annotations

import numpy as np

from data_prep.sources.synthetic_items import (
    CHART_DIGITS,
    CHART_ITEMS,
    LAB,
    LAB_DIGITS,
    MV_NACL_0_9,
    NOREPI,
    URINE_ITEM,
)
from data_prep.sources.synthetic_physiology import Series
from data_prep.sources.synthetic_scenario import (
    Coding,
    Culture,
    Infusion,
    Prescription,
    Stay,
)
from data_prep.sources.synthetic_tables import Rows

NAT = np.datetime64("NaT", "m")


def _stay_ids(stay: Stay) -> dict:
    return dict(SUBJECT_ID=stay.ids.subject, HADM_ID=stay.ids.hadm, ICUSTAY_ID=stay.ids.stay)


def chartevents(rows: dict[str, Rows], stay: Stay, series: list[Series]) -> None:
    """CHARTEVENTS: each series under its item of the stay's database (MetaVision rows carry
    WARNING / ERROR 0, as there)."""
    items = CHART_ITEMS[stay.db]
    extra = {"ERROR": "0", "WARNING": "0"} if stay.mv else {}
    for s in series:
        if len(s.t) == 0:
            continue
        item, uom = items[s.name]
        nd = CHART_DIGITS.get(s.name, 0)
        v = np.round(s.vals, nd) if nd else np.round(s.vals)
        value = (
            s.text
            if s.text is not None
            else (v.astype(np.int64).astype(str) if nd == 0 else v.astype(str))
        )
        rows["CHARTEVENTS"].add(
            **_stay_ids(stay),
            ITEMID=np.full(len(s.t), item, np.int64),
            CHARTTIME=stay.at(s.t),
            VALUE=value.astype(object),
            VALUENUM=v.astype(float),
            VALUEUOM=uom,
            **extra,
        )


def labevents(rows: dict[str, Rows], stay: Stay, series: list[Series]) -> None:
    """LABEVENTS (by admission: no ICUSTAY_ID), rounded to each lab's reported decimals."""
    for s in series:
        if len(s.t) == 0:
            continue
        item, uom = LAB[s.name][0], LAB[s.name][1]
        nd = LAB_DIGITS[s.name]
        v = np.round(s.vals, nd)
        value = v.astype(np.int64).astype(str) if nd == 0 else v.astype(str)
        rows["LABEVENTS"].add(
            SUBJECT_ID=stay.ids.subject,
            HADM_ID=stay.ids.hadm,
            ITEMID=np.full(len(s.t), item, np.int64),
            CHARTTIME=stay.at(s.t),
            VALUE=value.astype(object),
            VALUENUM=v.astype(float),
            VALUEUOM=uom,
        )


def inputevents(rows: dict[str, Rows], stay: Stay, infusions: list[Infusion]) -> None:
    """Norepinephrine: MetaVision as rate intervals (INPUTEVENTS_MV), CareVue as hourly charted
    rates (INPUTEVENTS_CV); MetaVision stays also get a saline bolus carrying the weight."""
    base, weight, at = _stay_ids(stay), stay.weight, stay.at
    for inf in infusions:
        edges, rates = inf.edges, inf.rates
        if stay.mv:
            ends = np.r_[edges[1:], inf.end]
            rows["INPUTEVENTS_MV"].add(
                **base,
                STARTTIME=at(edges),
                ENDTIME=at(ends),
                ITEMID=np.full(len(edges), NOREPI[stay.db], np.int64),
                AMOUNT=np.round(rates * weight * 60 * (ends - edges) / 1000, 3),
                AMOUNTUOM="mg",
                RATE=rates,
                RATEUOM="mcg/kg/min",
                PATIENTWEIGHT=np.full(len(edges), round(weight, 1)),
                ORDERCATEGORYNAME="01-Drips",
                STATUSDESCRIPTION="Changed",
            )
        else:
            hrs = np.arange(inf.start, inf.end, 1.0)
            r = np.round(np.interp(hrs, edges, rates), 3)
            rows["INPUTEVENTS_CV"].add(
                **base,
                CHARTTIME=at(hrs),
                ITEMID=np.full(len(hrs), NOREPI[stay.db], np.int64),
                RATE=r,
                RATEUOM="mcgkgmin",
            )
    # non-vasopressor MetaVision rows carry the admission weight too (as in MIMIC-III)
    if stay.mv:
        tfl = np.array([min(1.0, stay.los / 2)])
        rows["INPUTEVENTS_MV"].add(
            **base,
            STARTTIME=at(tfl),
            ENDTIME=at(tfl + 1 / 60),
            ITEMID=np.array([MV_NACL_0_9], np.int64),
            AMOUNT=np.array([500.0]),
            AMOUNTUOM="ml",
            PATIENTWEIGHT=np.array([round(weight, 1)]),
            ORDERCATEGORYNAME="03-IV Fluid Bolus",
            STATUSDESCRIPTION="FinishedRunning",
        )


def outputevents(rows: dict[str, Rows], stay: Stay, t: np.ndarray, urine_ml: np.ndarray) -> None:
    """OUTPUTEVENTS: urine volumes at hours `t` under the database's Foley item."""
    if len(t):
        rows["OUTPUTEVENTS"].add(
            **_stay_ids(stay),
            CHARTTIME=stay.at(t),
            ITEMID=np.full(len(t), URINE_ITEM[stay.db], np.int64),
            VALUE=np.round(urine_ml),
            VALUEUOM="ml" if stay.db == "carevue" else "mL",
        )


def prescriptions(rows: dict[str, Rows], stay: Stay, orders: list[Prescription]) -> None:
    """PRESCRIPTIONS: one row per order (dates at midnight)."""
    for p in orders:
        rows["PRESCRIPTIONS"].add(
            **_stay_ids(stay),
            STARTDATE=np.array([p.start]),
            ENDDATE=np.array([p.end]),
            DRUG_TYPE="MAIN",
            DRUG=p.drug,
            ROUTE=p.route,
        )


def microbiologyevents(rows: dict[str, Rows], stay: Stay, cultures: list[Culture]) -> None:
    """MICROBIOLOGYEVENTS: one row per specimen, with its date and time."""
    for c in cultures:
        t = np.array([c.time])
        rows["MICROBIOLOGYEVENTS"].add(
            SUBJECT_ID=stay.ids.subject,
            HADM_ID=stay.ids.hadm,
            CHARTDATE=t.astype("datetime64[D]").astype("datetime64[m]"),
            CHARTTIME=t,
            SPEC_TYPE_DESC=c.specimen,
            ORG_NAME=c.organism,
        )


def admission(rows: dict[str, Rows], stay: Stay, coding: Coding) -> None:
    """PATIENTS, ADMISSIONS, ICUSTAYS and DIAGNOSES_ICD rows of the stay (one admission each)."""
    ids, died = stay.ids, stay.died
    dob_years = 300 if stay.very_old else stay.age
    dob = (
        (stay.admit - int(dob_years * 365.25 * 1440))
        .astype("datetime64[D]")
        .astype("datetime64[m]")
    )
    dod = np.array(
        [stay.death_time.astype("datetime64[D]").astype("datetime64[m]")] if died else [NAT]
    )
    rows["PATIENTS"].add(
        SUBJECT_ID=ids.subject,
        GENDER="F" if stay.female else "M",
        DOB=np.array([dob]),
        DOD=dod,
        DOD_HOSP=dod,
        EXPIRE_FLAG=np.array([int(died)]),
    )
    rows["ADMISSIONS"].add(
        SUBJECT_ID=ids.subject,
        HADM_ID=ids.hadm,
        ADMITTIME=np.array([stay.admit]),
        DISCHTIME=np.array([stay.dischtime]),
        DEATHTIME=np.array([stay.death_time if died else NAT]),
        ADMISSION_TYPE=coding.admission_type,
        DISCHARGE_LOCATION="DEAD/EXPIRED" if died else "HOME",
        DIAGNOSIS="SEPSIS" if coding.sepsis_dx else "OTHER",
        HOSPITAL_EXPIRE_FLAG=np.array([int(died)]),
        HAS_CHARTEVENTS_DATA=np.array([1]),
    )
    rows["ICUSTAYS"].add(
        **_stay_ids(stay),
        DBSOURCE=stay.db,
        FIRST_CAREUNIT=coding.unit,
        LAST_CAREUNIT=coding.unit,
        INTIME=np.array([stay.intime]),
        OUTTIME=np.array([stay.outtime]),
        LOS=np.array([round(stay.los / 24, 4)]),
    )
    rows["DIAGNOSES_ICD"].add(
        SUBJECT_ID=ids.subject,
        HADM_ID=ids.hadm,
        SEQ_NUM=np.arange(1, len(coding.icd9) + 1, dtype=np.int64),
        ICD9_CODE=np.array(coding.icd9, dtype=object),
    )
