"""DTW-KNN learner: one univariate DTW k-NN per variable, ensemble = mean class-1 probability.

A lazy learner (PIPELINE.md section 5): `fit` stores the reference stays (already cut at
the caller's horizon) and, given a validation split, picks k (and optionally the
Sakoe-Chiba radius) by the ensemble's validation AUPRC. Every k is derived from one
neighbour list per variable computed up to the largest k, so choosing k never recomputes
DTW; neighbour lists can be cached on disk keyed by a hash of the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score
from sklearn.utils._param_validation import Interval, Options, StrOptions

from models.base import (
    ModelFormatError,
    ParameterError,
    SepsisLearner,
    load_arrays,
    read_model_json,
)
from models.dtw_knn.dtw import as_series
from models.dtw_knn.search import knn_search

logger = logging.getLogger(__name__)

#: process-wide neighbour-cache counters (tests read them)
CACHE_STATS = {"hits": 0, "misses": 0}

_FORMAT = "dtw_knn/1"


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


class DTWKNNClassifier(SepsisLearner):
    """Per-variable DTW k-NN ensemble on the `GridView` (see module docstring).

    Parameters: ``n_neighbors`` and ``sakoe_chiba_radius`` are used when `fit` gets no
    validation split; with one, k is chosen from ``k_grid`` and the radius from
    ``radius_grid`` (None = full window) by validation AUPRC, ties to the earlier entry.
    ``variables``: None (all) or a list of variable names. ``n_jobs``: numba threads
    (-1 = all). ``cache_dir``: where neighbour lists are cached (None = no cache).
    """

    view = "grid"
    _parameter_constraints = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "weights": [StrOptions({"uniform", "distance"})],
        "sakoe_chiba_radius": [Interval(Integral, 0, None, closed="left"), None],
        "variables": [list, tuple, None],
        "n_jobs": [Interval(Integral, 1, None, closed="left"), Options(Integral, {-1}), None],
        "k_grid": [list, tuple],
        "radius_grid": [list, tuple],
        "cache_dir": [str, os.PathLike, None],
        "progress": ["boolean"],
        "dtype": [StrOptions({"float64", "float32"})],
    }

    def __init__(
        self,
        n_neighbors: int = 5,
        weights: str = "uniform",
        sakoe_chiba_radius: int | None = None,
        variables: list[str] | None = None,
        n_jobs: int = -1,
        k_grid: tuple[int, ...] = (1, 3, 5, 10, 20),
        radius_grid: tuple[int | None, ...] = (None,),
        cache_dir: str | None = None,
        progress: bool = True,
        dtype: str = "float64",
    ):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.sakoe_chiba_radius = sakoe_chiba_radius
        self.variables = variables
        self.n_jobs = n_jobs
        self.k_grid = k_grid
        self.radius_grid = radius_grid
        self.cache_dir = cache_dir
        self.progress = progress
        self.dtype = dtype

    # ------------------------------------------------------------------ fitting

    def _check_more_params(self) -> None:
        for key, allow_none, low in (("k_grid", False, 1), ("radius_grid", True, 0)):
            grid = getattr(self, key)
            ok = len(grid) > 0 and all(
                (r is None and allow_none)
                or (isinstance(r, Integral) and not isinstance(r, bool) and r >= low)
                for r in grid
            )
            if not ok:
                what = f"ints >= {low}" + (" or None" if allow_none else "")
                raise ParameterError(key, f"expected a non-empty list of {what}, got {grid!r}")
        if self.variables is not None and not all(isinstance(v, str) for v in self.variables):
            raise ParameterError("variables", f"expected variable names, got {self.variables!r}")

    def _resolve_variables(self, X) -> list[str]:
        names = list(X.variables) if self.variables is None else list(self.variables)
        missing = [v for v in names if v not in X.variables]
        if missing:
            raise ValueError(f"variables {missing} not in the GridView (has {list(X.variables)})")
        if not names:
            raise ValueError("no variables selected")
        return names

    def fit(self, X, y, X_val=None, y_val=None) -> DTWKNNClassifier:
        """Store the reference stays; with a validation split choose k (and radius) by AUPRC."""
        self._check_view(X)
        y = self._check_labels(X, y)
        self.validate_params()
        names = self._resolve_variables(X)
        cols = [X.variables.index(v) for v in names]
        self.variables_ = tuple(names)
        self.X_ref_ = np.ascontiguousarray(X.X[:, :, cols], dtype=self.dtype)
        self.lengths_ref_ = np.asarray(X.lengths, dtype=np.int64).copy()
        self.y_ref_ = y
        self.classes_ = np.array([0, 1])
        n_ref = len(y)
        if X_val is None:
            self.k_ = min(int(self.n_neighbors), n_ref)
            self.radius_ = self.sakoe_chiba_radius
            self.validation_table_ = []
            self.pruned_fraction_ = {}
            return self
        self._check_view(X_val)
        y_val = np.asarray(y_val).astype(np.int64)
        if y_val.shape != (len(X_val),):
            raise ValueError(f"y_val has shape {y_val.shape}, expected ({len(X_val)},)")
        ks = sorted({min(int(k), n_ref) for k in self.k_grid})
        table = []
        # per radius, per variable: fraction of full DTWs the pruned search skipped
        # (None where the neighbour lists came from the cache)
        self.pruned_fraction_ = {}
        for radius in self.radius_grid:
            radius = None if radius is None else int(radius)
            stats: dict = {}
            per_var = self._neighbours(X_val, max(ks), radius, stats)
            self.pruned_fraction_[str(radius)] = stats
            for k in ks:
                p = np.mean(
                    [neighbour_proba(d, i, self.y_ref_, k, self.weights) for d, i in per_var],
                    axis=0,
                )
                ap = (
                    float(average_precision_score(y_val, p))
                    if y_val.min() != y_val.max()
                    else float("nan")
                )
                table.append({"k": k, "radius": radius, "auprc": ap})
        best = max(
            range(len(table)), key=lambda t: (np.nan_to_num(table[t]["auprc"], nan=-1.0), -t)
        )
        self.k_ = int(table[best]["k"])
        self.radius_ = table[best]["radius"]
        self.validation_table_ = table
        logger.info(
            "DTW-KNN: chose k=%d radius=%s (validation AUPRC %.4f)",
            self.k_,
            self.radius_,
            table[best]["auprc"],
        )
        return self

    # ------------------------------------------------------------------ neighbours

    def _cache_key(self, Rz, lr, Qz, lq, radius, k) -> str:
        h = hashlib.sha256()
        for a in (Rz, lr, Qz, lq):
            a = np.ascontiguousarray(a)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
        h.update(repr((radius, int(k), self.dtype, "dtw-sq-euclid")).encode())
        return h.hexdigest()[:32]

    def _neighbours(
        self, X, k: int, radius: int | None, stats: dict | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per variable (in `variables_` order): (dist, idx) of the k nearest references."""
        lengths = np.asarray(X.lengths, dtype=np.int64)
        out = []
        for v, name in enumerate(self.variables_):
            col = X.variables.index(name)
            Qz, lq = as_series(X.X[:, :, col], lengths, self.dtype)
            Rz, lr = as_series(self.X_ref_[:, :, v], self.lengths_ref_, self.dtype)
            path = None
            if self.cache_dir is not None:
                key = self._cache_key(Rz, lr, Qz, lq, radius, k)
                path = Path(self.cache_dir) / f"dtwknn_{key}.npz"
                if path.exists():
                    with np.load(path) as z:
                        out.append((z["dist"], z["idx"]))
                    if stats is not None:
                        stats[name] = None
                    CACHE_STATS["hits"] += 1
                    continue
                CACHE_STATS["misses"] += 1
            d, i, st = knn_search(
                Qz,
                Rz,
                k,
                radius,
                lq,
                lr,
                n_jobs=self.n_jobs,
                dtype=self.dtype,
                progress=self.progress,
                desc=f"DTW k-NN {name}",
            )
            logger.info(
                "DTW k-NN %s: %d pairs, %.1f%% of full DTWs pruned",
                name,
                st.pairs,
                100 * st.pruned_fraction,
            )
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, dist=d, idx=i)
                tmp.replace(path)  # atomic: a crash never leaves a half cache file
            if stats is not None:
                stats[name] = st.pruned_fraction
            out.append((d, i))
        return out

    def kneighbors(self, X, k: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per-variable neighbour lists (distances ascending, reference row indices)."""
        self._fitted()
        self._check_view(X)
        return self._neighbours(X, self.k_ if k is None else int(k), self.radius_)

    def variable_proba(self, X) -> np.ndarray:
        """Per-variable class-1 probabilities ``(n, n_variables_used)`` at the chosen k."""
        per_var = self.kneighbors(X)
        return np.stack(
            [neighbour_proba(d, i, self.y_ref_, self.k_, self.weights) for d, i in per_var], axis=1
        )

    def predict_proba(self, X) -> np.ndarray:
        """``(n, 2)``: [1 - p, p] with p the mean of the per-variable class-1 probabilities."""
        p = self.variable_proba(X).mean(axis=1)
        return np.column_stack([1.0 - p, p])

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Write ``model.npz`` (reference arrays) and ``model.json`` (params, choices) to a dir."""
        self._fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(
            path / "model.npz", X_ref=self.X_ref_, lengths_ref=self.lengths_ref_, y_ref=self.y_ref_
        )
        params = self.get_params()
        params["k_grid"] = list(params["k_grid"])
        params["radius_grid"] = list(params["radius_grid"])
        meta = {
            "format": _FORMAT,
            "params": params,
            "k_": self.k_,
            "radius_": self.radius_,
            "variables_": list(self.variables_),
            "validation_table_": self.validation_table_,
        }
        (path / "model.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> DTWKNNClassifier:
        """Rebuild a fitted classifier written by `save`.

        A saved ``cache_dir`` is ignored (the loaded model has none): a model folder from
        someone else's run must not decide where evaluation writes files.
        """
        path = Path(path)
        where = path / "model.json"
        meta = read_model_json(where)
        if meta.get("format") != _FORMAT:
            raise ModelFormatError(f"{where}: format {meta.get('format')!r}, expected {_FORMAT!r}")
        try:
            p = dict(meta["params"])
            if p.get("cache_dir") is not None:
                logger.info("%s: ignoring the saved cache_dir %r", where, p["cache_dir"])
            p["cache_dir"] = None
            p["k_grid"] = tuple(p["k_grid"])
            p["radius_grid"] = tuple(p["radius_grid"])
            if p["variables"] is not None:
                p["variables"] = list(p["variables"])
            model = cls(**p)
            model.validate_params()
            model.k_ = int(meta["k_"])
            radius = meta["radius_"]
            model.radius_ = None if radius is None else int(radius)
            model.variables_ = tuple(str(v) for v in meta["variables_"])
            model.validation_table_ = list(meta["validation_table_"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFormatError(f"{where}: {err}") from None
        arrays = load_arrays(path / "model.npz")
        for key in ("X_ref", "lengths_ref", "y_ref"):
            if key not in arrays:
                raise ModelFormatError(f"{path / 'model.npz'}: array {key!r} is missing")
        model.X_ref_ = arrays["X_ref"]
        model.lengths_ref_ = arrays["lengths_ref"]
        model.y_ref_ = arrays["y_ref"]
        n = len(model.y_ref_)
        if model.X_ref_.shape[::2] != (n, len(model.variables_)) or model.lengths_ref_.shape != (
            n,
        ):
            raise ModelFormatError(
                f"{path / 'model.npz'}: X_ref {model.X_ref_.shape}, lengths_ref "
                f"{model.lengths_ref_.shape} and y_ref {model.y_ref_.shape} disagree with "
                f"{len(model.variables_)} variables"
            )
        model.classes_ = np.array([0, 1])
        return model
