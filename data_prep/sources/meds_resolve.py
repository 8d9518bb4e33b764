"""The MEDS reader's buffered parts: vasopressor infusions and admission events.

* infusions (per shard): each START row (rate, unit, order id) is paired with the END row
  of the same subject, drug and order id (the k-th start of an order with its k-th end;
  without an order id column, the first end at or after the start); END rows whose status
  is excluded (MetaVision "Rewritten") drop their pair. The rate is converted to
  mcg/kg/min with the weight charted at the start (the mapping's infusion weight code),
  else the stay's first charted weight, else its first infusion weight.
* admission events: antibiotics (route / drug type / name rules of the mapping, the
  antibiotics.txt name match applied per code), cultures (time source "charted", or "date
  only" for a time at 00:00 when the mapping says ``date_only: midnight``) and sepsis
  diagnosis codes (time null, as the contract says); a null hadm_id is taken from the
  subject's hospital admission whose [admittime, dischtime] holds the event.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_prep import io as dio
from data_prep.sources.meds_events import NULL_ID, TS, _np_i64, _str

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


# --------------------------------------------------------------------- admission events
def _upper(a: np.ndarray) -> pd.Series:
    return pd.Series(a, dtype="string").str.strip().str.upper()


def admission_rows(p, b: pa.RecordBatch, cls: np.ndarray) -> pd.DataFrame | None:
    rules = p.rule_of[cls]
    keep = ~p.drop_of[cls]
    for k in np.unique(cls[~keep]):
        c = p.codes.classes[k]
        p._drop(c.key, c.drop, int((cls == k).sum()))
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
    """hadm_id of rows without one: the subject's admission with admittime <= t <= dischtime."""
    todo = (df["hadm_id"] == NULL_ID) & (df["t"] != np.iinfo(np.int64).min)
    if not todo.any() or not len(adm):
        return 0
    q = df.loc[todo, ["patient_id", "t"]].reset_index().sort_values("t")
    a = adm.dropna(subset=["admittime"]).astype({"admittime": np.int64}).sort_values("admittime")
    m = pd.merge_asof(
        q,
        a[["patient_id", "hadm_id", "admittime", "dischtime"]],
        left_on="t",
        right_on="admittime",
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


__all__ = ["resolve", "admission_rows", "flush_admission_events", "admission_counts", "_str"]
