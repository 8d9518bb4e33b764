"""PhysioNet/CinC Challenge 2019 normalised utility score (online prediction, every ICU hour).

Reproduces the logic of the challenge's `evaluate_sepsis_score.py`
(physionetchallenges/evaluation-2019), re-implemented here with numpy:

* Per stay, `labels` is the challenge's `SepsisLabel` vector, one entry per ICU hour (row),
  ALREADY SHIFTED 6 h EARLY: for a septic stay with true onset at row index ``t_onset``,
  ``labels[t] = 1`` for ``t >= t_onset - 6`` (clipped at row 0), else 0; a non-septic stay
  is all 0. Build it from an onset row with `challenge_labels`. The scorer recovers
  ``t_sepsis = argmax(labels) - dt_optimal = first labelled row + 6``.
* Per hour t (row index), with d = t - t_sepsis (septic stays only; utilities after
  d > dt_late are 0 whatever is predicted):
  - predicted positive, d <= dt_optimal: max(linear 0 at dt_early -> max_u_tp at dt_optimal, u_fp)
  - predicted positive, dt_optimal < d <= dt_late: linear max_u_tp -> 0 at dt_late
  - predicted negative, d <= dt_optimal: 0; dt_optimal < d <= dt_late: linear 0 -> min_u_fn
  - non-septic stay: u_fp for a positive prediction, u_tn for a negative one (every hour).
* Normalised = (U_observed - U_inaction) / (U_best - U_inaction), sums over all stays;
  inaction predicts 0 everywhere, the best predictor predicts 1 on rows
  [t_sepsis + dt_early, t_sepsis + dt_late] of septic stays. NaN when U_best == U_inaction
  (no septic stay in the cohort: the score is undefined).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UtilityParams:
    """The challenge's constants (hours relative to t_sepsis, and utilities)."""

    dt_early: float = -12
    dt_optimal: float = -6
    dt_late: float = 3
    max_u_tp: float = 1
    min_u_fn: float = -2
    u_fp: float = -0.05
    u_tn: float = 0

    def validate(self) -> None:
        """Raise ValueError when the time points are not ordered early < optimal < late."""
        if not self.dt_early < self.dt_optimal:
            raise ValueError("utility.dt_early: expected dt_early < dt_optimal")
        if not self.dt_optimal < self.dt_late:
            raise ValueError("utility.dt_optimal: expected dt_optimal < dt_late")


def challenge_labels(n_hours: int, onset_index: float | None, shift: int = 6) -> np.ndarray:
    """The challenge's shifted label vector for a stay of `n_hours` rows.

    `onset_index` is the row index of the true onset (None/NaN = not septic); rows from
    ``onset_index - shift`` (clipped at 0) onward are 1. An onset beyond the last row gives
    an all-zero vector (the stay ended before onset; not septic within the record).
    """
    lab = np.zeros(int(n_hours), dtype=np.int8)
    if onset_index is None or not np.isfinite(onset_index):
        return lab
    start = max(0, int(np.floor(onset_index)) - shift)
    if int(np.floor(onset_index)) < n_hours:
        lab[start:] = 1
    return lab


def _check_binary(a: np.ndarray, what: str, stay: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{what} of stay {stay}: expected a 1-D vector, got shape {a.shape}")
    if a.size and not np.isin(a, (0, 1)).all():
        bad = np.flatnonzero(~np.isin(a, (0, 1)))[0]
        raise ValueError(f"{what} of stay {stay}: row {bad} = {a[bad]!r}, expected 0 or 1")
    return a.astype(bool)


def prediction_utility(
    labels: np.ndarray, predictions: np.ndarray, params: UtilityParams | None = None
) -> float:
    """Total utility of one stay's binary hourly predictions (challenge `compute_prediction_utility`)."""
    p = params or UtilityParams()
    p.validate()
    lab = _check_binary(labels, "labels", 0)
    pred = _check_binary(predictions, "predictions", 0)
    if lab.shape != pred.shape:
        raise ValueError(f"labels ({lab.shape}) and predictions ({pred.shape}) differ in length")
    return _utility(lab, pred, p)


def _hour_utilities(lab: np.ndarray, p: UtilityParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-hour utility of an alarm (u_pos) and of no alarm (u_neg) for one stay's labels."""
    n = len(lab)
    if not lab.any():
        return np.full(n, float(p.u_fp)), np.full(n, float(p.u_tn))
    t_sepsis = float(np.argmax(lab)) - p.dt_optimal
    d = np.arange(n, dtype=np.float64) - t_sepsis
    m1 = p.max_u_tp / (p.dt_optimal - p.dt_early)
    b1 = -m1 * p.dt_early
    m2 = -p.max_u_tp / (p.dt_late - p.dt_optimal)
    b2 = -m2 * p.dt_late
    m3 = p.min_u_fn / (p.dt_late - p.dt_optimal)
    b3 = -m3 * p.dt_optimal
    early = d <= p.dt_optimal
    late = (d > p.dt_optimal) & (d <= p.dt_late)
    u_pos = np.where(early, np.maximum(m1 * d + b1, p.u_fp), np.where(late, m2 * d + b2, 0.0))
    u_neg = np.where(late, m3 * d + b3, 0.0)
    return u_pos, u_neg


def _utility(lab: np.ndarray, pred: np.ndarray, p: UtilityParams) -> float:
    u_pos, u_neg = _hour_utilities(lab, p)
    return float(np.where(pred, u_pos, u_neg).sum())


def best_predictions(labels: np.ndarray, params: UtilityParams | None = None) -> np.ndarray:
    """The optimal predictor of the challenge: 1 on [t_sepsis + dt_early, t_sepsis + dt_late]."""
    p = params or UtilityParams()
    lab = np.asarray(labels).astype(bool)
    out = np.zeros(len(lab), dtype=np.int8)
    if lab.any():
        t_sepsis = int(np.argmax(lab)) - p.dt_optimal
        lo = int(max(0, t_sepsis + p.dt_early))
        hi = int(min(t_sepsis + p.dt_late + 1, len(lab)))
        out[lo:hi] = 1
    return out


def utility_score(
    labels_per_stay: Sequence[np.ndarray],
    predictions_per_stay: Sequence[np.ndarray],
    params: UtilityParams | None = None,
    threshold: float | None = None,
) -> float:
    """Normalised challenge utility over a cohort (1 = optimal predictor, 0 = never alarm).

    `labels_per_stay[k]`: the challenge's shifted 0/1 labels of stay k, one per ICU hour
    (see the module docstring and `challenge_labels`). `predictions_per_stay[k]`: binary
    0/1 alarms for the same hours; with `threshold`, scores are binarised as score >= threshold.
    """
    p = params or UtilityParams()
    p.validate()
    if len(labels_per_stay) != len(predictions_per_stay):
        raise ValueError(
            f"{len(labels_per_stay)} label vectors but {len(predictions_per_stay)} prediction vectors"
        )
    observed = best = inaction = 0.0
    for k, (lab_k, pred_k) in enumerate(zip(labels_per_stay, predictions_per_stay, strict=True)):
        lab = _check_binary(lab_k, "labels", k)
        pred_arr = np.asarray(pred_k, dtype=np.float64)
        if threshold is not None:
            if np.isnan(pred_arr).any():
                raise ValueError(
                    f"predictions of stay {k}: {int(np.isnan(pred_arr).sum())} NaN scores"
                )
            pred_arr = (pred_arr >= threshold).astype(np.int8)
        pred = _check_binary(pred_arr, "predictions", k)
        if lab.shape != pred.shape:
            raise ValueError(f"stay {k}: {len(lab)} labels but {len(pred)} predictions")
        observed += _utility(lab, pred, p)
        best += _utility(lab, best_predictions(lab, p).astype(bool), p)
        inaction += _utility(lab, np.zeros_like(lab), p)
    if best == inaction:
        log.warning("utility_score: no septic stay, the normalised utility is undefined (NaN)")
        return float("nan")
    return (observed - inaction) / (best - inaction)


def utility_curve(
    labels_per_stay: Sequence[np.ndarray],
    scores_per_stay: Sequence[np.ndarray],
    thresholds: np.ndarray,
    params: UtilityParams | None = None,
) -> np.ndarray:
    """Normalised utility for each alarm threshold (alarm = score >= threshold), e.g. to pick
    the threshold on the validation split. Per-hour utilities are computed once, so a
    threshold costs one pass over the concatenated hours.
    """
    p = params or UtilityParams()
    p.validate()
    if len(labels_per_stay) != len(scores_per_stay):
        raise ValueError(
            f"{len(labels_per_stay)} label vectors but {len(scores_per_stay)} score vectors"
        )
    u_pos, u_neg, sc = [], [], []
    best = inaction = 0.0
    for k, (lab_k, s_k) in enumerate(zip(labels_per_stay, scores_per_stay, strict=True)):
        lab = _check_binary(lab_k, "labels", k)
        s_arr = np.asarray(s_k, dtype=np.float64)
        if s_arr.shape != lab.shape:
            raise ValueError(f"stay {k}: {len(lab)} labels but {len(s_arr)} scores")
        if np.isnan(s_arr).any():
            raise ValueError(f"scores of stay {k}: {int(np.isnan(s_arr).sum())} NaN scores")
        up, un = _hour_utilities(lab, p)
        best += float(np.where(best_predictions(lab, p).astype(bool), up, un).sum())
        inaction += float(un.sum())
        u_pos.append(up)
        u_neg.append(un)
        sc.append(s_arr)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if best == inaction:
        log.warning("utility_curve: no septic stay, the normalised utility is undefined (NaN)")
        return np.full(len(thresholds), np.nan)
    up, un, s_all = np.concatenate(u_pos), np.concatenate(u_neg), np.concatenate(sc)
    # sort by score once: alarms at threshold t are a suffix of the ascending order
    order = np.argsort(s_all, kind="mergesort")
    gain = (up - un)[order]
    suffix = np.r_[np.cumsum(gain[::-1])[::-1], 0.0]  # suffix[i] = sum of gain[i:]
    first = np.searchsorted(s_all[order], thresholds, side="left")
    observed = inaction + suffix[first]
    return (observed - inaction) / (best - inaction)
