"""Every-hour windows for online evaluation: the same views as `CohortDataset`, any (stay, hour).

A window (stay s, hour t) holds the observations of s with ``start <= hour <= t``,
``start = max(0, t - W)``, times relative to t, z-scored with the given statistics, exactly
as `CohortDataset` cuts a cohort stay at horizon 0 with onset = t (a test checks that the two
agree; at h > 0 the training windows start at onset - W, so they are W - h hours long, and
the online models are the h0 ones). Nothing after t is ever in the window. Observations are sorted once by
(stay, hour, variable), so a window is a contiguous slice and a batch of windows is built
with a few numpy passes (one index matrix), not one Python object per window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_prep.views import GridView, IrregularView

_GRID_CELLS = 8_000_000  # bound on batch x T x V float64 temporaries of the grid


class OnlineWindows:
    """All observations of all stays, encoded once; `irregular` / `grid` cut windows in batches."""

    def __init__(
        self, observations: pd.DataFrame, variables: tuple[str, ...], window_hours: int
    ) -> None:
        """`observations`: long table (stay_id, hour, variable, value); unknown variables are dropped
        and counted in `n_unused_observations`."""
        self.variables = tuple(variables)
        self.window_hours = int(window_hours)
        code = {v: i for i, v in enumerate(self.variables)}
        var = observations["variable"].astype(str).map(code).to_numpy()
        keep = ~pd.isna(var)
        self.n_unused_observations = int((~keep).sum())
        sid = observations["stay_id"].to_numpy(np.int64)[keep]
        hour = observations["hour"].to_numpy(float)[keep]
        value = observations["value"].to_numpy(float)[keep]
        var = var[keep].astype(np.int64)
        self.stay_ids, row = np.unique(sid, return_inverse=True)
        order = np.lexsort((var, hour, row))
        self._row, self._hour, self._var, self._value = (
            row[order],
            hour[order],
            var[order],
            value[order],
        )
        # one sortable key per observation: stays in blocks of `_span` hours
        self._hmin = float(hour.min()) if len(hour) else 0.0
        self._span = float(hour.max() - self._hmin + self.window_hours + 2) if len(hour) else 1.0
        self._key = self._row * self._span + (self._hour - self._hmin)

    def _slices(self, stay_id: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) observation indices of each window (empty for a stay without observations)."""
        row = np.searchsorted(self.stay_ids, stay_id)
        known = (row < len(self.stay_ids)) & (
            self.stay_ids[np.minimum(row, len(self.stay_ids) - 1)] == stay_id
        )
        start = np.maximum(0.0, t - self.window_hours)
        base = row * self._span - self._hmin
        # clip to the stay's own block: an hour outside the stay's span must not reach a neighbour
        lo = np.searchsorted(self._key, base + np.maximum(start, self._hmin), side="left")
        hi = np.searchsorted(
            self._key, base + np.minimum(t, self._hmin + self._span - 1), side="right"
        )
        hi = np.where(known & (t >= start), np.maximum(hi, lo), lo)
        return lo, hi

    def grid_len(self, t: np.ndarray) -> np.ndarray:
        """Hourly grid points ending at t (the `CohortDataset` rule)."""
        start = np.maximum(0.0, t - self.window_hours)
        span = np.floor(t - start + 1e-9)
        return (np.minimum(self.window_hours, span) + 1).astype(np.int64)

    def _arrays(self, stay_id, hour, mean, std):
        """float64 (times, var, z, mask, grid_len) of the windows, padded to the longest."""
        stay_id = np.asarray(stay_id, np.int64)
        t = np.asarray(hour, float)
        lo, hi = self._slices(stay_id, t)
        counts = hi - lo
        m = max(1, int(counts.max()) if len(stay_id) else 1)
        col = np.arange(m)
        mask = col[None, :] < counts[:, None]
        if len(self._hour) == 0:
            zeros = np.zeros(mask.shape)
            return zeros, zeros.astype(np.int64), zeros, mask, self.grid_len(t)
        idx = np.where(mask, lo[:, None] + col[None, :], 0)
        var = np.where(mask, self._var[idx], 0)
        times = np.where(mask, self._hour[idx] - t[:, None], 0.0)
        z = np.where(mask, (self._value[idx] - mean[var]) / std[var], 0.0)
        return times, var, z, mask, self.grid_len(t)

    def irregular(
        self, stay_id: np.ndarray, hour: np.ndarray, mean: np.ndarray, std: np.ndarray
    ) -> IrregularView:
        """Padded observations of the windows (stay_id[i], hour[i]), one row each."""
        times, var, z, mask, grid_len = self._arrays(stay_id, hour, mean, std)
        return IrregularView(
            times.astype(np.float32),
            var.astype(np.int64),
            z.astype(np.float32),
            mask,
            grid_len,
            np.asarray(stay_id, np.int64).copy(),
            self.variables,
        )

    def grid(
        self,
        stay_id: np.ndarray,
        hour: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        dtype: type = np.float32,
    ) -> GridView:
        """Hourly grid of the windows (cell means, forward fill, leading gaps 0), one row each."""
        times, var, z, mask, grid_len = self._arrays(stay_id, hour, mean, std)
        X = _grid(times, var, z, mask, grid_len, len(self.variables), dtype)
        return GridView(X, grid_len, np.asarray(stay_id, np.int64).copy(), self.variables)


def grid_from_irregular(view: IrregularView, dtype: type = np.float32) -> GridView:
    """The `GridView` of an irregular view's observations (float32 inputs: prefer
    `OnlineWindows.grid`, which bins the float64 times exactly as `CohortDataset.grid`)."""
    X = _grid(
        view.times.astype(np.float64),
        view.var_idx,
        view.values.astype(np.float64),
        view.mask,
        view.grid_len,
        view.n_variables,
        dtype,
    )
    return GridView(X, view.grid_len.copy(), view.stay_id.copy(), view.variables)


def _grid(times, var_idx, values, mask, lengths, v, dtype) -> np.ndarray:
    """The `CohortDataset.grid` rule: cell (g-1, g] means, earlier observations into the first
    cell, forward fill, leading gaps and never-observed variables = 0, NaN past each length."""
    n = len(lengths)
    t = int(lengths.max()) if n else 1
    X = np.full((n, t, v), np.nan, dtype)
    chunk = max(1, _GRID_CELLS // max(1, t * v))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        r, c = np.nonzero(mask[a:b])
        rel = times[a:b][r, c]
        var = var_idx[a:b][r, c]
        z = values[a:b][r, c]
        nb = b - a
        # cell (g-1, g]; the tolerance keeps exact hours in their cell
        g = np.ceil(rel - 1e-9).astype(np.int64)
        pos = np.maximum(lengths[a:b][r] - 1 + g, 0)
        flat = (r * t + pos) * v + var
        size = nb * t * v
        sums = np.bincount(flat, weights=z, minlength=size)
        cnts = np.bincount(flat, minlength=size)
        observed = (cnts > 0).reshape(nb, t, v)
        cell = np.divide(sums, np.maximum(cnts, 1)).reshape(nb, t, v)
        last = np.where(observed, np.arange(t, dtype=np.int32)[None, :, None], np.int32(-1))
        np.maximum.accumulate(last, axis=1, out=last)
        filled = np.take_along_axis(cell, np.maximum(last, 0), axis=1)
        filled[last < 0] = 0.0
        out = filled.astype(dtype)
        out[np.arange(t)[None, :] >= lengths[a:b, None]] = np.nan
        X[a:b] = out
    return X


def batches(n: int, size: int):
    """Slices of at most `size` consecutive rows covering range(n)."""
    for a in range(0, n, max(1, size)):
        yield slice(a, min(n, a + max(1, size)))
