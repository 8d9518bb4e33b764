"""DTW-KNN scores: the class-1 probability of one variable's k nearest neighbours, and the
learned combination of the per-variable probabilities (`models.dtw_knn.classifier`, which
re-exports these)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold


def _auprc(y: np.ndarray, p: np.ndarray) -> float:
    return float(average_precision_score(y, p)) if y.min() != y.max() else float("nan")


def fit_combination(P: np.ndarray, y: np.ndarray, C: float = 1.0) -> np.ndarray:
    """Weights (summing to 1, non-negative) of the per-variable probabilities `P` (n, V).

    A logistic regression ``y ~ b + P @ w`` with ``w >= 0`` and the penalty
    ``||w||^2 / (2 C)`` (scikit-learn's convention; the intercept is not penalised), fitted
    by L-BFGS-B; returns ``w / sum(w)`` (equal weights when every w is 0). Non-negative
    weights keep the score a weighted mean of probabilities, rank-equal to the regression.
    """
    P = np.asarray(P, dtype=np.float64)
    n, v = P.shape
    sgn = 2.0 * np.asarray(y, dtype=np.float64) - 1.0

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:v], theta[v]
        m = -sgn * (P @ w + b)
        g = -sgn * expit(m)  # d/dz of log(1 + exp(-s z))
        value = C * float(np.logaddexp(0.0, m).sum()) + 0.5 * float(w @ w)
        return value, np.concatenate([C * (P.T @ g) + w, [C * g.sum()]])

    x0 = np.concatenate([np.full(v, 1.0), [0.0]])
    res = minimize(loss, x0, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * v + [(None, None)])
    w = np.clip(res.x[:v], 0.0, None)
    return w / w.sum() if w.sum() > 0 else np.full(v, 1.0 / v)


def combination_oof_auprc(P: np.ndarray, y: np.ndarray, C: float, seed: int = 0) -> float:
    """Validation AUPRC of the learned combination, each stay scored by weights fitted
    without it (stratified 5-fold, fewer folds when a class has fewer stays)."""
    n_min = int(min(np.sum(y == 0), np.sum(y == 1)))
    folds = min(5, n_min)
    if folds < 2:
        return float("nan")
    out = np.empty(len(y))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(P, y):
        out[te] = P[te] @ fit_combination(P[tr], y[tr], C)
    return _auprc(y, out)


def neighbour_proba(
    dist: np.ndarray, idx: np.ndarray, y_ref: np.ndarray, k: int, weights: str
) -> np.ndarray:
    """Class-1 probability from the first k neighbours (scikit-learn's weighting rules).

    ``weights="distance"`` weighs by 1/d; a query with zero-distance neighbours gives
    weight 1 to those and 0 to the rest, as `sklearn.neighbors` does.
    """
    lab = y_ref[idx[:, :k]].astype(np.float64)
    if weights == "uniform":
        return lab.mean(axis=1)
    d = dist[:, :k].astype(np.float64)
    with np.errstate(divide="ignore"):
        w = 1.0 / d
    zero = np.isinf(w)
    rows = zero.any(axis=1)
    w[rows] = zero[rows]
    return (w * lab).sum(axis=1) / w.sum(axis=1)
