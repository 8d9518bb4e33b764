"""Simple baselines beside MGP-TCN and DTW-KNN: summary-feature LR / gradient boosting, SOFA increase.

* `summary_features(GridView)` -> (n, 6 * V): per variable, in blocks of V columns:
  last, mean, min, max, slope, count (see the function for exact definitions).
* `LogisticRegressionBaseline` / `GradientBoostingBaseline`: scikit-learn models on those
  features, class-balanced, following `models.base.SepsisLearner` (view = "grid").
  `save` writes `model.json` (parameters) and `model.npz` (the fitted arrays, see
  `models.sklearn_io`); nothing is pickled, so loading someone else's run cannot run code.
* `sofa_increase_scores(labels_hourly, stay_ids, prediction_hours)`: the clinical score
  SOFA(now) - min SOFA over the preceding window, and `SofaIncreaseBaseline`, which maps it
  to a probability-like score without training.
"""

from __future__ import annotations

import json
import logging
from numbers import Integral, Real
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import Interval

from data_prep.views import GridView
from models.base import (
    ModelFormatError,
    SepsisLearner,
    load_arrays,
    read_model_json,
    refuse_pickle_folder,
)
from models.sklearn_io import estimator_state, restore_estimator

log = logging.getLogger(__name__)

_FORMAT = "summary_baseline/1"
FEATURE_STATS = ("last", "mean", "min", "max", "slope", "count")
_FEATURE_BLOCK_CELLS = 2_000_000


def summary_feature_names(variables: tuple[str, ...]) -> list[str]:
    """Column names of `summary_features`, e.g. "heart_rate__slope"."""
    return [f"{v}__{stat}" for stat in FEATURE_STATS for v in variables]


def observation_counts_from_grid(view: GridView) -> np.ndarray:
    """(n, V) proxy for how often each variable was measured, from the imputed grid alone.

    The grid is forward-filled with leading gaps at 0 (the training mean), so a new
    measurement is visible only where the value changes: count = number of grid hours
    whose value differs from the previous hour, plus 1 when the first hour is not exactly
    0. A repeated identical measurement, or one exactly equal to the training mean at the
    start, is not counted - pass real counts (`obs_count`) when they are available.
    """
    n, t, v = view.X.shape
    X = view.X.astype(np.float64)
    inside = np.arange(t)[None, :] < view.lengths[:, None]  # (n, T)
    changed = np.zeros((n, t, v), dtype=bool)
    changed[:, 0] = X[:, 0] != 0.0
    changed[:, 1:] = X[:, 1:] != X[:, :-1]
    changed &= inside[:, :, None]
    return changed.sum(axis=1).astype(np.float64)


def summary_features(view: GridView, obs_count: np.ndarray | None = None) -> np.ndarray:
    """(n, 6 * V) per-variable summaries of each stay's real grid (padding ignored).

    Blocks of V columns in the order of `FEATURE_STATS`:
    last value; mean; min; max; slope = least-squares slope per hour over the stay's own
    grid (times -(L-1)..0; 0 when L == 1); count = `obs_count[i, v]` when given (raw
    observations in the window, e.g. from the irregular view), else the change-count proxy
    of `observation_counts_from_grid`.
    """
    view.validate()
    n, t, v = view.X.shape
    if obs_count is not None:
        obs_count = np.asarray(obs_count, dtype=np.float64)
        if obs_count.shape != (n, v):
            raise ValueError(
                f"obs_count has shape {obs_count.shape}, expected {(n, v)} (stays x variables)"
            )
    # blocks of stays bound the float64 temporaries (a few x block x T x V x 8 bytes)
    block = max(1, _FEATURE_BLOCK_CELLS // max(t * v, 1))
    if n > block:
        return np.concatenate(
            [
                summary_features(
                    view.subset(np.arange(i, min(i + block, n))),
                    None if obs_count is None else obs_count[i : i + block],
                )
                for i in range(0, n, block)
            ]
        )
    L = view.lengths.astype(np.int64)
    X = view.X.astype(np.float64)
    inside = (np.arange(t)[None, :] < L[:, None])[:, :, None]  # (n, T, 1)
    Xz = np.where(inside, X, 0.0)
    last = X[np.arange(n), L - 1]
    mean = Xz.sum(axis=1) / L[:, None]
    mn = np.where(inside, X, np.inf).min(axis=1)
    mx = np.where(inside, X, -np.inf).max(axis=1)
    # slope: sum((t - tbar)(x - xbar)) / sum((t - tbar)^2), t = grid index (1 h apart)
    tt = np.arange(t, dtype=np.float64)[None, :, None]
    tbar = ((L - 1) / 2.0)[:, None, None]
    dt = np.where(inside, tt - tbar, 0.0)
    sxx = (dt**2).sum(axis=1)  # (n, 1)
    sxy = (dt * (Xz - mean[:, None, :])).sum(axis=1)
    slope = np.divide(sxy, sxx, out=np.zeros_like(sxy), where=sxx > 0)
    count = observation_counts_from_grid(view) if obs_count is None else obs_count
    return np.concatenate([last, mean, mn, mx, slope, count], axis=1)


class _SummaryBaseline(SepsisLearner):
    """Shared fit / predict / save / load for sklearn models on `summary_features`."""

    view: ClassVar[str] = "grid"

    def _make_model(
        self,
    ) -> Pipeline | HistGradientBoostingClassifier:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(
        self,
        X: GridView,
        y: np.ndarray,
        X_val: GridView | None = None,
        y_val: np.ndarray | None = None,
    ):
        """Fit on summary features of `X`; with a validation view, record `val_auprc_`."""
        self.validate_params()
        self._check_view(X)
        y = self._check_labels(X, y)
        F = summary_features(X)
        self.model_ = self._make_model().fit(F, y)
        self.classes_ = np.array([0, 1])
        self.variables_ = tuple(X.variables)
        self.n_features_in_ = F.shape[1]
        self.val_auprc_ = float("nan")
        if X_val is not None and y_val is not None and len(np.unique(y_val)) == 2:
            from sklearn.metrics import average_precision_score

            self.val_auprc_ = float(average_precision_score(y_val, self.predict_proba(X_val)[:, 1]))
        return self

    def predict_proba(self, X: GridView) -> np.ndarray:
        """(n, 2) class probabilities in `classes_` order."""
        self._fitted()
        self._check_view(X)
        if tuple(X.variables) != self.variables_:
            raise ValueError(
                f"{type(self).__name__}: view variables {X.variables} differ from the "
                f"training variables {self.variables_}"
            )
        return self.model_.predict_proba(summary_features(X))

    def save(self, path: str | Path) -> None:
        """Write `model.json` (parameters, metadata) and `model.npz` (fitted arrays) into `path`."""
        self._fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        est_meta, arrays = estimator_state(self.model_)
        tmpz = path / "model.tmp.npz"
        np.savez(tmpz, **arrays)
        meta = {
            "format": _FORMAT,
            "class": type(self).__name__,
            "params": self.get_params(),
            "variables": list(self.variables_),
            "val_auprc": self.val_auprc_,
            "estimator": est_meta,
        }
        tmpj = path / "model.json.tmp"
        tmpj.write_text(json.dumps(meta, indent=2))
        tmpz.replace(path / "model.npz")
        tmpj.replace(path / "model.json")

    @classmethod
    def load(cls, path: str | Path) -> _SummaryBaseline:
        """Rebuild a fitted learner written by `save` (JSON and plain arrays; never unpickles)."""
        path = Path(path)
        refuse_pickle_folder(path, "model.json")
        where = path / "model.json"
        meta = read_model_json(where)
        if meta.get("format") != _FORMAT or meta.get("class") != cls.__name__:
            raise ModelFormatError(
                f"{where}: format {meta.get('format')!r} of class {meta.get('class')!r}, "
                f"expected {_FORMAT!r} of {cls.__name__!r}"
            )
        try:
            obj = cls(**meta["params"])
            obj.validate_params()
            variables = tuple(str(v) for v in meta["variables"])
            val_auprc = float(meta["val_auprc"])
            est_meta = dict(meta["estimator"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFormatError(f"{where}: {err}") from None
        arrays = load_arrays(path / "model.npz")
        n_features = 6 * len(variables)
        obj.model_ = restore_estimator(
            obj._make_model(), est_meta, arrays, n_features, str(path / "model.npz")
        )
        obj.variables_ = variables
        obj.classes_ = np.array([0, 1])
        obj.n_features_in_ = n_features
        obj.val_auprc_ = val_auprc
        return obj


class LogisticRegressionBaseline(_SummaryBaseline):
    """Standardised summary features -> L2 logistic regression, class_weight="balanced"."""

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "C": [Interval(Real, 0, None, closed="neither")],
        "seed": [Interval(Integral, 0, 2**32 - 1, closed="both")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, C: float = 1.0, seed: int = 0, max_iter: int = 2000):
        self.C = C
        self.seed = seed
        self.max_iter = max_iter

    def _make_model(self) -> Pipeline:
        return make_pipeline(
            StandardScaler(),
            LogisticRegression(
                C=self.C, class_weight="balanced", max_iter=self.max_iter, random_state=self.seed
            ),
        )


class GradientBoostingBaseline(_SummaryBaseline):
    """HistGradientBoostingClassifier on summary features, class_weight="balanced", no early stopping."""

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "max_leaf_nodes": [Interval(Integral, 2, None, closed="left")],
        "seed": [Interval(Integral, 0, 2**32 - 1, closed="both")],
        "min_samples_leaf": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        max_iter: int = 200,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 15,
        seed: int = 0,
        min_samples_leaf: int = 20,
    ):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.seed = seed
        # sklearn's default 20; tiny training sets (tests, demo data) need fewer or no split happens
        self.min_samples_leaf = min_samples_leaf

    def _make_model(self) -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            class_weight="balanced",
            early_stopping=False,
            random_state=self.seed,
        )


def sofa_increase_scores(
    labels_hourly: pd.DataFrame,
    stay_ids: np.ndarray,
    prediction_hours: np.ndarray,
    window_hours: int = 48,
) -> np.ndarray:
    """SOFA increase at each prediction time: SOFA(k) - min SOFA over hours [k - window_hours, k].

    `prediction_hours[i]` is stay i's prediction time (onset - h) in hours since ICU
    admission. SOFA at hour k uses data up to the END of hour k (k + 1 h), so the last
    hour whose SOFA is known at time p is k = floor(p) - 1; using hour floor(p) would leak
    up to an hour past the prediction time (at horizon 0 it is the onset hour itself).
    k < 0 (no hour completed yet) scores 0, as a SOFA component without data does; if
    hour k itself is missing the latest earlier hour in the window stands for it.
    NaN for a stay absent from `labels_hourly` (counted in a warning), and for every stay
    when the table has no SOFA (e.g. PhysioNet 2019, whose labels carry no SOFA columns).
    """
    stay_ids = np.asarray(stay_ids, dtype=np.int64)
    prediction_hours = np.asarray(prediction_hours, dtype=np.float64)
    if stay_ids.shape != prediction_hours.shape:
        raise ValueError(
            f"stay_ids {stay_ids.shape} and prediction_hours {prediction_hours.shape} differ"
        )
    out = np.full(len(stay_ids), np.nan)
    if "sofa" not in labels_hourly.columns or labels_hourly["sofa"].isna().all():
        log.info(
            "sofa_increase_scores: labels_hourly has no SOFA values; scores are NaN (shown as n/a)"
        )
        return out
    for col in ("stay_id", "hour"):
        if col not in labels_hourly.columns:
            raise ValueError(f"labels_hourly: missing column {col!r}")
    lh = labels_hourly.loc[labels_hourly["stay_id"].isin(stay_ids), ["stay_id", "hour", "sofa"]]
    by_stay = {
        sid: (g["hour"].to_numpy(np.int64), g["sofa"].to_numpy(np.float64))
        for sid, g in lh.groupby("stay_id", sort=False)
    }
    missing = 0
    for i, (sid, p) in enumerate(zip(stay_ids, prediction_hours, strict=True)):
        if sid not in by_stay:
            missing += 1
            continue
        if not np.isfinite(p):
            raise ValueError(
                f"prediction_hours row {i} (stay {sid}) is {p}, expected a finite hour"
            )
        hours, sofa = by_stay[sid]
        k = int(np.floor(p)) - 1
        if k < 0:
            out[i] = 0.0
            continue
        sel = (hours <= k) & (hours >= k - window_hours)
        if not sel.any():
            out[i] = 0.0
            continue
        h_sel, s_sel = hours[sel], sofa[sel]
        now = s_sel[np.argmax(h_sel)]  # hour k, or the latest earlier hour if k is missing
        out[i] = float(now - s_sel.min())
    if missing:
        log.warning(
            "sofa_increase_scores: %d of %d stays have no rows in labels_hourly; their score is NaN",
            missing,
            len(stay_ids),
        )
    return out


def qsofa_scores(
    view: GridView,
    mean: dict[str, float],
    std: dict[str, float],
    resp_var: str = "resp_rate",
    sbp_var: str = "sbp",
) -> np.ndarray:
    """Partial qSOFA (0-2) at the prediction time from the grid's last hour: RR >= 22/min, SBP <= 100 mmHg.

    The grid is z-scored, so values are mapped back with the training split's `mean` and
    `std` per variable (normalisation.parquet). The third qSOFA criterion, altered
    mentation (GCS < 15), is NOT included: GCS is not one of the grid variables. A value
    never observed is the training mean after imputation and so usually scores 0. Raises
    when a variable is missing from the view or from the statistics.
    """
    view.validate()
    last = view.X[np.arange(len(view)), view.lengths - 1].astype(np.float64)  # (n, V)
    score = np.zeros(len(view))
    for var, test in ((resp_var, lambda x: x >= 22.0), (sbp_var, lambda x: x <= 100.0)):
        if var not in view.variables:
            raise ValueError(
                f"qsofa_scores: variable {var!r} is not in the view ({view.variables})"
            )
        if var not in mean or var not in std:
            raise ValueError(f"qsofa_scores: no training mean/std for {var!r}")
        raw = last[:, view.variables.index(var)] * float(std[var]) + float(mean[var])
        score += test(raw)
    return score


class SofaIncreaseBaseline(SepsisLearner):
    """Clinical rule without training: probability-like score from the SOFA increase.

    Input X is the 1-D array of `sofa_increase_scores`; predict_proba's class-1 column is
    the logistic 1 / (1 + exp(-(increase - threshold))), monotone in the increase (so
    AUPRC/AUROC equal those of the raw increase) and 0.5 at the Sepsis-3 threshold of 2.
    NaN increases stay NaN.
    """

    view: ClassVar[str] = "sofa_increase"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "threshold": [Interval(Real, None, None, closed="neither")]
    }

    def __init__(self, threshold: float = 2.0):
        self.threshold = threshold

    def _as_scores(self, X) -> np.ndarray:
        s = np.asarray(X, dtype=np.float64)
        if s.ndim != 1:
            raise ValueError(
                f"SofaIncreaseBaseline expects a 1-D array of SOFA increases, got shape {s.shape}"
            )
        return s

    def fit(self, X, y, X_val=None, y_val=None) -> SofaIncreaseBaseline:
        """Nothing to learn; checks shapes and sets `classes_`."""
        self.validate_params()
        s = self._as_scores(X)
        if np.asarray(y).shape != s.shape:
            raise ValueError(f"y has shape {np.asarray(y).shape}, expected {s.shape}")
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2): [1 - p, p] with p = sigmoid(increase - threshold)."""
        self._fitted()
        s = self._as_scores(X)
        p = 1.0 / (1.0 + np.exp(-(s - self.threshold)))
        return np.stack([1.0 - p, p], axis=1)

    def save(self, path: str | Path) -> None:
        """Write params.json (there is no fitted state)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / "params.json.tmp"
        tmp.write_text(json.dumps({"class": type(self).__name__, "params": self.get_params()}))
        tmp.replace(path / "params.json")

    @classmethod
    def load(cls, path: str | Path) -> SofaIncreaseBaseline:
        """Rebuild from params.json."""
        meta = json.loads((Path(path) / "params.json").read_text())
        obj = cls(**meta["params"])
        obj.classes_ = np.array([0, 1])
        return obj
