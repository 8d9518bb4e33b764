"""Online (every-hour) metrics: utility threshold, hourly AUROC/AUPRC, per-stay alarm metrics.

Input: one row per scored hour with columns stay_id, hour, label (the challenge's shifted
hourly label), score, onset (the stay's onset hour, NaN for a non-septic stay). Rows of a
stay are in hour order. Definitions (docs in README-snippet.md):

* utility: `sepsis.evaluation.utility`, alarm = score >= threshold, the threshold chosen
  on the VALIDATION split's hours (`choose_threshold`) and then applied to test;
* hourly AUROC / AUPRC over every scored hour against the shifted label;
* sensitivity at a false-alarm rate f: stay score = max hourly score (a septic stay: hours up
  to its onset); the threshold lets at most a fraction f of non-septic stays alarm (a ROC
  point on the test stays, so it is read off test like AUROC, not a deployable threshold);
* hours of warning: at the utility threshold, onset - first alarm hour at or before onset,
  over septic stays with such an alarm (the others are counted as missed);
* false alarms per 100 patient-days: alarm episodes (an hour alarming when the previous
  one did not) starting on a label-0 hour, per 2400 scored hours.

Intervals: percentile bootstrap over stays, stratified by septic / non-septic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sepsis.evaluation.metrics import _ap_from_groups, _auc_from_groups, _Ranked, auprc, auroc
from sepsis.evaluation.utility import (
    UtilityParams,
    _hour_utilities,
    best_predictions,
    utility_curve,
    utility_score,
)

_MAX_CELLS = 4_000_000


def by_stay(df: pd.DataFrame, column: str) -> list[np.ndarray]:
    """`column` split into one array per stay (rows grouped by stay_id in order of appearance)."""
    sid = df["stay_id"].to_numpy()
    cut = np.flatnonzero(sid[1:] != sid[:-1]) + 1
    return np.split(df[column].to_numpy(), cut)


def candidate_thresholds(scores: np.ndarray, n: int) -> np.ndarray:
    """Up to `n` distinct score quantiles plus +inf (never alarm)."""
    q = np.unique(np.quantile(np.asarray(scores, float), np.linspace(0, 1, max(2, n))))
    return np.r_[q, np.inf]


def choose_threshold(
    val: pd.DataFrame, n_thresholds: int = 200, params: UtilityParams | None = None
) -> tuple[float, float, pd.DataFrame]:
    """(threshold, its utility, curve) maximising the normalised utility on `val` only.

    Ties go to the highest threshold (fewest alarms). `curve` has threshold and utility.
    """
    thr = candidate_thresholds(val["score"].to_numpy(float), n_thresholds)
    u = utility_curve(by_stay(val, "label"), by_stay(val, "score"), thr, params)
    if np.all(np.isnan(u)):
        return float("inf"), float("nan"), pd.DataFrame({"threshold": thr, "utility": u})
    best = np.flatnonzero(u == np.nanmax(u))[-1]
    return float(thr[best]), float(u[best]), pd.DataFrame({"threshold": thr, "utility": u})


class _Stays:
    """Per-stay sums the point estimate and every bootstrap resample share."""

    def __init__(self, df: pd.DataFrame, threshold: float, p: UtilityParams):
        labels, scores = by_stay(df, "label"), by_stay(df, "score")
        hours, onset = by_stay(df, "hour"), by_stay(df, "onset")
        n = len(labels)
        self.septic = np.array([np.isfinite(o[0]) for o in onset])
        self.observed, self.best, self.inaction = np.zeros(n), np.zeros(n), np.zeros(n)
        self.hours = np.array([len(x) for x in labels], float)
        self.false_alarms = np.zeros(n)
        self.max_score = np.full(n, -np.inf)
        self.warning = np.full(n, np.nan)
        for k in range(n):
            lab = labels[k].astype(bool)
            alarm = scores[k] >= threshold
            up, un = _hour_utilities(lab, p)
            self.observed[k] = np.where(alarm, up, un).sum()
            self.best[k] = np.where(best_predictions(lab, p).astype(bool), up, un).sum()
            self.inaction[k] = un.sum()
            rising = alarm & ~np.r_[False, alarm[:-1]]
            self.false_alarms[k] = np.sum(rising & ~lab)
            if self.septic[k]:
                before = hours[k] <= onset[k][0]
                if before.any():
                    self.max_score[k] = scores[k][before].max()
                first = np.flatnonzero(alarm & before)
                if len(first):
                    self.warning[k] = onset[k][0] - hours[k][first[0]]
            else:
                self.max_score[k] = scores[k].max()

    def utility(self, w: np.ndarray) -> np.ndarray:
        den = w @ (self.best - self.inaction)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den != 0, (w @ (self.observed - self.inaction)) / den, np.nan)

    def fa_per_100_days(self, w: np.ndarray) -> np.ndarray:
        return 2400.0 * (w @ self.false_alarms) / np.maximum(w @ self.hours, 1e-300)

    def sensitivity(self, w: np.ndarray, far: float) -> float:
        neg = np.repeat(self.max_score[~self.septic], w[~self.septic].astype(int))
        pos = np.repeat(self.max_score[self.septic], w[self.septic].astype(int))
        if not len(neg) or not len(pos):
            return float("nan")
        neg = np.sort(neg)[::-1]
        k = int(np.floor(far * len(neg)))
        thr = np.nextafter(neg[k], np.inf) if k < len(neg) else -np.inf
        return float(np.mean(pos >= thr))

    def warning_quantiles(self, w: np.ndarray) -> tuple[float, float, float]:
        ok = self.septic & np.isfinite(self.warning)
        x = np.repeat(self.warning[ok], w[ok].astype(int))
        if not len(x):
            return float("nan"), float("nan"), float("nan")
        q = np.quantile(x, [0.25, 0.5, 0.75])
        return float(q[1]), float(q[0]), float(q[2])


def _resample(septic: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """(b, n_stays) multiplicities, cases and non-cases resampled separately."""
    n = len(septic)
    w = np.zeros((b, n))
    for flag in (True, False):
        idx = np.flatnonzero(septic == flag)
        if len(idx):
            draw = idx[rng.integers(0, len(idx), size=(b, len(idx)))]
            for j in range(b):
                w[j] += np.bincount(draw[j], minlength=n)
    return w


def online_metrics(
    df: pd.DataFrame,
    threshold: float,
    false_alarm_rate: float = 0.05,
    n_resamples: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    params: UtilityParams | None = None,
) -> dict[str, float]:
    """Point estimates and bootstrap intervals (<metric>, <metric>_low, <metric>_high)."""
    p = params or UtilityParams()
    df = df.sort_values(["stay_id", "hour"], kind="stable").reset_index(drop=True)
    st = _Stays(df, threshold, p)
    n = len(st.septic)
    ones = np.ones(n)
    y, s = df["label"].to_numpy(np.int64), df["score"].to_numpy(float)
    point = {
        # the challenge's own summation, so exported files re-score to exactly this value
        "utility": utility_score(
            by_stay(df, "label"),
            [(x >= threshold).astype(np.int8) for x in by_stay(df, "score")],
            p,
        ),
        "auroc": auroc(y, s),
        "auprc": auprc(y, s),
        "sensitivity_at_far": st.sensitivity(ones, false_alarm_rate),
        "false_alarms_per_100_days": float(st.fa_per_100_days(ones[None, :])[0]),
    }
    med, q1, q3 = st.warning_quantiles(ones)
    out: dict[str, float] = {
        "n_stays": n,
        "n_septic": int(st.septic.sum()),
        "n_hours": int(len(df)),
        "prevalence_hours": float(y.mean()) if len(y) else float("nan"),
        "threshold": threshold,
        "false_alarm_rate": false_alarm_rate,
        "warning_hours_median": med,
        "warning_hours_q1": q1,
        "warning_hours_q3": q3,
        "n_warned": int(np.isfinite(st.warning).sum()),
    }
    vals: dict[str, list[np.ndarray]] = {k: [] for k in point}
    if n_resamples > 0 and n:
        rng = np.random.default_rng(seed)
        ranked = _Ranked(y, s)
        stay_of_hour = np.repeat(np.arange(n), st.hours.astype(int))
        batch = max(1, min(n_resamples, _MAX_CELLS // max(len(y), 1)))
        done = 0
        while done < n_resamples:
            b = min(batch, n_resamples - done)
            w = _resample(st.septic, b, rng)
            vals["utility"].append(st.utility(w))
            vals["false_alarms_per_100_days"].append(st.fa_per_100_days(w))
            vals["sensitivity_at_far"].append(
                np.array([st.sensitivity(w[j], false_alarm_rate) for j in range(b)])
            )
            pos, neg = ranked.group_counts(w[:, stay_of_hour])
            vals["auroc"].append(_auc_from_groups(pos, neg))
            vals["auprc"].append(_ap_from_groups(pos, neg))
            done += b
    for k, v in point.items():
        out[k] = v
        allv = np.concatenate(vals[k]) if vals[k] else np.zeros(0)
        ok = allv[np.isfinite(allv)]
        lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2]) if len(ok) else (np.nan, np.nan)
        out[f"{k}_low"], out[f"{k}_high"] = float(lo), float(hi)
    return out
