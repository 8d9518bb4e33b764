"""The two dataset views the learners consume, shared by `data_prep.dataset` and `models`.

Both views describe the same stays, cut at onset - h (no observation after the prediction
time is ever present). Times are in hours relative to the END of the window (the
prediction time), so every time is <= 0 and a stay's hourly grid is
``-(G-1), ..., -1, 0`` with ``G = grid_len``. Grid point ``g`` summarises the hour
``(g - 1, g]``; the first grid point also takes anything earlier in the window.

* `IrregularView` - padded raw observations for the MGP adapter (values z-scored with the
  training split's statistics).
* `GridView` - stays x hours x variables on the hourly grid, z-scored, forward-filled,
  leading gaps = 0 (the training mean), never-observed variable = 0. Left-aligned: row
  ``i`` holds its ``lengths[i]`` grid points at ``X[i, :lengths[i]]`` (earliest first);
  entries past the length are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


def _take(obj, idx):
    kw = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        kw[f.name] = v[idx] if isinstance(v, np.ndarray) and v.ndim >= 1 else v
    return type(obj)(**kw)


@dataclass
class IrregularView:
    """Padded irregular observations, one row per stay."""

    times: np.ndarray  # (n, M) float32, hours relative to prediction time (<= 0); pad 0
    var_idx: np.ndarray  # (n, M) int64 in [0, n_variables); pad 0
    values: np.ndarray  # (n, M) float32, z-scored; pad 0
    mask: np.ndarray  # (n, M) bool, True where an observation is real
    grid_len: np.ndarray  # (n,) int64 >= 1, hourly grid points ending at time 0
    stay_id: np.ndarray  # (n,) int64
    variables: tuple[str, ...]  # names, index = var_idx

    view = "irregular"

    def __len__(self) -> int:
        return len(self.stay_id)

    @property
    def n_variables(self) -> int:
        return len(self.variables)

    def subset(self, idx) -> IrregularView:
        """Rows `idx` (indices or boolean mask); trailing all-padding columns are kept."""
        return _take(self, idx)

    def validate(self) -> None:
        """Raise ValueError naming the field when the arrays disagree with the contract."""
        n, m = self.times.shape
        for name in ("var_idx", "values", "mask"):
            if getattr(self, name).shape != (n, m):
                raise ValueError(
                    f"IrregularView.{name} has shape {getattr(self, name).shape}, expected {(n, m)}"
                )
        for name in ("grid_len", "stay_id"):
            if getattr(self, name).shape != (n,):
                raise ValueError(
                    f"IrregularView.{name} has shape {getattr(self, name).shape}, expected {(n,)}"
                )
        if np.any(self.times[self.mask] > 1e-6):
            raise ValueError(
                "IrregularView.times: observation after the prediction time (time > 0)"
            )
        if np.any(self.grid_len < 1):
            raise ValueError("IrregularView.grid_len must be >= 1")
        if self.mask.any() and (
            self.var_idx[self.mask].max() >= len(self.variables)
            or self.var_idx[self.mask].min() < 0
        ):
            raise ValueError("IrregularView.var_idx out of range of variables")


@dataclass
class GridView:
    """Hourly imputed grid, one row per stay (left-aligned, NaN after each length)."""

    X: np.ndarray  # (n, T, V) float32 (or float64)
    lengths: np.ndarray  # (n,) int64, 1 <= lengths <= T
    stay_id: np.ndarray  # (n,) int64
    variables: tuple[str, ...]

    view = "grid"

    def __len__(self) -> int:
        return len(self.stay_id)

    @property
    def n_variables(self) -> int:
        return len(self.variables)

    def subset(self, idx) -> GridView:
        return _take(self, idx)

    def validate(self) -> None:
        n, t, v = self.X.shape
        if v != len(self.variables):
            raise ValueError(f"GridView.X has {v} variables, expected {len(self.variables)}")
        if self.lengths.shape != (n,) or np.any(self.lengths < 1) or np.any(self.lengths > t):
            raise ValueError("GridView.lengths must be (n,) with 1 <= length <= T")
        for i in range(n):
            if np.isnan(self.X[i, : self.lengths[i]]).any():
                raise ValueError(
                    f"GridView.X row {i} (stay {self.stay_id[i]}) has NaN inside its length"
                )


def random_irregular_view(
    n: int = 20,
    n_variables: int = 4,
    max_obs: int = 30,
    max_grid: int = 12,
    seed: int = 0,
    signal: float = 0.0,
    y: np.ndarray | None = None,
) -> tuple[IrregularView, np.ndarray]:
    """A small random view with labels, for tests. `signal` shifts positives' values up."""
    rng = np.random.default_rng(seed)
    if y is None:
        y = (rng.random(n) < 0.4).astype(np.int64)
        y[:2] = [0, 1]
    grid_len = rng.integers(1, max_grid + 1, n)
    n_obs = rng.integers(1, max_obs + 1, n)
    times = np.zeros((n, max_obs), np.float32)
    var_idx = np.zeros((n, max_obs), np.int64)
    values = np.zeros((n, max_obs), np.float32)
    mask = np.zeros((n, max_obs), bool)
    for i in range(n):
        k = n_obs[i]
        times[i, :k] = -rng.random(k) * (grid_len[i] - 1)
        var_idx[i, :k] = rng.integers(0, n_variables, k)
        values[i, :k] = rng.normal(signal * y[i], 1.0, k)
        mask[i, :k] = True
    view = IrregularView(
        times,
        var_idx,
        values,
        mask,
        grid_len.astype(np.int64),
        np.arange(1000, 1000 + n, dtype=np.int64),
        tuple(f"v{j}" for j in range(n_variables)),
    )
    return view, y


def random_grid_view(
    n: int = 20,
    n_variables: int = 3,
    max_len: int = 12,
    seed: int = 0,
    signal: float = 0.0,
    y: np.ndarray | None = None,
    equal_length: bool = False,
) -> tuple[GridView, np.ndarray]:
    """A small random grid view with labels, for tests."""
    rng = np.random.default_rng(seed)
    if y is None:
        y = (rng.random(n) < 0.4).astype(np.int64)
        y[:2] = [0, 1]
    lengths = np.full(n, max_len) if equal_length else rng.integers(1, max_len + 1, n)
    X = np.full((n, max_len, n_variables), np.nan, np.float32)
    for i in range(n):
        walk = np.cumsum(rng.normal(0, 0.5, (lengths[i], n_variables)), axis=0)
        X[i, : lengths[i]] = walk + signal * y[i]
    view = GridView(
        X,
        lengths.astype(np.int64),
        np.arange(1000, 1000 + n, dtype=np.int64),
        tuple(f"v{j}" for j in range(n_variables)),
    )
    return view, y
