"""The cohort's sampling and statistics: seeded case-control matching, patient-level
splits, the observation windows and the training-split normalisation (the rules are in
`data_prep.cohort`, which re-exports these functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def match_controls(
    cases: pd.DataFrame, controls: pd.DataFrame, ratio: int, seed: int
) -> tuple[pd.DataFrame, dict]:
    """Seeded matching; `cases` has stay_id, onset; `controls` stay_id, los_hours.

    Returns the matched controls (stay_id, onset_hour, matched_case) and counts.
    """
    rng = np.random.default_rng(seed)
    ctrl_ids = controls["stay_id"].to_numpy(np.int64)
    ctrl_los = controls["los_hours"].to_numpy(float)
    order = np.argsort(ctrl_ids, kind="stable")  # deterministic input order before the shuffle
    perm = order[rng.permutation(len(order))]
    ctrl_ids, ctrl_los = ctrl_ids[perm], ctrl_los[perm]
    case_ids = cases["stay_id"].to_numpy(np.int64)
    case_on = cases["onset"].to_numpy(float)
    tiebreak = rng.permutation(len(case_ids))
    serve = np.lexsort((tiebreak, -case_on))  # latest onset first, random among ties
    available = np.ones(len(ctrl_ids), bool)
    out_ctrl, out_case, out_on = [], [], []
    short = 0
    missing_total = 0
    for i in serve:
        o = case_on[i]
        idx = np.flatnonzero(available & (ctrl_los >= o))[:ratio]
        available[idx] = False
        if len(idx) < ratio:
            short += 1
            missing_total += ratio - len(idx)
        out_ctrl.append(ctrl_ids[idx])
        out_case.append(np.full(len(idx), case_ids[i], np.int64))
        out_on.append(np.full(len(idx), o))
    matched = pd.DataFrame(
        {
            "stay_id": np.concatenate(out_ctrl) if out_ctrl else np.zeros(0, np.int64),
            "onset_hour": np.concatenate(out_on) if out_on else np.zeros(0),
            "matched_case": np.concatenate(out_case) if out_case else np.zeros(0, np.int64),
        }
    )
    info = {
        "ratio": int(ratio),
        "cases_short": int(short),
        "controls_missing": int(missing_total),
        "controls_unused": int(available.sum()),
    }
    return matched, info


def patient_splits(
    patients: pd.DataFrame, fractions: tuple[float, float, float], seed: int
) -> pd.Series:
    """Split patients (columns patient_id, has_case) into train/val/test, stratified by has_case.

    Returns a Series patient_id -> split. Within each stratum the seeded shuffle is cut at
    the rounded cumulative fractions.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for flag in (True, False):
        pids = np.sort(patients.loc[patients["has_case"] == flag, "patient_id"].to_numpy(np.int64))
        pids = pids[rng.permutation(len(pids))]
        n = len(pids)
        c1 = int(round(fractions[0] * n))
        c2 = int(round((fractions[0] + fractions[1]) * n))
        for p in pids[:c1]:
            out[p] = "train"
        for p in pids[c1:c2]:
            out[p] = "val"
        for p in pids[c2:]:
            out[p] = "test"
    return pd.Series(out, name="split")


def window_mask(
    obs: pd.DataFrame, cohort: pd.DataFrame, window_hours: float, horizon: float = 0
) -> np.ndarray:
    """Boolean mask over `obs` rows inside each cohort stay's window [max(0, o - W), o - h]."""
    on = cohort.set_index("stay_id")["onset_hour"]
    o = obs["stay_id"].map(on).to_numpy(float)  # NaN for stays outside the cohort
    start = np.maximum(0.0, o - window_hours)
    hour = obs["hour"].to_numpy(float)
    return (hour >= start) & (hour <= o - horizon)


def normalisation_stats(
    obs_win: pd.DataFrame, variables: tuple[str, ...], train_stays: np.ndarray, seed: int
) -> pd.DataFrame:
    """mean/std/n per variable over `obs_win` rows of `train_stays` (std ddof=0; 1.0 when 0 or n < 2)."""
    tr = obs_win[obs_win["stay_id"].isin(train_stays)]
    g = tr.groupby(tr["variable"].astype(str))["value"].agg(["mean", "std", "count"])
    g["std"] = tr.groupby(tr["variable"].astype(str))["value"].std(ddof=0)
    g = g.reindex(list(variables))
    n = g["count"].fillna(0).astype(np.int64)
    mean = g["mean"].fillna(0.0)
    std = g["std"].where(
        (n >= 2) & (g["std"] > 0), 1.0
    )  # a constant or unseen variable: no scaling
    return pd.DataFrame(
        {
            "seed": np.int32(seed),
            "variable": list(variables),
            "mean": mean.to_numpy(float),
            "std": std.to_numpy(float),
            "n": n.to_numpy(),
        }
    )
