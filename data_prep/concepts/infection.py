"""Suspected infection (SI) from antibiotics and cultures, per hospital admission.

PIPELINE.md section 1. Inputs: ``admission_events`` (``io.ADMISSION_EVENTS``) of concepts
``antibiotic`` and ``culture``, written by the source's reader. Which of a source's rows are
systemic antibiotics is the source's convention, applied by its reader (for MIMIC-III:
``antibiotic.sources.mimic3`` of the dictionary - PRESCRIPTIONS drug types, excluded routes
and names, the ``antibiotics.txt`` names, which `antibiotic_filter` applies). Rules here,
exactly as implemented:

* antibiotics: every ``antibiotic`` event; ``time_source`` "order date" (a date, i.e. 00:00
  of that day in MIMIC-III; a finer time, if a source has one, is kept) or
  "administration" (a clock time) or "order time" (an order with a clock time, MIMIC-IV).
  Events without an admission or a time are counted and dropped. Administration times beat
  order dates: an order dated a day on which the admission has an administration is
  dropped (issue 14, defect 2); an order with a clock time is never superseded.
* cultures: every ``culture`` event; ``time_source`` "charted" (a clock time) or "date
  only" (time = the day; a date-only culture). Events without a time are counted and
  dropped.
* a date-only culture carries its uncertainty: it was drawn at some time of its day
  ``[d 00:00, d + 24 h]``. Pairing uses that whole interval (a pair counts when SOME time
  of the day satisfies the window), and its point time is the day's midpoint, 12:00:
  anchoring it at 00:00, as the reference code and mimic-code do, places it on average
  12 h and at worst 24 h too early, and so shifts the SOFA window [SI - 48 h, SI + 24 h]
  a day early: a patient cultured in the evening of the day of admission lost the ICU hours
  of the onset from the window (issue 14, MIMIC-III demo). Noon halves the worst-case
  error and removes the bias. The audit records ``culture_time_source``.
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
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ANTIBIOTICS_FILE = Path(__file__).with_name("antibiotics.txt")
MV_ANTIBIOTICS_FILE = Path(__file__).with_name("mv_antibiotics.csv")


@dataclass(frozen=True)
class InfectionParams:
    """The suspected-infection options of YAML section `labels` (`LabelParams.infection`)."""

    si_time: str = "earlier"  # "earlier" (Seymour 2016) | "culture" (reference code)
    culture_then_abx_hours: float = 72.0
    abx_then_culture_hours: float = 24.0
    si_window_before_hours: float = 48.0
    si_window_after_hours: float = 24.0
    # "paired": antibiotics + cultures (Seymour 2016; the default). "antibiotics_only": for
    # datasets without culture events (the official MIMIC-IV MEDS release; HiRID): an
    # antibiotic followed by at least `abx_min_count - 1` more antibiotic events of the
    # admission within `abx_count_window_hours` (ricu's si_mode "abx" with abx_min_count 2,
    # abx_count_win 24 h, as Moor et al. 2021 use for data without reliable cultures).
    rule: str = "paired"
    abx_min_count: int = 2
    abx_count_window_hours: float = 24.0


SI_RULES = ("paired", "antibiotics_only")
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
# admission_events.time_source of the two concepts (io.ADMISSION_EVENTS)
ABX_ORDER_DATE = "order date"  # a date (MIMIC-III PRESCRIPTIONS.startdate)
ABX_ADMINISTRATION = "administration"  # a clock time (MIMIC-III MetaVision starttime)
ABX_ORDER_TIME = "order time"  # an order with a clock time (MIMIC-IV prescriptions.starttime)
CULTURE_CHARTED = "charted"
CULTURE_DATE = "date only"  # time = 00:00 of the culture's day
# onsets.culture_time_source of a date-only culture (its point time is 12:00)
CULTURE_DATE_ONLY = "date only (12:00)"


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


def antibiotic_filter(
    drug: pd.Series, route: pd.Series, rules: Mapping[str, Any]
) -> tuple[np.ndarray, dict[str, int]]:
    """Which rows of a source's medication table are systemic antibiotics.

    A source's reader calls this with its conventions from the dictionary (for MIMIC-III
    PRESCRIPTIONS: ``concepts()["antibiotic"].mappings("mimic3")[0].extra``, on the rows of
    its drug types, which are the reader's business). Rules, as in the reference code:
    ``drug`` contains (case-insensitively) a name of ``antibiotics.txt``; rows whose
    ``route`` (stripped) is one of ``exclude_routes`` (case-insensitive) or contains one of
    ``exclude_route_substrings``, and names containing one of ``exclude_name_substrings``,
    are dropped. Returns (keep mask, counts: rows, not_antibiotic, dropped_route,
    dropped_name, kept).
    """
    drug = pd.Series(drug).astype("string").str.lower().fillna("")
    route = pd.Series(route).astype("string").str.strip().fillna("")
    n = len(drug)
    pattern = "|".join(re.escape(x) for x in antibiotic_names())
    is_abx = drug.str.contains(pattern, regex=True).fillna(False).to_numpy(bool)
    route_u = route.str.upper()
    route_l = route.str.lower()
    routes = [str(r).strip().upper() for r in rules.get("exclude_routes", ())]
    bad_route = route_u.isin(routes).to_numpy(bool).copy()
    for sub in rules.get("exclude_route_substrings", ()):
        bad_route |= (
            route_l.str.contains(str(sub).lower(), regex=False).fillna(False).to_numpy(bool)
        )
    bad_name = np.zeros(n, bool)
    for sub in rules.get("exclude_name_substrings", ()):
        bad_name |= drug.str.contains(str(sub).lower(), regex=False).fillna(False).to_numpy(bool)
    keep = is_abx & ~bad_route & ~bad_name
    counts = {
        "rows": n,
        "not_antibiotic": int((~is_abx).sum()),
        "dropped_route": int((is_abx & bad_route).sum()),
        "dropped_name": int((is_abx & ~bad_route & bad_name).sum()),
        "kept": int(keep.sum()),
    }
    return keep, counts


def with_administrations(
    orders: pd.DataFrame, administrations: pd.DataFrame | None, counts: dict[str, int]
) -> pd.DataFrame:
    """Antibiotic events from orders and administrations (hadm_id, time, drug); administration
    times beat order dates: an order dated a day on which the admission has an antibiotic
    administration is dropped (its 00:00 would stand in for the administration's real time;
    issue 14, defect 2, MIMIC-III demo). Events gain ``source`` (ABX_ORDER_DATE |
    ABX_ADMINISTRATION)."""
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


ADMISSION_COLUMNS = ["hadm_id", "time", "concept", "text", "time_source"]


def _require(df: pd.DataFrame, cols: list[str], table: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {missing}; have {list(df.columns)}")


def _as_datetime(s: pd.Series) -> pd.Series:
    """Timestamps at microsecond resolution, timezone-naive."""
    return pd.to_datetime(s).astype("datetime64[us]")


def _time_sources(ev: pd.DataFrame, concept: str, allowed: tuple[str, ...]) -> pd.Series:
    """The time_source of `concept` events, checked: a timed event names a known source."""
    src = ev["time_source"].astype("string")
    bad = ev["time"].notna().to_numpy(bool) & ~src.isin(allowed).fillna(False).to_numpy(bool)
    if bad.any():
        row = ev.index[np.flatnonzero(bad)[0]]
        raise ValueError(
            f"admission_events: column 'time_source', row {row}: {concept} time source "
            f"{src.iloc[int(np.flatnonzero(bad)[0])]!r}, expected one of {list(allowed)}"
        )
    return src


def antibiotic_events(admission_events: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The antibiotic events with an admission and a time.

    Returns (events with columns hadm_id, time, drug, source (the time_source: order date |
    administration, an administration superseding the same day's orders), counts).
    """
    _require(admission_events, ADMISSION_COLUMNS, "admission_events")
    a = admission_events[
        admission_events["concept"].astype("string").eq("antibiotic").fillna(False)
    ]
    src = _time_sources(a, "antibiotic", (ABX_ORDER_DATE, ABX_ADMINISTRATION, ABX_ORDER_TIME))
    counts: dict[str, int] = {"antibiotic_rows": len(a)}
    no_hadm = a["hadm_id"].isna().to_numpy(bool)
    time = _as_datetime(a["time"])
    no_time = time.isna().to_numpy(bool)
    counts["antibiotic_rows_no_hadm"] = int(no_hadm.sum())
    counts["antibiotic_rows_no_time"] = int((~no_hadm & no_time).sum())
    keep = ~no_hadm & ~no_time
    ev = pd.DataFrame(
        {
            "hadm_id": a["hadm_id"].to_numpy()[keep].astype(np.int64),
            "time": time.to_numpy()[keep],
            "drug": a["text"].astype("string").to_numpy()[keep],
        }
    )
    kind = src.to_numpy(object)[keep]
    is_adm = (kind == ABX_ADMINISTRATION).astype(bool)
    is_timed = (kind == ABX_ORDER_TIME).astype(bool)
    counts["antibiotic_rows_kept"] = int(keep.sum())
    dated = ev[~is_adm & ~is_timed].reset_index(drop=True)
    out = with_administrations(dated, ev[is_adm].reset_index(drop=True), counts)
    if is_timed.any():  # clock-timed orders stand as they are
        out = pd.concat([out, ev[is_timed].assign(source=ABX_ORDER_TIME)], ignore_index=True)
    return out, counts


def culture_events(admission_events: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Cultures drawn: (events with hadm_id, time, date_only, specimen; drop counts).

    `time` is the charted time, or 00:00 of the day of a date-only culture (its interval's
    start; `si_candidates` gives it its point time, 12:00)."""
    _require(admission_events, ADMISSION_COLUMNS, "admission_events")
    m = admission_events[admission_events["concept"].astype("string").eq("culture").fillna(False)]
    src = _time_sources(m, "culture", (CULTURE_CHARTED, CULTURE_DATE))
    t = _as_datetime(m["time"])
    date_only = (src.eq(CULTURE_DATE).fillna(False) & t.notna()).to_numpy(bool)
    time = t.where(~date_only, t.dt.normalize())
    no_time = time.isna().to_numpy(bool)
    no_hadm = m["hadm_id"].isna().to_numpy(bool)
    counts = {
        "culture_rows": len(m),
        "culture_rows_no_time": int(no_time.sum()),
        "culture_rows_no_hadm": int((no_hadm & ~no_time).sum()),
        "culture_rows_date_only": int((date_only & ~no_hadm).sum()),
    }
    keep = ~no_time & ~no_hadm
    out = pd.DataFrame(
        {
            "hadm_id": m["hadm_id"].to_numpy()[keep].astype(np.int64),
            "time": time.to_numpy()[keep],
            "date_only": date_only[keep],
            "specimen": m["text"].astype("string").to_numpy()[keep],
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


def si_candidates(
    abx: pd.DataFrame, cultures: pd.DataFrame, params: InfectionParams
) -> pd.DataFrame:
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


def antibiotic_only_candidates(abx: pd.DataFrame, params: InfectionParams) -> pd.DataFrame:
    """SI events without cultures (``rule="antibiotics_only"``): every antibiotic event with at
    least ``abx_min_count`` antibiotic events of its admission (itself included, one per
    instant) in ``[t, t + abx_count_window_hours]``; SI time = the antibiotic's time. Same
    columns as `si_candidates` (the culture columns null, si_order "antibiotics_only")."""
    if "source" not in abx.columns:
        abx = abx.assign(source=ABX_ORDER_DATE)
    a = abx.sort_values(["hadm_id", "time", "source", "drug"]).drop_duplicates(["hadm_id", "time"])
    a = a.reset_index(drop=True)
    # for each event, the last event of its admission at or before t + window (sorted search)
    win = pd.Timedelta(hours=params.abx_count_window_hours)
    left = pd.DataFrame(
        {"hadm_id": a["hadm_id"].astype(np.int64), "t": a["time"] + win, "i": np.arange(len(a))}
    ).sort_values("t")
    right = pd.DataFrame(
        {"hadm_id": a["hadm_id"].astype(np.int64), "t": a["time"], "j": np.arange(len(a))}
    ).sort_values("t")
    m = pd.merge_asof(left, right, on="t", by="hadm_id", direction="backward")
    last = np.empty(len(a), np.int64)
    last[m["i"].to_numpy()] = m["j"].to_numpy()
    n_in_window = last - np.arange(len(a)) + 1
    q = a[n_in_window >= params.abx_min_count]
    nat = pd.Series(pd.NaT, index=q.index, dtype="datetime64[us]")
    return pd.DataFrame(
        {
            "hadm_id": q["hadm_id"].astype(np.int64),
            "si_time": q["time"].astype("datetime64[us]"),
            "antibiotic": q["drug"],
            "antibiotic_time": q["time"].astype("datetime64[us]"),
            "antibiotic_time_source": q["source"],
            "culture_time": nat,
            "culture_time_source": pd.Series(pd.NA, index=q.index, dtype="string"),
            "culture_specimen": pd.Series(pd.NA, index=q.index, dtype="string"),
            "si_order": "antibiotics_only",
        }
    ).reset_index(drop=True)


def suspected_infection(
    admission_events: pd.DataFrame,
    stays: pd.DataFrame,
    params: InfectionParams,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """First SI event of each ICU stay whose SI window overlaps the stay.

    ``admission_events``: schema ``io.ADMISSION_EVENTS`` (concepts other than antibiotic and
    culture are ignored); ``stays``: stay_id, hadm_id, intime, outtime.
    Returns (one row per stay WITH an SI, columns ``SI_COLUMNS``; attrition counts).
    """
    _require(stays, ["stay_id", "hadm_id", "intime", "outtime"], "stays")
    abx, counts = antibiotic_events(admission_events)
    cul, ccounts = culture_events(admission_events)
    counts.update(ccounts)
    if params.rule == "antibiotics_only":
        cand = antibiotic_only_candidates(abx, params)
    else:
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
