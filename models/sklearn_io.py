"""Pickle-free storage of the fitted scikit-learn models behind the summary-feature baselines.

`estimator_state(model)` splits a fitted `StandardScaler + LogisticRegression` pipeline or a
`HistGradientBoostingClassifier` into a JSON-able dict and a dict of plain numeric arrays
(saved as `.npz`, read back with `allow_pickle=False`); `restore_estimator(template, meta,
arrays, where)` puts that state into an unfitted `template` built with the same parameters,
so predictions after a round trip are bit-identical. The gradient-boosting trees are the
predictors' node tables (`TreePredictor.nodes`, a numeric structured array); they are checked
(dtype, child indices after their parent, feature indices in range) before the compiled
predictor walks them, so a crafted file cannot make it read out of bounds or loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper
from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.pipeline import Pipeline

from models.base import ModelFormatError

LOGREG, HGB = "standard_scaler+logistic_regression", "hist_gradient_boosting"


def estimator_state(model: Pipeline | HistGradientBoostingClassifier) -> tuple[dict, dict]:
    """(JSON metadata, arrays) of a fitted baseline estimator."""
    if isinstance(model, HistGradientBoostingClassifier):
        return _hgb_state(model)
    scaler, lr = model[0], model[-1]
    arrays = {
        "scaler_mean": scaler.mean_,
        "scaler_var": scaler.var_,
        "scaler_scale": scaler.scale_,
        "scaler_n_samples_seen": np.asarray(scaler.n_samples_seen_),
        "coef": lr.coef_,
        "intercept": lr.intercept_,
        "classes": lr.classes_,
        "n_iter": lr.n_iter_,
    }
    meta = {"kind": LOGREG, "sklearn": sklearn.__version__, "n_features": int(lr.n_features_in_)}
    return meta, arrays


def _hgb_state(m: HistGradientBoostingClassifier) -> tuple[dict, dict]:
    bm = m._bin_mapper
    arrays: dict[str, np.ndarray] = {
        "baseline_prediction": m._baseline_prediction,
        "classes": m.classes_,
        "bin_is_categorical": bm.is_categorical_,
        "bin_n_non_missing": bm.n_bins_non_missing_,
        "train_score": m.train_score_,
        "validation_score": m.validation_score_,
    }
    for f, thr in enumerate(bm.bin_thresholds_):
        arrays[f"bin_thresholds_{f}"] = thr
    for i, trees in enumerate(m._predictors):
        for k, tree in enumerate(trees):
            arrays[f"nodes_{i}_{k}"] = tree.nodes
            arrays[f"binned_bitsets_{i}_{k}"] = tree.binned_left_cat_bitsets
            arrays[f"raw_bitsets_{i}_{k}"] = tree.raw_left_cat_bitsets
    meta = {
        "kind": HGB,
        "sklearn": sklearn.__version__,
        "n_features": int(m.n_features_in_),
        "n_iter": len(m._predictors),
        "n_trees_per_iteration": int(m.n_trees_per_iteration_),
        "n_bins": int(bm.n_bins),
        "missing_values_bin_idx": int(bm.missing_values_bin_idx_),
        "categorical": m.is_categorical_ is not None,
    }
    return meta, arrays


def _need(arrays: dict, key: str, where: str, dtype_kind: str = "fiu") -> np.ndarray:
    if key not in arrays:
        raise ModelFormatError(f"{where}: array {key!r} is missing")
    a = arrays[key]
    if a.dtype.kind not in dtype_kind:
        raise ModelFormatError(f"{where}: array {key!r} has dtype {a.dtype}, expected numbers")
    return a


def _shape(a: np.ndarray, shape: tuple, key: str, where: str) -> np.ndarray:
    if a.shape != shape:
        raise ModelFormatError(f"{where}: array {key!r} has shape {a.shape}, expected {shape}")
    return a


def restore_estimator(template, meta: dict[str, Any], arrays: dict, n_features: int, where: str):
    """Fill the unfitted `template` with a saved state; ModelFormatError names `where`."""
    kind = meta.get("kind")
    if isinstance(template, HistGradientBoostingClassifier):
        if kind != HGB:
            raise ModelFormatError(f"{where}: estimator kind {kind!r}, expected {HGB!r}")
        return _restore_hgb(template, meta, arrays, n_features, where)
    if kind != LOGREG:
        raise ModelFormatError(f"{where}: estimator kind {kind!r}, expected {LOGREG!r}")
    scaler, lr = template[0], template[-1]
    for key in ("scaler_mean", "scaler_var", "scaler_scale"):
        _shape(_need(arrays, key, where), (n_features,), key, where)
    scaler.mean_ = arrays["scaler_mean"]
    scaler.var_ = arrays["scaler_var"]
    scaler.scale_ = arrays["scaler_scale"]
    seen = _need(arrays, "scaler_n_samples_seen", where)
    scaler.n_samples_seen_ = seen[()] if seen.ndim == 0 else seen
    scaler.n_features_in_ = n_features
    lr.coef_ = _shape(_need(arrays, "coef", where), (1, n_features), "coef", where)
    lr.intercept_ = _shape(_need(arrays, "intercept", where), (1,), "intercept", where)
    lr.classes_ = _classes(arrays, where)
    lr.n_iter_ = _need(arrays, "n_iter", where)
    lr.n_features_in_ = n_features
    return template


def _classes(arrays: dict, where: str) -> np.ndarray:
    classes = _need(arrays, "classes", where, "iu")
    if classes.tolist() != [0, 1]:
        raise ModelFormatError(f"{where}: classes {classes.tolist()}, expected [0, 1]")
    return classes


def _restore_hgb(m, meta: dict, arrays: dict, n_features: int, where: str):
    try:
        n_iter, per_iter = int(meta["n_iter"]), int(meta["n_trees_per_iteration"])
        n_bins, missing_bin = int(meta["n_bins"]), int(meta["missing_values_bin_idx"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFormatError(
            f"{where}: estimator metadata {err!r} missing or not an int"
        ) from None
    if per_iter != 1 or meta.get("categorical"):
        raise ModelFormatError(f"{where}: expected a binary model without categorical features")
    m.classes_ = _classes(arrays, where)
    m.n_trees_per_iteration_ = per_iter
    base = _need(arrays, "baseline_prediction", where, "f")
    m._baseline_prediction = _shape(base, (1, 1), "baseline_prediction", where)
    bm = _BinMapper(n_bins=n_bins)
    bm.missing_values_bin_idx_ = missing_bin
    bm.is_categorical_ = _shape(
        _need(arrays, "bin_is_categorical", where, "u"), (n_features,), "bin_is_categorical", where
    )
    if bm.is_categorical_.any():
        raise ModelFormatError(f"{where}: categorical features are not supported")
    bm.n_bins_non_missing_ = _need(arrays, "bin_n_non_missing", where, "u")
    bm.bin_thresholds_ = [_need(arrays, f"bin_thresholds_{f}", where) for f in range(n_features)]
    m._bin_mapper = bm
    m._predictors = [
        [_tree(arrays, i, k, n_features, where) for k in range(per_iter)] for i in range(n_iter)
    ]
    m.is_categorical_ = None
    m._preprocessor = None
    m._is_categorical_remapped = None
    m.n_features_in_ = m._n_features = n_features
    m.do_early_stopping_ = m._use_validation_data = False
    m.train_score_ = _need(arrays, "train_score", where)
    m.validation_score_ = _need(arrays, "validation_score", where)
    m._loss = m._get_loss(sample_weight=None)
    return m


def _tree(arrays: dict, i: int, k: int, n_features: int, where: str) -> TreePredictor:
    key = f"nodes_{i}_{k}"
    if key not in arrays:
        raise ModelFormatError(f"{where}: array {key!r} is missing")
    nodes = arrays[key]
    if nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1 or len(nodes) == 0:
        raise ModelFormatError(f"{where}: {key} is not a table of tree nodes")
    inner = np.flatnonzero(nodes["is_leaf"] == 0)
    n = len(nodes)
    # children come after their parent in sklearn's node order: no cycles, no out-of-range reads
    bad = (
        (nodes["left"][inner] <= inner)
        | (nodes["right"][inner] <= inner)
        | (nodes["left"][inner] >= n)
        | (nodes["right"][inner] >= n)
        | (nodes["feature_idx"][inner] < 0)
        | (nodes["feature_idx"][inner] >= n_features)
        | (nodes["is_categorical"][inner] != 0)
    )
    if bad.any():
        raise ModelFormatError(
            f"{where}: {key} node {int(inner[np.argmax(bad)])} has child or feature indices "
            f"out of range (nodes: {n}, features: {n_features})"
        )
    bitsets = []
    for name in ("binned_bitsets", "raw_bitsets"):
        b = _need(arrays, f"{name}_{i}_{k}", where, "u")
        bitsets.append(_shape(b.astype(np.uint32), (0, 8), f"{name}_{i}_{k}", where))
    return TreePredictor(np.ascontiguousarray(nodes), *bitsets)
