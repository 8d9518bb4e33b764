"""Suspected infection (SI) from antibiotics and cultures, per hospital admission.

PIPELINE.md section 1. Rules, exactly as implemented:

* antibiotics: PRESCRIPTIONS rows with ``drug_type`` in (MAIN, ADDITIVE) whose ``drug``
  contains (case-insensitively) a name of ``antibiotics.txt``; rows whose route is one of
  OU, OS, OD, AU, AS, AD, TP or contains "ear"/"eye", and names containing cream,
  desensitization, ophth oint or gel are dropped and counted. Time = ``startdate`` (in
  MIMIC-III a date, i.e. 00:00 of that day; a finer time, if a source has one, is kept).
* cultures: every MICROBIOLOGYEVENTS row; time = ``charttime``, else ``chartdate`` only
  ("date-only" culture). Rows without either are counted and dropped.
* a date-only culture carries its uncertainty: it was drawn at some time of its day
  ``[d 00:00, d + 24 h]``. Pairing uses that whole interval (a pair counts when SOME time
  of the day satisfies the window), and its point time is the day's midpoint, 12:00:
  anchoring it at 00:00, as the reference code and mimic-code do, places it on average
  12 h and at worst 24 h too early, and so shifts the SOFA window [SI - 48 h, SI + 24 h]
  a day early: a patient cultured in the evening of the day of admission lost the ICU hours
  of the onset from the window (issue 14, stay 286072). Noon halves the worst-case error
  and removes the bias. The audit records ``culture_time_source``.
* pairing within one ``hadm_id``:
  - culture first, antibiotic at most ``culture_then_abx_hours`` (72 h) later; for a
    date-only culture 72 h after the end of its day (96 h after 00:00, as mimic-code);
  - antibiotic first, culture at most ``abx_then_culture_hours`` (24 h) later; a date-only
    culture pairs when its day overlaps [antibiotic, antibiotic + 24 h].
  Both edges are inclusive (a gap of exactly 72 h pairs); equal times pair.
* SI time = the earlier of the two point times (``si_time="earlier"``, Seymour 2016) or
  always the culture's point time (``si_time="culture"``, the reference code).
* a stay takes the FIRST SI time of its admission whose SI window
  ``[SI - si_window_before_hours, SI + si_window_after_hours]`` overlaps the ICU stay
  ``[intime, outtime]``: SI events of the same admission that are so far from the stay
  that their window cannot touch it belong to another part of the admission.

Pairs are found with ``merge_asof`` (sorted searches), never a cross join, so memory is
linear in the number of events.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # avoid an import cycle: sepsis3 imports this module
    from data_prep.sepsis3 import LabelParams

log = logging.getLogger(__name__)

ANTIBIOTICS_FILE = Path(__file__).with_name("antibiotics.txt")
MV_ANTIBIOTICS_FILE = Path(__file__).with_name("mv_antibiotics.csv")
ABX_DRUG_TYPES = ("MAIN", "ADDITIVE")
EXCLUDED_ROUTES = ("OU", "OS", "OD", "AU", "AS", "AD", "TP")
EXCLUDED_ROUTE_SUBSTRINGS = ("ear", "eye")
EXCLUDED_NAME_SUBSTRINGS = ("cream", "desensitization", "ophth oint", "gel")

SI_COLUMNS = [
    "stay_id",
    "si_time",
    "antibiotic",
    "antibiotic_time",
    "antibiotic_time_source",
    "culture_time",
    "culture_time_source",
    "culture_specimen",
    "si_order",
]
DATE_ONLY_HOURS = 24.0  # a date-only event happened somewhere in [date, date + 24 h]
CULTURE_CHARTED, CULTURE_DATE_ONLY = "charted", "date only (12:00)"
ABX_ORDER_DATE = "order date"  # MIMIC-III PRESCRIPTIONS.startdate
ABX_ADMINISTRATION = "administration"  # MetaVision INPUTEVENTS_MV starttime


@lru_cache(maxsize=1)
def antibiotic_names() -> tuple[str, ...]:
    """The antibiotic substrings of ``antibiotics.txt`` (lower case, comments skipped)."""
    names = []
    for line in ANTIBIOTICS_FILE.read_text().splitlines():
        line = line.strip().lower()
        if line and not line.startswith("#"):
            names.append(line)
    return tuple(names)


@lru_cache(maxsize=1)
def mv_antibiotic_items() -> dict[int, str]:
    """MetaVision antibiotic ITEMID -> label (``mv_antibiotics.csv``)."""
    df = pd.read_csv(MV_ANTIBIOTICS_FILE, comment="#")
    if list(df.columns) != ["itemid", "label"] or df["itemid"].duplicated().any():
        raise ValueError(f"{MV_ANTIBIOTICS_FILE}: expected unique itemid,label rows")
    return dict(zip(df["itemid"].astype(int), df["label"].astype(str), strict=True))


def with_administrations(
    orders: pd.DataFrame, administrations: pd.DataFrame | None, counts: dict[str, int]
) -> pd.DataFrame:
    """Antibiotic events from orders and administrations; administration times beat order
    dates: an order dated a day on which the admission has an antibiotic administration is
    dropped (its 00:00 would stand in for the administration's real time; issue 14, defect
    2, stay 283181). Events gain ``source`` (ABX_ORDER_DATE | ABX_ADMINISTRATION)."""
    orders = orders.assign(source=ABX_ORDER_DATE)
    if administrations is None or administrations.empty:
        counts["antibiotic_administrations"] = 0
        return orders
    adm = administrations[["hadm_id", "time", "drug"]].assign(source=ABX_ADMINISTRATION)
    adm = adm[adm["hadm_id"].notna() & adm["time"].notna()]
    adm = adm.assign(hadm_id=adm["hadm_id"].astype(np.int64), time=_as_datetime(adm["time"]))
    days = set(zip(adm["hadm_id"], adm["time"].dt.normalize(), strict=True))
    key = zip(orders["hadm_id"], pd.to_datetime(orders["time"]).dt.normalize(), strict=True)
    superseded = np.fromiter((k in days for k in key), bool, len(orders))
    counts["antibiotic_administrations"] = len(adm)
    counts["antibiotic_orders_superseded_by_administration"] = int(superseded.sum())
    return pd.concat([orders[~superseded], adm], ignore_index=True)


def _require(df: pd.DataFrame, cols: list[str], table: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {missing}; have {list(df.columns)}")


def _as_datetime(s: pd.Series) -> pd.Series:
    """Timestamps at microsecond resolution, timezone-naive."""
    return pd.to_datetime(s).astype("datetime64[us]")


def antibiotic_events(prescriptions: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Filter PRESCRIPTIONS to systemic antibiotics.

    Returns (events with columns hadm_id, time, drug; counts of rows dropped per reason).
    """
    _require(prescriptions, ["hadm_id", "startdate", "drug", "drug_type", "route"], "prescriptions")
    p = prescriptions
    counts: dict[str, int] = {"prescriptions_rows": len(p)}
    drug = p["drug"].astype("string").str.lower().fillna("")
    dtype = p["drug_type"].astype("string").str.upper().str.strip()
    route = p["route"].astype("string").str.strip().fillna("")
    keep_type = dtype.isin(ABX_DRUG_TYPES).fillna(False).to_numpy(bool)
    counts["prescriptions_not_main_or_additive"] = int((~keep_type).sum())
    pattern = "|".join(re.escape(n) for n in antibiotic_names())
    is_abx = drug.str.contains(pattern, regex=True).fillna(False).to_numpy(bool)
    cand = keep_type & is_abx
    counts["prescriptions_not_antibiotic"] = int((keep_type & ~is_abx).sum())
    route_u = route.str.upper()
    route_l = route.str.lower()
    bad_route = route_u.isin(EXCLUDED_ROUTES).to_numpy(bool).copy()
    for sub in EXCLUDED_ROUTE_SUBSTRINGS:
        bad_route |= route_l.str.contains(sub, regex=False).fillna(False).to_numpy(bool)
    bad_name = np.zeros(len(p), bool)
    for sub in EXCLUDED_NAME_SUBSTRINGS:
        bad_name |= drug.str.contains(sub, regex=False).fillna(False).to_numpy(bool)
    counts["antibiotic_rows_dropped_route"] = int((cand & bad_route).sum())
    counts["antibiotic_rows_dropped_name"] = int((cand & ~bad_route & bad_name).sum())
    cand &= ~bad_route & ~bad_name
    no_hadm = p["hadm_id"].isna().to_numpy(bool)
    start = _as_datetime(p["startdate"])
    no_time = start.isna().to_numpy(bool)
    counts["antibiotic_rows_no_hadm"] = int((cand & no_hadm).sum())
    counts["antibiotic_rows_no_startdate"] = int((cand & ~no_hadm & no_time).sum())
    cand &= ~no_hadm & ~no_time
    out = pd.DataFrame(
        {
            "hadm_id": p["hadm_id"].to_numpy()[cand].astype(np.int64),
            "time": start.to_numpy()[cand],
            "drug": p["drug"].astype("string").to_numpy()[cand],
        }
    )
    counts["antibiotic_rows_kept"] = len(out)
    return out, counts


def culture_events(microbiology: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Cultures drawn: (events with hadm_id, time, date_only, specimen; drop counts).

    `time` is the charttime, or 00:00 of the chartdate for a date-only culture (its
    interval's start; `si_candidates` gives it its point time, 12:00)."""
    _require(microbiology, ["hadm_id", "charttime", "chartdate", "spec_type_desc"], "microbiology")
    m = microbiology
    ct = _as_datetime(m["charttime"])
    cd = _as_datetime(m["chartdate"]).dt.normalize()
    date_only = ct.isna() & cd.notna()
    time = ct.where(ct.notna(), cd)
    no_time = time.isna().to_numpy(bool)
    no_hadm = m["hadm_id"].isna().to_numpy(bool)
    counts = {
        "culture_rows": len(m),
        "culture_rows_no_time": int(no_time.sum()),
        "culture_rows_no_hadm": int((no_hadm & ~no_time).sum()),
        "culture_rows_date_only": int((date_only & ~pd.Series(no_hadm, index=m.index)).sum()),
    }
    keep = ~no_time & ~no_hadm
    out = pd.DataFrame(
        {
            "hadm_id": m["hadm_id"].to_numpy()[keep].astype(np.int64),
            "time": time.to_numpy()[keep],
            "date_only": date_only.to_numpy(bool)[keep],
            "specimen": m["spec_type_desc"].astype("string").to_numpy()[keep],
        }
    )
    counts["culture_rows_kept"] = len(out)
    return out, counts


def _asof(left: pd.DataFrame, right: pd.DataFrame, direction: str, hours: float) -> pd.DataFrame:
    """For each left event, the nearest right event of the same hadm within `hours`."""
    r = right.rename(columns={"time": "time_r"}).copy()
    if left.empty or right.empty:
        return pd.concat([left.iloc[:0], r.drop(columns="hadm_id").iloc[:0]], axis=1)
    r["time_key"] = r["time_r"]
    lf = left.copy()
    lf["time_key"] = lf["time"]
    merged = pd.merge_asof(
        lf.sort_values("time_key"),
        r.sort_values("time_key"),
        on="time_key",
        by="hadm_id",
        direction=direction,
        tolerance=pd.Timedelta(hours=hours),
        allow_exact_matches=True,
    )
    return merged[merged["time_r"].notna()].drop(columns="time_key")


def _si_events(m: pd.DataFrame, abx_is_left: bool, order: str, date_only: bool) -> pd.DataFrame:
    """SI events from an `_asof` pairing of antibiotics with cultures (start times)."""
    abx_t, cx_t = (m["time"], m["time_r"]) if abx_is_left else (m["time_r"], m["time"])
    if date_only:  # point time of a date-only culture: the middle of its day
        cx_t = cx_t + pd.Timedelta(hours=DATE_ONLY_HOURS / 2)
    return pd.DataFrame(
        {
            "hadm_id": m["hadm_id"],
            # "earlier": the earlier point time; "culture": the culture's (set by the caller)
            "si_time": np.minimum(abx_t.to_numpy(), cx_t.to_numpy()) if len(m) else abx_t,
            "antibiotic": m["drug"],
            "antibiotic_time": abx_t,
            "antibiotic_time_source": m["source"],
            "culture_time": cx_t,
            "culture_time_source": CULTURE_DATE_ONLY if date_only else CULTURE_CHARTED,
            "culture_specimen": m["specimen"],
            "si_order": order,
        }
    )


def si_candidates(abx: pd.DataFrame, cultures: pd.DataFrame, params: LabelParams) -> pd.DataFrame:
    """Every SI event of every admission (one per qualifying culture or antibiotic).

    Columns: hadm_id, si_time, antibiotic, antibiotic_time, culture_time, culture_specimen,
    si_order ("culture_first" | "abx_first").
    """
    # Deduplicate to one event per (hadm, time): MICROBIOLOGYEVENTS has a row per
    # organism x antibiotic tested; the first specimen / drug name (sorted) is reported.
    if "source" not in abx.columns:
        abx = abx.assign(source=ABX_ORDER_DATE)
    # one event per (hadm, time); an administration wins over an order at the same instant
    a = abx.sort_values(["hadm_id", "time", "source", "drug"]).drop_duplicates(["hadm_id", "time"])
    c = cultures.sort_values(["hadm_id", "time", "date_only", "specimen"]).drop_duplicates(
        ["hadm_id", "time", "date_only"]
    )
    abx_ev = a[["hadm_id", "time", "drug", "source"]]
    day = pd.Timedelta(hours=DATE_ONLY_HOURS)
    parts = []
    for date_only in (False, True):
        cx = c[c["date_only"] == date_only][["hadm_id", "time", "specimen"]]
        width = DATE_ONLY_HOURS if date_only else 0.0  # the culture's interval [start, end]
        # culture first: antibiotic within 72 h after the culture's end, not before its start
        m = _asof(cx, abx_ev, "forward", params.culture_then_abx_hours + width)
        parts.append(_si_events(m, abx_is_left=False, order="culture_first", date_only=date_only))
        # antibiotic first: the culture's interval overlaps [antibiotic, antibiotic + 24 h];
        # matched on the interval's end, so the end is what the window is measured to
        cx_end = cx.assign(time=cx["time"] + day) if date_only else cx
        if params.si_time == "earlier":
            m = _asof(abx_ev, cx_end, "forward", params.abx_then_culture_hours + width)
            if date_only and len(m):
                m = m.assign(time_r=m["time_r"] - day)
        else:  # culture time: every culture preceded by an antibiotic within 24 h
            m = _asof(cx_end, abx_ev, "backward", params.abx_then_culture_hours + width)
            if date_only and len(m):
                m = m.assign(time=m["time"] - day)
        parts.append(
            _si_events(
                m,
                abx_is_left=params.si_time == "earlier",
                order="abx_first",
                date_only=date_only,
            )
        )
    out = (
        pd.concat([p for p in parts if len(p)], ignore_index=True)
        if any(len(p) for p in parts)
        else pd.DataFrame(columns=parts[0].columns)
    )
    for col in ("si_time", "antibiotic_time", "culture_time"):
        out[col] = out[col].astype("datetime64[us]")
    if params.si_time == "culture":
        out["si_time"] = out["culture_time"]
    out["hadm_id"] = out["hadm_id"].astype(np.int64)
    return out.reset_index(drop=True)


def suspected_infection(
    prescriptions: pd.DataFrame,
    microbiology: pd.DataFrame,
    stays: pd.DataFrame,
    params: LabelParams,
    administrations: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """First SI event of each ICU stay whose SI window overlaps the stay.

    ``administrations`` (hadm_id, time, drug): antibiotic administrations with clock times
    (MetaVision), which supersede the same day's order dates (`with_administrations`).
    Returns (one row per stay WITH an SI, columns ``SI_COLUMNS``; attrition counts).
    """
    _require(stays, ["stay_id", "hadm_id", "intime", "outtime"], "stays")
    abx, counts = antibiotic_events(prescriptions)
    abx = with_administrations(abx, administrations, counts)
    cul, ccounts = culture_events(microbiology)
    counts.update(ccounts)
    cand = si_candidates(abx, cul, params)
    counts["si_events"] = len(cand)
    s = stays[["stay_id", "hadm_id", "intime", "outtime"]].copy()
    counts["stays_no_hadm"] = int(s["hadm_id"].isna().sum())
    s = s[s["hadm_id"].notna() & s["intime"].notna() & s["outtime"].notna()]
    s["hadm_id"] = s["hadm_id"].astype(np.int64)
    s["intime"] = _as_datetime(s["intime"])
    s["outtime"] = _as_datetime(s["outtime"])
    m = s.merge(cand, on="hadm_id", how="inner")
    before = pd.Timedelta(hours=params.si_window_before_hours)
    after = pd.Timedelta(hours=params.si_window_after_hours)
    overlap = (m["si_time"] - before <= m["outtime"]) & (m["si_time"] + after >= m["intime"])
    counts["stays_si_only_away_from_stay"] = int(
        m["stay_id"].nunique() - m.loc[overlap, "stay_id"].nunique()
    )
    m = m[overlap]
    # first SI time; ties broken by culture-first, then earliest partner, then name
    m = m.sort_values(
        ["stay_id", "si_time", "si_order", "antibiotic_time", "culture_time", "antibiotic"],
        ascending=[True, True, False, True, True, True],
    )
    first = m.drop_duplicates("stay_id", keep="first")
    out = first[SI_COLUMNS].reset_index(drop=True)
    out["stay_id"] = out["stay_id"].astype(np.int64)
    counts["stays_with_si"] = len(out)
    log.info("suspected infection: %d SI events, %d stays with SI", len(cand), len(out))
    return out, counts
