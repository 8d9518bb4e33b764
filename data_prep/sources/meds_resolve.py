"""The MEDS reader's buffered parts: vasopressor infusions, intervals and admission events.

* infusions (per shard): each START row (rate, unit, order id) is paired with the END row
  of the same subject, drug and order id (the k-th start of an order with its k-th end;
  without an order id column, the first end at or after the start); END rows whose status
  is excluded (MetaVision "Rewritten") drop their pair. The rate is converted to
  mcg/kg/min with the weight charted at the start (the mapping's infusion weight code),
  else the stay's first charted weight, else its first infusion weight.
* intervals (per shard): START / END rows (ventilation from procedureevents) paired in time
  order, written as the MIMIC-IV reader writes procedureevents (`resolve_intervals`).
* admission events: antibiotics (route / drug type / name rules of the mapping, the
  antibiotics.txt name match applied per code), cultures (time source "charted", or "date
  only" for a time at 00:00 when the mapping says ``date_only: midnight``) and sepsis
  diagnosis codes (time null, as the contract says); a null hadm_id is taken from the
  subject's hospital admission whose [min(ED registration, admittime), dischtime] holds the
  event (a date-only culture: overlaps its day), as the MIMIC-IV reader does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_prep import io as dio
from data_prep.sources.extract_output import US_PER_HOUR
from data_prep.sources.meds_events import CHART_BEFORE_HOURS, NULL_ID, TS, _np_i64, _str

US_PER_DAY = 24 * 3_600_000_000


def _first_weight(fps, stay: np.ndarray) -> np.ndarray:
    found, pos = fps.index.by_id(stay)
    return np.where(found, fps.w[pos], np.nan)


def resolve(p, s: pd.DataFrame, e: pd.DataFrame | None, w: pd.DataFrame | None) -> None:
    inf = p.m.infusions
    s = s.reset_index(drop=True)
    s["t_end"] = np.nan
    s["status"] = None
    if e is not None and len(e):
        keys = ["subject", "drug", "order"] if inf.pair_on else ["subject", "drug"]
        e = e.rename(columns={"t": "t_end"})
        if inf.pair_on:
            s = s.sort_values([*keys, "t"], kind="stable")
            e = e.sort_values([*keys, "t_end"], kind="stable")
            s["rank"] = s.groupby(keys, sort=False).cumcount()
            e["rank"] = e.groupby(keys, sort=False).cumcount()
            s = s.drop(columns=["t_end", "status"]).merge(
                e[[*keys, "rank", "t_end", "status"]], on=[*keys, "rank"], how="left"
            )
        else:
            e = e.assign(t=e["t_end"]).sort_values("t")
            s = pd.merge_asof(
                s.drop(columns=["t_end", "status"]).sort_values("t"),
                e[["subject", "drug", "t", "t_end", "status"]],
                on="t",
                by=["subject", "drug"],
                direction="forward",
            )
    for key, g in s.groupby("key"):
        p._drop(key, "start_without_end", g["t_end"].isna().sum())
    excluded = s["status"].isin(list(inf.exclude_status)).to_numpy()
    before = s["t_end"].notna().to_numpy() & (s["t_end"].to_numpy(float) < s["t"].to_numpy(float))
    no_rate = ~np.isfinite(s["rate"].to_numpy(float))
    spec = s["unit"].map(inf.rate_units)
    unknown = spec.isna().to_numpy() & ~no_rate
    for key, g in s[excluded].groupby("key"):
        p._drop(key, "status_excluded", len(g))
    for key, g in s[~excluded & before].groupby("key"):
        p._drop(key, "end_before_start", len(g))
    for key, g in s[~excluded & ~before & no_rate].groupby("key"):
        p._drop(key, "missing_rate", len(g))
    for (key, unit), g in s[~excluded & ~before & unknown].groupby(
        ["key", s["unit"].fillna("<null>")]
    ):
        p._drop(key, f"unknown_rate_unit:{unit}", len(g))
    s = s[~excluded & ~before & ~no_rate & ~unknown].reset_index(drop=True)
    if not len(s):
        return
    spec = s["unit"].map(inf.rate_units)
    scale = spec.map(lambda x: x[0]).to_numpy(float)
    per_w = spec.map(lambda x: x[1]).to_numpy(bool)
    per_h = spec.map(lambda x: x[2]).to_numpy(bool)
    weight = np.full(len(s), np.nan)
    if w is not None and len(w):
        at = w.groupby(["subject", "t"], as_index=False)["w"].mean()
        weight = s[["subject", "t"]].merge(at, on=["subject", "t"], how="left")["w"].to_numpy(float)
    stay = s["stay"].to_numpy(np.int64)
    weight = np.where(np.isfinite(weight), weight, _first_weight(p.weights, stay))
    weight = np.where(np.isfinite(weight), weight, _first_weight(p.inf_weights, stay))
    no_w = per_w & ~np.isfinite(weight)
    for key, g in s[no_w].groupby("key"):
        p._drop(key, "no_weight_for_rate_unit", len(g))
    rate = s["rate"].to_numpy(float) * scale
    rate = np.where(per_w, rate / np.where(no_w, 1.0, weight), rate)
    rate = np.where(per_h, rate / 60.0, rate)
    keep = ~no_w
    s, rate = s[keep], rate[keep]
    cid = np.array([p.concept_id[inf.drugs[d].concept] for d in s["drug"]], np.int32)
    end = s["t_end"].to_numpy(float)
    end_ts = pa.array(
        np.where(np.isfinite(end), end, 0).astype(np.int64).astype("datetime64[us]"),
        TS,
        mask=~np.isfinite(end),
    )
    p._write(
        "infusions",
        s["stay"].to_numpy(np.int64),
        s["t"].to_numpy(np.int64),
        cid,
        rate,
        end_ts,
        None,
    )


# --------------------------------------------------------------------- intervals
def resolve_intervals(p, rows: pd.DataFrame) -> None:
    """START / END rows of one shard -> events, as the MIMIC-IV reader writes procedureevents.

    The k-th START of a stay (stay id; without one, the subject), rule and item pairs with
    the k-th END in time order. The stay: the row's stay id (a known stay), else the
    subject's stay at the START time (intime - 24 h .. outtime). A concept with dictionary
    ``hold_hours`` (ventilation) gets one event every hold_hours from the start, each with
    end_time = min(its time + hold_hours, end), so the concept layer's hold rule and end_time
    both cover the interval; otherwise one event at the start with end_time = end. A START
    without an END gives one event at the start without end_time; END rows without a START
    and intervals that end before they start are dropped and counted."""
    keys = ["subject", "stay", "rule", "item"]
    rows = rows.sort_values([*keys, "t"], kind="stable")
    rows["k"] = rows.groupby([*keys, "start"], sort=False).cumcount()
    m = rows[rows["start"]].drop(columns="start").reset_index(drop=True)
    e = rows[~rows["start"]].reset_index(drop=True)
    e["ei"] = np.arange(len(e))  # merges turn ints float: carry a row number
    pair = m[[*keys, "k"]].merge(e[[*keys, "k", "ei"]], on=[*keys, "k"], how="left")["ei"]
    has_end = pair.notna().to_numpy()
    ei = pair.fillna(0).to_numpy(np.int64)
    unmatched = np.ones(len(e), bool)
    unmatched[ei[has_end]] = False
    for k, g in e[unmatched].groupby("cls"):
        p._drop(p.codes.classes[int(k)].key, "end_without_start", len(g))
    s_us = m["t"].to_numpy(np.int64)
    e_us = np.where(has_end, e["t"].to_numpy(np.int64)[ei] if len(e) else s_us, s_us)
    bad = e_us < s_us
    for k, g in m[bad].groupby("cls"):
        p._drop(p.codes.classes[int(k)].key, "end_before_start", len(g))
    stay = m["stay"].to_numpy(np.int64)
    found, _pos = p.index.by_id(np.where(stay >= 0, stay, 0))
    by_time = p.index.by_subject_time(m["subject"].to_numpy(np.int64), s_us, CHART_BEFORE_HOURS)
    stay = np.where(stay >= 0, np.where(found, stay, NULL_ID), by_time)
    for k, g in m[~bad & (stay < 0)].groupby("cls"):
        p._drop(p.codes.classes[int(k)].key, "no_stay", len(g))
    keep = ~bad & (stay >= 0)
    for ri in np.unique(m["rule"].to_numpy()[keep]):
        r = p.m.intervals[int(ri)]
        sel = keep & (m["rule"].to_numpy() == ri)
        s0, e0, he = s_us[sel], e_us[sel], has_end[sel]
        if r.hold_hours is not None:
            hold = int(round(r.hold_hours * US_PER_HOUR))
            n = np.maximum(1, -(-(e0 - s0) // hold))  # ceil((end - start) / hold), at least one
        else:
            hold, n = 0, np.ones(len(s0), np.int64)
        row = np.repeat(np.arange(len(s0)), n)
        j = np.arange(len(row)) - np.repeat(np.cumsum(n) - n, n)
        t = s0[row] + j * hold
        end = np.minimum(t + hold, e0[row]) if hold else e0[row]
        cls = m["cls"].to_numpy(np.int64)[sel][row]
        p._write(
            r.part,
            stay[sel][row],
            t,
            np.full(len(row), p.concept_id[r.concept], np.int32),
            np.full(len(row), np.nan),
            pa.array(end.astype("datetime64[us]"), TS, mask=~he[row]),
            pa.array(p.text_of[cls], pa.string(), from_pandas=True),
        )
        p.pairing[r.key]["intervals"] = p.pairing[r.key].get("intervals", 0) + int(sel.sum())
        p.pairing[r.key]["events_written"] = p.pairing[r.key].get("events_written", 0) + len(row)


# --------------------------------------------------------------------- admission events
def _upper(a: np.ndarray) -> pd.Series:
    return pd.Series(a, dtype="string").str.strip().str.upper()


def admission_rows(p, b: pa.RecordBatch, cls: np.ndarray) -> pd.DataFrame | None:
    rules = p.rule_of[cls]
    keep = ~p.drop_of[cls]
    p._drop_by_class(cls[~keep])
    time_ok = b.column("time").is_valid().to_numpy(zero_copy_only=False)
    t = pc.fill_null(b.column("time").cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    source = np.full(len(cls), None, object)
    for ri in np.unique(rules[keep]):
        r = p.m.admission_rules[ri]
        sel = keep & (rules == ri)
        for c in r.require_columns:
            a = b.column(c) if c in b.schema.names else pa.nulls(b.num_rows)
            miss = sel & ~a.is_valid().to_numpy(zero_copy_only=False)
            p._drop(r.key, f"no_{c}", miss.sum())
            sel &= ~miss
        if r.drug_types:
            dt = _upper(p._col(b, "drug_type", "str"))
            bad = sel & ~dt.isin(list(r.drug_types)).fillna(False).to_numpy(bool)
            p._drop(r.key, "drug_type_not_listed", bad.sum())
            sel &= ~bad
        if r.exclude_routes or r.exclude_route_substrings:
            route = pd.Series(p._col(b, "route", "str"), dtype="string").str.strip().fillna("")
            bad = route.str.upper().isin(list(r.exclude_routes)).to_numpy(bool).copy()
            for sub in r.exclude_route_substrings:
                bad |= route.str.lower().str.contains(sub.lower(), regex=False).to_numpy(bool)
            bad &= sel
            p._drop(r.key, "excluded_route", bad.sum())
            sel &= ~bad
        if r.concept == "antibiotic":
            source[sel] = r.time_source
        elif r.concept == "culture":
            midnight = (t % US_PER_DAY) == 0
            date_only = {
                "never": np.zeros(len(t), bool),
                "always": np.ones(len(t), bool),
                "midnight": midnight,
            }[r.date_only]
            source[sel] = np.where(date_only[sel], "date only", "charted")
        keep &= ~(rules == ri) | sel
    if not keep.any():
        return None
    concept = np.array([p.m.admission_rules[i].concept for i in rules[keep]], object)
    tk = t[keep].astype(np.int64)
    has_t = time_ok[keep]
    src = source[keep]
    src[~has_t] = None
    return pd.DataFrame(
        {
            "patient_id": _np_i64(b.column("subject_id"))[keep],
            "hadm_id": p._col(b, "hadm_id")[keep],
            "t": np.where(has_t, tk, np.iinfo(np.int64).min),
            "concept": concept,
            "text": p.text_of[cls[keep]],
            "time_source": src,
        }
    )


def _fill_hadm(df: pd.DataFrame, adm: pd.DataFrame) -> int:
    """hadm_id of rows without one: the subject's admission whose [start, dischtime] holds
    the event, start = min(ED registration, admittime) (meds_stays._admissions); a date-only
    culture overlaps its day. The MIMIC-IV reader's rule (mimic4_admissions.assign_hadm), so
    the emergency-department cultures and antibiotics of both paths join their admission."""
    todo = (df["hadm_id"] == NULL_ID) & (df["t"] != np.iinfo(np.int64).min)
    if not todo.any() or not len(adm):
        return 0
    q = df.loc[todo, ["patient_id", "t", "time_source"]].reset_index()
    day = (q["time_source"] == "date only").to_numpy(bool)
    q["t1"] = q["t"].to_numpy(np.int64) + np.where(day, US_PER_DAY - 1, 0)
    q = q.sort_values("t1")
    a = adm.sort_values("start")
    m = pd.merge_asof(
        q,
        a[["patient_id", "hadm_id", "start", "dischtime"]],
        left_on="t1",
        right_on="start",
        by="patient_id",
        direction="backward",
    )
    ok = m["hadm_id"].notna() & (m["dischtime"].isna() | (m["t"] <= m["dischtime"]))
    df.loc[m.loc[ok, "index"].to_numpy(), "hadm_id"] = m.loc[ok, "hadm_id"].to_numpy(np.int64)
    return int(ok.sum())


def flush_admission_events(p) -> None:
    """Write the admission events buffered for one shard (hadm_id filled) to their sink."""
    if not p.adm_parts:
        return
    df = pd.concat(p.adm_parts, ignore_index=True)
    p.adm_parts.clear()
    c = p.adm_counts
    c["hadm_id_filled_from_admission_time"] += _fill_hadm(df, p.admissions)
    concept = df["concept"].to_numpy(object)
    t = df["t"].to_numpy(np.int64).copy()
    t[concept == "sepsis_diagnosis"] = np.iinfo(
        np.int64
    ).min  # the contract: diagnoses carry no time
    hadm = df["hadm_id"].to_numpy(np.int64)
    src = df["time_source"].to_numpy(object)
    p.adm_sink.write(
        pa.table(
            {
                "patient_id": pa.array(df["patient_id"].to_numpy(np.int64)),
                "hadm_id": pa.array(hadm, pa.int64(), mask=hadm == NULL_ID),
                "time": pa.array(t.astype("datetime64[us]"), TS),
                "concept": pa.array(concept, pa.string(), from_pandas=True),
                "text": pa.array(df["text"].to_numpy(object), pa.string(), from_pandas=True),
                "time_source": pa.array(src, pa.string(), from_pandas=True),
            },
            schema=dio.ADMISSION_EVENTS,
        )
    )
    for name in ("antibiotic", "culture", "sepsis_diagnosis"):
        sel = concept == name
        c[name] += int(sel.sum())
        c[f"{name}_without_hadm_id"] += int((sel & (hadm == NULL_ID)).sum())
        if name != "sepsis_diagnosis":
            ts = c.setdefault(f"{name}_time_source", {})
            for k, v in (
                pd.Series(src[sel], dtype=object).fillna("<no time>").value_counts().items()
            ):
                ts[str(k)] = ts.get(str(k), 0) + int(v)


def admission_counts() -> dict:
    c: dict = {"hadm_id_filled_from_admission_time": 0}
    for name in ("antibiotic", "culture", "sepsis_diagnosis"):
        c[name] = 0
        c[f"{name}_without_hadm_id"] = 0
        if name != "sepsis_diagnosis":
            c[f"{name}_time_source"] = {}
    return c


__all__ = [
    "resolve",
    "resolve_intervals",
    "admission_rows",
    "flush_admission_events",
    "admission_counts",
    "_str",
]
