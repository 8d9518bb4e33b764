"""DTW-KNN learner: one univariate DTW k-NN per variable, ensemble = mean class-1 probability.

A lazy learner (PIPELINE.md section 5): `fit` stores the reference stays (already cut at
the caller's horizon) and, given a validation split, picks k (and optionally the
Sakoe-Chiba radius and the neighbour weighting) by the ensemble's validation AUPRC. Every k
is derived from one neighbour list per variable computed up to the largest k, so choosing k
never recomputes DTW; neighbour lists can be cached on disk keyed by a hash of the data.

Options beyond the paper (off by default, so the defaults are the paper's model):
``per_variable`` picks (k, radius, weighting) for each variable by that variable's own
validation AUPRC; ``weights_grid`` adds the weighting (uniform | distance) to the choice;
``combine="logistic"`` replaces the plain mean by a weighted mean whose weights come from a
non-negative, L2-regularised (``combine_C``) logistic regression of the labels on the
per-variable probabilities of the VALIDATION stays (never training references, whose
neighbours include themselves, and never test stays). The weights are the regression's
coefficients scaled to sum to 1: the score ranks stays exactly as the regression does and
equals the plain mean when the weights are equal. Its validation AUPRC is reported out of
fold (5-fold on the validation stays). Every fit with a validation split records each
variable's validation AUPRC (`variable_table_`), so variables too sparse to help show as such.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval, Options, StrOptions

from models.base import (
    ModelFormatError,
    ParameterError,
    SepsisLearner,
    load_arrays,
    read_model_json,
)
from models.dtw_knn.combine import (  # noqa: F401  (re-exported)
    _auprc,
    combination_oof_auprc,
    fit_combination,
    neighbour_proba,
)
from models.dtw_knn.dtw import as_series
from models.dtw_knn.search import knn_search

logger = logging.getLogger(__name__)

#: process-wide neighbour-cache counters (tests read them)
CACHE_STATS = {"hits": 0, "misses": 0}

_FORMAT = "dtw_knn/2"
_READABLE = ("dtw_knn/1", _FORMAT)  # /1: one k, radius and weighting for every variable
WEIGHTS = ("uniform", "distance")
COMBINE = ("mean", "logistic")


class DTWKNNClassifier(SepsisLearner):
    """Per-variable DTW k-NN ensemble on the `GridView` (see module docstring).

    Parameters: ``n_neighbors``, ``sakoe_chiba_radius`` and ``weights`` are used when `fit`
    gets no validation split; with one, k is chosen from ``k_grid``, the radius from
    ``radius_grid`` (None = full window) and the weighting from ``weights_grid`` (empty =
    ``weights`` only) by validation AUPRC, ties to the earlier entry; for every variable
    alone with ``per_variable``. ``combine``: mean (the paper) | logistic (see the module
    docstring; needs a validation split). ``variables``: None (all) or a list of variable
    names. ``n_jobs``: numba threads (-1 = all). ``cache_dir``: where neighbour lists are
    cached (None = no cache).
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
        "weights_grid": [list, tuple],
        "per_variable": ["boolean"],
        "combine": [StrOptions(set(COMBINE))],
        "combine_C": [Interval(Real, 0, None, closed="neither")],
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
        weights_grid: tuple[str, ...] = (),
        per_variable: bool = False,
        combine: str = "mean",
        combine_C: float = 1.0,
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
        self.weights_grid = weights_grid
        self.per_variable = per_variable
        self.combine = combine
        self.combine_C = combine_C
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
        if not all(w in WEIGHTS for w in self.weights_grid):
            raise ParameterError(
                "weights_grid",
                f"expected a list of {' | '.join(WEIGHTS)}, got {self.weights_grid!r}",
            )
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
        """Store the reference stays; with a validation split choose k, radius and weighting
        by AUPRC (per variable with ``per_variable``) and fit the combination."""
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
        n_ref, n_var = len(y), len(names)
        self.combine_weights_ = np.full(n_var, 1.0 / n_var)
        self.variable_table_ = []
        self.combine_oof_auprc_ = float("nan")
        if X_val is None:
            if self.combine != "mean":
                raise ValueError(
                    f"combine={self.combine!r} is fitted on validation stays: pass X_val, y_val"
                )
            self.k_ = min(int(self.n_neighbors), n_ref)
            self.radius_ = self.sakoe_chiba_radius
            self.weights_ = self.weights
            self._set_per_variable([(self.k_, self.radius_, self.weights_)] * n_var)
            self.validation_table_ = []
            self.pruned_fraction_ = {}
            return self
        self._check_view(X_val)
        y_val = np.asarray(y_val).astype(np.int64)
        if y_val.shape != (len(X_val),):
            raise ValueError(f"y_val has shape {y_val.shape}, expected ({len(X_val)},)")
        ks = sorted({min(int(k), n_ref) for k in self.k_grid})
        wgrid = tuple(dict.fromkeys(self.weights_grid)) or (self.weights,)
        table, settings, probs = [], [], []
        # per radius, per variable: fraction of full DTWs the pruned search skipped
        # (None where the neighbour lists came from the cache)
        self.pruned_fraction_ = {}
        for radius in self.radius_grid:
            radius = None if radius is None else int(radius)
            stats: dict = {}
            per_var = self._neighbours(X_val, [max(ks)] * n_var, [radius] * n_var, stats)
            self.pruned_fraction_[str(radius)] = stats
            for w in wgrid:
                for k in ks:
                    P = np.stack(
                        [neighbour_proba(d, i, self.y_ref_, k, w) for d, i in per_var], axis=1
                    )
                    table.append(
                        {"k": k, "radius": radius, "weights": w, "auprc": _auprc(y_val, P.mean(1))}
                    )
                    settings.append((k, radius, w))
                    probs.append(P)

        def best_of(scores: list[float]) -> int:  # ties (and NaN) to the earlier setting
            return max(range(len(scores)), key=lambda t: (np.nan_to_num(scores[t], nan=-1.0), -t))

        g = best_of([r["auprc"] for r in table])
        self.k_, self.radius_, self.weights_ = settings[g]
        self.validation_table_ = table
        per_var_ap = np.array([[_auprc(y_val, P[:, v]) for v in range(n_var)] for P in probs])
        chosen = (
            [best_of(list(per_var_ap[:, v])) for v in range(n_var)]
            if self.per_variable
            else [g] * n_var
        )
        self._set_per_variable([settings[c] for c in chosen])
        P_val = np.stack([probs[c][:, v] for v, c in enumerate(chosen)], axis=1)
        if self.combine == "logistic":
            self.combine_weights_ = fit_combination(P_val, y_val, self.combine_C)
            self.combine_oof_auprc_ = combination_oof_auprc(P_val, y_val, self.combine_C)
        self.val_auprc_mean_ = _auprc(y_val, P_val.mean(axis=1))
        flat = _flat_fraction(X_val, [X_val.variables.index(v) for v in names])
        self.variable_table_ = [
            {
                "variable": name,
                "k": int(self.k_per_var_[v]),
                "radius": self.radius_per_var_[v],
                "weights": self.weights_per_var_[v],
                "auprc": float(per_var_ap[chosen[v], v]),
                "auprc_at_ensemble_choice": float(per_var_ap[g, v]),
                "flat_fraction": float(flat[v]),
                "combine_weight": float(self.combine_weights_[v]),
            }
            for v, name in enumerate(names)
        ]
        self.val_prevalence_ = float(y_val.mean())
        logger.info(
            "DTW-KNN: chose k=%d radius=%s weights=%s (validation AUPRC %.4f)%s",
            self.k_,
            self.radius_,
            self.weights_,
            table[g]["auprc"],
            " and per-variable settings" if self.per_variable else "",
        )
        return self

    def _set_per_variable(self, settings: list[tuple[int, int | None, str]]) -> None:
        self.k_per_var_ = tuple(int(k) for k, _, _ in settings)
        self.radius_per_var_ = tuple(None if r is None else int(r) for _, r, _ in settings)
        self.weights_per_var_ = tuple(str(w) for _, _, w in settings)

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
        self, X, ks: list[int], radii: list[int | None], stats: dict | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per variable (in `variables_` order): (dist, idx) of its ks[v] nearest references
        under the band radii[v]."""
        lengths = np.asarray(X.lengths, dtype=np.int64)
        out = []
        for v, name in enumerate(self.variables_):
            k, radius = int(ks[v]), radii[v]
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
        """Per-variable neighbour lists (distances ascending, reference row indices) at each
        variable's chosen k (or `k` for all) and radius."""
        self._fitted()
        self._check_view(X)
        ks = list(self.k_per_var_) if k is None else [int(k)] * len(self.variables_)
        return self._neighbours(X, ks, list(self.radius_per_var_))

    def variable_proba(self, X) -> np.ndarray:
        """Per-variable class-1 probabilities ``(n, n_variables_used)`` at the chosen settings."""
        per_var = self.kneighbors(X)
        return np.stack(
            [
                neighbour_proba(d, i, self.y_ref_, k, w)
                for (d, i), k, w in zip(
                    per_var, self.k_per_var_, self.weights_per_var_, strict=True
                )
            ],
            axis=1,
        )

    def predict_proba(self, X) -> np.ndarray:
        """``(n, 2)``: [1 - p, p] with p the mean of the per-variable class-1 probabilities
        (``combine="logistic"``: their weighted mean with ``combine_weights_``)."""
        P = self.variable_proba(X)
        p = P.mean(axis=1) if self.combine == "mean" else P @ self.combine_weights_
        p = np.clip(p, 0.0, 1.0)  # a weighted mean of probabilities; clip rounding only
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
        params["weights_grid"] = list(params["weights_grid"])
        meta = {
            "format": _FORMAT,
            "params": params,
            "k_": self.k_,
            "radius_": self.radius_,
            "weights_": self.weights_,
            "k_per_var_": list(self.k_per_var_),
            "radius_per_var_": list(self.radius_per_var_),
            "weights_per_var_": list(self.weights_per_var_),
            "combine_weights_": [float(w) for w in self.combine_weights_],
            "combine_oof_auprc_": _json_float(self.combine_oof_auprc_),
            "variables_": list(self.variables_),
            "validation_table_": self.validation_table_,
            "variable_table_": self.variable_table_,
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
        if meta.get("format") not in _READABLE:
            raise ModelFormatError(
                f"{where}: format {meta.get('format')!r}, expected one of {list(_READABLE)}"
            )
        try:
            p = dict(meta["params"])
            if p.get("cache_dir") is not None:
                logger.info("%s: ignoring the saved cache_dir %r", where, p["cache_dir"])
            p["cache_dir"] = None
            p["k_grid"] = tuple(p["k_grid"])
            p["radius_grid"] = tuple(p["radius_grid"])
            p["weights_grid"] = tuple(p.get("weights_grid", ()))
            if p["variables"] is not None:
                p["variables"] = list(p["variables"])
            model = cls(**p)
            model.validate_params()
            model.k_ = int(meta["k_"])
            radius = meta["radius_"]
            model.radius_ = None if radius is None else int(radius)
            model.variables_ = tuple(str(v) for v in meta["variables_"])
            model.validation_table_ = list(meta["validation_table_"])
            n_var = len(model.variables_)
            model.weights_ = str(meta.get("weights_", model.weights))
            model._set_per_variable(
                list(
                    zip(
                        meta.get("k_per_var_", [model.k_] * n_var),
                        meta.get("radius_per_var_", [model.radius_] * n_var),
                        meta.get("weights_per_var_", [model.weights_] * n_var),
                        strict=True,
                    )
                )
            )
            w = np.asarray(meta.get("combine_weights_", [1.0 / n_var] * n_var), dtype=np.float64)
            if w.shape != (n_var,) or len(model.k_per_var_) != n_var:
                raise ValueError(f"per-variable settings do not match {n_var} variables")
            model.combine_weights_ = w
            oof = meta.get("combine_oof_auprc_")
            model.combine_oof_auprc_ = float("nan") if oof is None else float(oof)
            model.variable_table_ = list(meta.get("variable_table_", []))
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


def _json_float(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _flat_fraction(X, cols: list[int]) -> np.ndarray:
    """Per column: share of stays whose series is flat within its length (never observed in
    the window, so imputed, or one value carried forward): DTW cannot tell those apart."""
    lengths = np.asarray(X.lengths, dtype=np.int64)
    T = X.X.shape[1]
    inside = np.arange(T)[None, :] < lengths[:, None]
    out = []
    for c in cols:
        x = X.X[:, :, c].astype(np.float64)
        hi = np.where(inside, x, -np.inf).max(axis=1)
        lo = np.where(inside, x, np.inf).min(axis=1)
        out.append(float(np.mean(hi - lo == 0)))
    return np.asarray(out)
