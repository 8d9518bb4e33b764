"""The contract between the stages: `CohortDataset` serves the learners' views.

``CohortDataset.load(prepared_dir)`` reads and checks cohort, splits, normalisation and
observations (`data_prep.io` schemas). For horizon ``h``, a stay with (pseudo-)onset
``o`` sees the observations with ``start <= hour <= o - h``, ``start = max(0, o - W)``
(``W = window_hours``), with times relative to ``o - h``. Values are z-scored with the
split seed's training statistics (or ``normalisation_override``'s, for external
validation with another run's statistics).

* ``irregular(h, split, seed) -> (IrregularView, y)``: padded raw observations, sorted by
  time (then variable) within a stay.
* ``grid(h, split, seed) -> (GridView, y)``: ``grid_len = min(W, floor(o - h - start)) + 1``
  hourly points ``-(G-1) .. 0``; point ``g`` is the mean of the observations in
  ``(g - 1, g]`` (the first point also takes everything earlier in the window); then
  forward fill, leading gaps = 0, a variable never observed in the window = 0.

``split`` is "train" | "val" | "test" | "all" | None (None and "all" = every cohort
stay). Rows are ordered by ``stay_id``. The observations are sorted and encoded once at
load time, so each view is a few vectorised numpy passes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep import io
from data_prep.observations import variable_order
from data_prep.views import GridView, IrregularView

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class CohortDataset:
    """Cohort + observations + splits + normalisation, serving the two views."""

    def __init__(
        self,
        cohort: pd.DataFrame,
        splits: pd.DataFrame,
        normalisation: pd.DataFrame,
        observations: pd.DataFrame,
        window_hours: int = 48,
        normalisation_override: pd.DataFrame | None = None,
    ) -> None:
        """Build from in-memory tables (the `io` schemas); `load` is the usual entry point."""
        self.window_hours = int(window_hours)
        self.cohort = cohort.sort_values("stay_id", kind="stable").reset_index(drop=True)
        if self.cohort["stay_id"].duplicated().any():
            raise ValueError("cohort: column 'stay_id' must be unique")
        self.splits = splits
        self.normalisation = (
            normalisation_override if normalisation_override is not None else normalisation
        )
        self._override = normalisation_override is not None
        self.variables: tuple[str, ...] = variable_order(
            self.normalisation["variable"].astype(str).unique()
        )
        self.stay_id = self.cohort["stay_id"].to_numpy(np.int64)
        self.onset = self.cohort["onset_hour"].to_numpy(float)
        self.label = self.cohort["label"].to_numpy(np.int64)
        self._encode(observations)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        prepared_dir: str | Path,
        normalisation_override: pd.DataFrame | str | Path | None = None,
        window_hours: int | None = None,
    ) -> CohortDataset:
        """Read and check `prepared_dir`'s artifacts.

        `window_hours` defaults to the value recorded in attrition.json (params), else 48.
        `normalisation_override`: a normalisation table (or a path to another run's
        normalisation.parquet) whose variables and statistics replace this dataset's.
        """
        d = Path(prepared_dir)
        cohort = io.read_parquet(d / "cohort.parquet", io.COHORT)
        splits = io.read_parquet(d / "splits.parquet", io.SPLITS)
        norm = io.read_parquet(d / "normalisation.parquet", io.NORMALISATION)
        obs = io.read_parquet(d / "observations.parquet", io.OBSERVATIONS)
        if window_hours is None:
            window_hours = 48
            att = d / "attrition.json"
            if att.exists():
                window_hours = int(
                    json.loads(att.read_text()).get("params", {}).get("window_hours", 48)
                )
        if isinstance(normalisation_override, (str, Path)):
            normalisation_override = io.read_parquet(normalisation_override, io.NORMALISATION)
        return cls(cohort, splits, norm, obs, window_hours, normalisation_override)

    def _encode(self, observations: pd.DataFrame) -> None:
        """Sort once by (stay, hour, variable); keep the cohort's stays and known variables."""
        var_code = {v: i for i, v in enumerate(self.variables)}
        obs = observations
        row = pd.Index(self.stay_id).get_indexer(obs["stay_id"].to_numpy(np.int64))
        var = obs["variable"].astype(str).map(var_code).to_numpy()
        keep = (row >= 0) & ~pd.isna(var)
        self.n_unused_observations = int((~keep).sum())
        row = row[keep].astype(np.int64)
        var = var[keep].astype(np.int64)
        hour = obs["hour"].to_numpy(float)[keep]
        value = obs["value"].to_numpy(float)[keep]
        order = np.lexsort((var, hour, row))
        self._row, self._var, self._hour, self._value = (
            row[order],
            var[order],
            hour[order],
            value[order],
        )

    # ------------------------------------------------------------------ selection
    def stays_in(self, split: str | None = None, seed: int = 0) -> np.ndarray:
        """Stay ids (sorted) of `split` for split seed `seed`; None or "all" = every stay."""
        if split is None or split == "all":
            return self.stay_id.copy()
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, 'all' or None, got {split!r}")
        sp = self.splits
        seeds = sp["seed"].unique()
        if seed not in seeds:
            raise ValueError(
                f"seed: {seed} is not a split seed of this dataset (have {sorted(seeds.tolist())})"
            )
        ids = sp.loc[(sp["seed"] == seed) & (sp["split"] == split), "stay_id"].to_numpy(np.int64)
        return np.sort(ids)

    def _stats(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        nm = self.normalisation
        seeds = nm["seed"].unique()
        if seed in seeds:
            nm = nm[nm["seed"] == seed]
        elif self._override and len(seeds) == 1:
            nm = nm  # an external run's single seed applies to every seed here
        else:
            raise ValueError(
                f"seed: no normalisation statistics for seed {seed} (have {sorted(seeds.tolist())})"
            )
        s = nm.set_index(nm["variable"].astype(str))
        mean = s["mean"].reindex(list(self.variables)).to_numpy(float)
        std = s["std"].reindex(list(self.variables)).to_numpy(float)
        if np.isnan(mean).any() or np.isnan(std).any():
            raise ValueError(
                f"normalisation: a variable of {self.variables} lacks statistics for seed {seed}"
            )
        return mean, np.where(std > 0, std, 1.0)

    def _window(self, h: float, split: str | None, seed: int):
        """Selected cohort rows and the observation indices inside their windows at horizon h."""
        if h < 0:
            raise ValueError(f"horizon: expected >= 0, got {h}")
        ids = self.stays_in(split, seed)
        rows = np.searchsorted(self.stay_id, ids)
        selected = np.zeros(len(self.stay_id), bool)
        selected[rows] = True
        end = self.onset - h
        start = np.maximum(0.0, self.onset - self.window_hours)
        if np.any(end[rows] < start[rows]):
            bad = ids[end[rows] < start[rows]][0]
            raise ValueError(
                f"horizon {h}: stay {bad} has onset - h before the window start (onset too early)"
            )
        r = self._row
        inside = selected[r] & (self._hour >= start[r]) & (self._hour <= end[r])
        return rows, np.flatnonzero(inside), start, end

    def _y(self, rows: np.ndarray) -> np.ndarray:
        return self.label[rows].copy()

    # ------------------------------------------------------------------ views
    def irregular(
        self, h: float, split: str | None = "train", seed: int = 0
    ) -> tuple[IrregularView, np.ndarray]:
        """Padded irregular observations cut at onset - h (see module docstring)."""
        rows, idx, start, end = self._window(h, split, seed)
        mean, std = self._stats(seed)
        n = len(rows)
        pos_of_row = np.full(len(self.stay_id), -1, np.int64)
        pos_of_row[rows] = np.arange(n)
        r = pos_of_row[self._row[idx]]  # output row (idx is sorted by cohort row, as rows are)
        counts = np.bincount(r, minlength=n)
        m = max(1, int(counts.max()) if n else 1)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n else np.zeros(0, np.int64)
        col = np.arange(len(idx)) - first[r]
        var = self._var[idx]
        times = np.zeros((n, m), np.float32)
        var_idx = np.zeros((n, m), np.int64)
        values = np.zeros((n, m), np.float32)
        mask = np.zeros((n, m), bool)
        times[r, col] = self._hour[idx] - end[self._row[idx]]
        var_idx[r, col] = var
        values[r, col] = (self._value[idx] - mean[var]) / std[var]
        mask[r, col] = True
        view = IrregularView(
            times,
            var_idx,
            values,
            mask,
            self._grid_len(rows, start, end),
            self.stay_id[rows].copy(),
            self.variables,
        )
        return view, self._y(rows)

    def _grid_len(self, rows: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        span = np.floor(end[rows] - start[rows] + 1e-9)
        return (np.minimum(self.window_hours, span) + 1).astype(np.int64)

    def grid(
        self, h: float, split: str | None = "train", seed: int = 0, dtype: type = np.float32
    ) -> tuple[GridView, np.ndarray]:
        """Hourly grid cut at onset - h: cell means, z-scored, forward-filled (see module docstring)."""
        rows, idx, start, end = self._window(h, split, seed)
        mean, std = self._stats(seed)
        n, v = len(rows), len(self.variables)
        lengths = self._grid_len(rows, start, end)
        t = int(lengths.max()) if n else 1
        pos_of_row = np.full(len(self.stay_id), -1, np.int64)
        pos_of_row[rows] = np.arange(n)
        crow = self._row[idx]
        r_all = pos_of_row[crow]  # non-decreasing: idx and rows are both in cohort order
        X = np.full((n, t, v), np.nan, dtype)
        # chunks of stays bound the float64 temporaries (~5 arrays of chunk x T x V)
        chunk = max(1, self._GRID_CELLS // max(1, t * v))
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            lo, hi = np.searchsorted(r_all, [a, b])
            sl = slice(lo, hi)
            X[a:b] = self._grid_chunk(
                r_all[sl] - a, crow[sl], idx[sl], lengths[a:b], end, mean, std, t, v, dtype
            )
        view = GridView(X, lengths, self.stay_id[rows].copy(), self.variables)
        return view, self._y(rows)

    _GRID_CELLS = 8_000_000

    def _grid_chunk(self, r, crow, idx, lengths, end, mean, std, t, v, dtype) -> np.ndarray:
        n = len(lengths)
        var = self._var[idx]
        rel = self._hour[idx] - end[crow]  # <= 0
        # cell (g-1, g]; the tolerance keeps exact hours in their cell
        g = np.ceil(rel - 1e-9).astype(np.int64)
        pos = np.maximum(lengths[r] - 1 + g, 0)  # earlier than the first cell -> the first cell
        z = (self._value[idx] - mean[var]) / std[var]
        flat = (r * t + pos) * v + var
        size = n * t * v
        sums = np.bincount(flat, weights=z, minlength=size)
        cnts = np.bincount(flat, minlength=size)
        observed = (cnts > 0).reshape(n, t, v)
        cell = np.divide(sums, np.maximum(cnts, 1)).reshape(n, t, v)
        del sums, cnts
        # forward fill: index of the last observed cell at or before each time step
        last = np.where(observed, np.arange(t, dtype=np.int32)[None, :, None], np.int32(-1))
        np.maximum.accumulate(last, axis=1, out=last)
        filled = np.take_along_axis(cell, np.maximum(last, 0), axis=1)
        filled[last < 0] = 0.0  # leading gap / never observed = training mean
        X = filled.astype(dtype)
        X[np.arange(t)[None, :] >= lengths[:, None]] = np.nan
        return X
