"""The Sepsis-3 onset rule (described in `data_prep.sepsis3`) on hourly SOFA and suspected
infection, and the labels and onsets (with their audit) of one set of stays in memory."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_prep.concepts.sofa import COMPONENTS, hourly_sofa_inputs, sofa_rows
from data_prep.concepts.sofa_evidence import sofa_inputs
from data_prep.sepsis3_params import LabelParams

LABEL_COLUMNS = (
    ["stay_id", "hour", "sofa"] + [f"sofa_{c}" for c in COMPONENTS] + ["si_window", "sepsis"]
)
ONSET_COLUMNS = [
    "stay_id",
    "si_time",
    "si_hour",
    "antibiotic",
    "antibiotic_time",
    "antibiotic_time_source",
    "culture_time",
    "culture_time_source",
    "culture_specimen",
    "onset_hour",
    "onset_time",
    "sofa_baseline",
    "sofa_at_onset",
    "components_rose",
    "sofa_baseline_hour",
    "components_baseline_to_onset",
    "sofa_inputs_at_onset",
]


def onset_from_sofa(sofa: pd.DataFrame, si: pd.DataFrame, params: LabelParams) -> pd.DataFrame:
    """Onset per stay with SI.

    ``sofa``: hourly SOFA from `hourly_sofa(..., pre_hours=params.pre_hours)` (hours
    -pre .. n-1 contiguous per stay). ``si``: stay_id, si_hour (hours since intime).
    Returns one row per row of ``si``: stay_id, window_first, window_last, onset_hour
    (NaN if none), sofa_baseline, sofa_at_onset, components_rose, criterion_met_before_icu.
    """
    pre = params.pre_hours
    s = sofa.sort_values(["stay_id", "hour"]).reset_index(drop=True)
    sid = s["stay_id"].to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if len(sid) else np.array([], int)
    ustay = sid[starts]
    ends = np.r_[starts[1:], len(sid)]
    n_hours = (ends - starts) - pre
    si = si.reset_index(drop=True)
    m = len(si)
    pos = np.searchsorted(ustay, si["stay_id"].to_numpy(np.int64))
    pos = np.minimum(pos, max(len(ustay) - 1, 0))
    found = (ustay[pos] == si["stay_id"].to_numpy(np.int64)) if len(ustay) else np.zeros(m, bool)
    si_h = si["si_hour"].to_numpy(float)
    first = np.floor(si_h - params.si_window_before_hours).astype(np.int64)
    last = np.floor(si_h + params.si_window_after_hours).astype(np.int64)
    W = int(max((last - first).max() + 1, 1)) if m else 1
    j = np.arange(W)
    k = first[:, None] + j[None, :]  # hour of each window cell
    nh = n_hours[pos][:, None]
    valid = found[:, None] & (k <= last[:, None]) & (k >= -pre) & (k < nh)
    row = np.where(valid, starts[pos][:, None] + k + pre, 0)
    val = np.where(valid, s["sofa"].to_numpy(np.int64)[row] if len(s) else 0, 0)
    BIG = np.int64(1) << 40
    enc = np.where(valid, val * W + j, BIG)  # min -> lowest SOFA, earliest hour
    base_src = enc
    if params.baseline_pre_icu == "observed_only" and "observed" in s.columns:
        # an hour without any SOFA input in its window is no evidence of the baseline
        seen = s["observed"].to_numpy(bool)[row] if len(s) else np.zeros_like(valid)
        base_src = np.where(seen, enc, BIG)
    if params.baseline == "running_min":
        cum = np.minimum.accumulate(base_src, axis=1)
        base_enc = np.concatenate([np.full((m, 1), BIG), cum[:, :-1]], axis=1)
    else:
        base_enc = np.repeat(base_src[:, :1], W, axis=1)
        base_enc[:, 0] = BIG
    has_base = base_enc < BIG
    base_val = np.where(has_base, base_enc // W, 0)
    base_j = np.where(has_base, base_enc % W, 0)
    meets = valid & has_base & (val - base_val >= params.sofa_threshold)
    icu = meets & (k >= 0)
    any_on = icu.any(axis=1)
    jon = icu.argmax(axis=1)
    r = np.arange(m)
    out = pd.DataFrame(
        {
            "stay_id": si["stay_id"].to_numpy(np.int64),
            "window_first": first,
            "window_last": last,
            "onset_hour": np.where(any_on, k[r, jon], np.nan).astype(float),
            "sofa_baseline": pd.array(np.where(any_on, base_val[r, jon], 0), dtype="Int8"),
            "sofa_at_onset": pd.array(np.where(any_on, val[r, jon], 0), dtype="Int8"),
            "criterion_met_before_icu": (meets & (k < 0)).any(axis=1),
        }
    )
    out.loc[~any_on, ["sofa_baseline", "sofa_at_onset"]] = pd.NA
    rose = np.full(m, None, object)
    detail = np.full(m, None, object)
    base_hour = np.full(m, np.nan)
    if any_on.any():
        on_row = row[r, jon][any_on]
        b_row = row[r, base_j[r, jon]][any_on]
        at_on = np.stack([s[f"sofa_{c}"].to_numpy()[on_row] for c in COMPONENTS], axis=1)
        at_base = np.stack([s[f"sofa_{c}"].to_numpy()[b_row] for c in COMPONENTS], axis=1)
        names = np.array(COMPONENTS)
        rose[any_on] = [",".join(names[u]) for u in at_on > at_base]
        # every component's score at the baseline hour and at the onset hour, e.g.
        # "resp 0->2, coag 1->1, ..." (the audit of which organ systems formed the onset)
        detail[any_on] = [
            ", ".join(f"{n} {b}->{o}" for n, b, o in zip(names, bb, oo, strict=True))
            for bb, oo in zip(at_base, at_on, strict=True)
        ]
        base_hour[any_on] = k[r, base_j[r, jon]][any_on]
    out["components_rose"] = pd.array(rose, dtype="string")
    out["sofa_baseline_hour"] = base_hour
    out["components_baseline_to_onset"] = pd.array(detail, dtype="string")
    return out


def label_stays(
    stays: pd.DataFrame,
    si: pd.DataFrame,
    events: pd.DataFrame,
    params: LabelParams,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Labels and onsets for a set of stays (in memory); `si` from `suspected_infection`,
    `events` (io.EVENTS) of these stays.

    Returns (labels_hourly rows for hours >= 0, onsets rows for every stay, counts).
    """
    events = sofa_rows(events)  # once for the score and the audit (categorical columns)
    sofa, counts, scored = hourly_sofa_inputs(
        stays, events, params.sofa, pre_hours=params.pre_hours
    )
    st = stays[["stay_id", "intime"]].copy()
    st["intime"] = pd.to_datetime(st["intime"]).astype("datetime64[us]")
    si = si.merge(st, on="stay_id", how="inner")
    si["si_hour"] = (si["si_time"] - si["intime"]) / pd.Timedelta(hours=1)
    on = onset_from_sofa(sofa, si[["stay_id", "si_hour"]], params)
    counts["criterion_met_before_icu"] = int(on["criterion_met_before_icu"].sum())
    lab_h = sofa[sofa["hour"] >= 0].reset_index(drop=True)
    w = lab_h[["stay_id"]].merge(
        on[["stay_id", "window_first", "window_last", "onset_hour"]], on="stay_id", how="left"
    )
    h = lab_h["hour"].to_numpy()
    lab_h["si_window"] = (h >= w["window_first"].to_numpy(float)) & (
        h <= w["window_last"].to_numpy(float)
    )
    lab_h["sepsis"] = h >= w["onset_hour"].to_numpy(float)  # NaN compares False
    onsets = stays[["stay_id", "intime"]].merge(si.drop(columns="intime"), on="stay_id", how="left")
    onsets = onsets.merge(
        on.drop(columns=["window_first", "window_last", "criterion_met_before_icu"]),
        on="stay_id",
        how="left",
    )
    onsets["onset_time"] = pd.to_datetime(onsets["intime"]).astype(
        "datetime64[us]"
    ) + pd.to_timedelta(onsets["onset_hour"], unit="h")
    # the audit: which measurements formed each component that rose at the onset
    has = onsets["onset_hour"].notna()
    cells = pd.DataFrame(
        {
            "stay_id": onsets.loc[has, "stay_id"],
            "hour": onsets.loc[has, "onset_hour"].astype(int),
            "components": onsets.loc[has, "components_rose"],
        }
    )
    onsets["sofa_inputs_at_onset"] = pd.Series(pd.NA, index=onsets.index, dtype="string")
    onsets.loc[has, "sofa_inputs_at_onset"] = sofa_inputs(
        stays, events, params.sofa, cells, pre_hours=params.pre_hours, scored=scored
    )
    return lab_h[LABEL_COLUMNS], _onset_dtypes(onsets[ONSET_COLUMNS]), counts


def _onset_dtypes(o: pd.DataFrame) -> pd.DataFrame:
    o = o.copy()
    o["stay_id"] = o["stay_id"].astype(np.int64)
    for c in ("si_time", "antibiotic_time", "culture_time", "onset_time"):
        o[c] = pd.to_datetime(o[c]).astype("datetime64[us]")
    for c in ("si_hour", "onset_hour", "sofa_baseline_hour"):
        o[c] = o[c].astype(float)
    for c in (
        "antibiotic",
        "antibiotic_time_source",
        "culture_time_source",
        "culture_specimen",
        "components_rose",
        "components_baseline_to_onset",
        "sofa_inputs_at_onset",
    ):
        o[c] = o[c].astype("string")
    for c in ("sofa_baseline", "sofa_at_onset"):
        o[c] = o[c].astype("Int8")
    return o
