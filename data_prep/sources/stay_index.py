"""Vectorised lookup of ICU stays for the streaming source readers.

`StayIndex` finds the stay of event rows by stay id (with the stay's time window) or, for
tables without a stay id (labs), by subject and time; `FirstPerStay` keeps the earliest value
per stay; `keep_known_stays` filters a batch to the rows of known stays.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_prep.ids import locate
from data_prep.sources.csv_stream import US_PER_HOUR, Batch, TableReport, col_us, ids


class StayIndex:
    """Vectorised lookup of stays by ICU stay id, and by subject and time (for labs).

    `stays` has columns stay_id, patient_id, intime and outtime (datetime, possibly missing).
    """

    def __init__(self, stays: pd.DataFrame):
        s = stays.sort_values("stay_id")
        self.ids = s["stay_id"].to_numpy(np.int64)
        self.intime = col_us(s["intime"], np.iinfo(np.int64).max // 2)
        self.outtime = col_us(s["outtime"], np.iinfo(np.int64).max // 2)
        self.intime_known = s["intime"].notna().to_numpy()
        self.outtime_known = s["outtime"].notna().to_numpy()
        # Stay ids are dense in MIMIC-III (200000-299999): a lookup table beats a binary search.
        self.lut: np.ndarray | None = None
        if len(self.ids):
            self.lut_min = int(self.ids[0])
            span = int(self.ids[-1]) - self.lut_min + 1
            if span <= 10 * len(self.ids) + 1_000_000:
                self.lut = np.full(span, -1, dtype=np.int32)
                self.lut[self.ids - self.lut_min] = np.arange(len(self.ids), dtype=np.int32)
        self._windows: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] = {}
        # by subject: sorted by (subject, intime)
        k = stays[stays["intime"].notna()].sort_values(["patient_id", "intime"])
        self.k_subject = k["patient_id"].fillna(-2).to_numpy(np.int64)
        self.k_stay = k["stay_id"].to_numpy(np.int64)
        self.k_in = col_us(k["intime"], 0)
        self.k_out = col_us(k["outtime"], np.iinfo(np.int64).max // 2)

    def by_id(self, stay: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, position in the sorted stay arrays) for stay ids (-1 = null)."""
        if self.lut is not None:
            off = stay - self.lut_min
            inside = (off >= 0) & (off < len(self.lut))
            pos = self.lut[np.where(inside, off, 0)]
            found = inside & (pos >= 0)
            return found, np.where(found, pos, 0)
        pos, found = locate(self.ids, stay)
        return found, pos

    def in_window(
        self, pos: np.ndarray, t: np.ndarray, before_h: float, after_h: float
    ) -> np.ndarray:
        """Whether times `t` (us) lie in [intime - before, outtime + after] of stays at `pos`."""
        key = (before_h, after_h)
        if key not in self._windows:  # unknown bounds become open ends
            big = np.iinfo(np.int64).max
            lo = np.where(self.intime_known, self.intime - int(before_h * US_PER_HOUR), -big)
            hi = np.where(self.outtime_known, self.outtime + int(after_h * US_PER_HOUR), big)
            self._windows[key] = (lo, hi)
        lo, hi = self._windows[key]
        return (t >= lo[pos]) & (t <= hi[pos])

    def by_subject_time(self, subject: np.ndarray, t: np.ndarray, lookback_h: float) -> np.ndarray:
        """Stay id of the same subject with intime - lookback <= t <= outtime, else -1.

        When windows of a subject's stays overlap, the stay with the latest admission wins;
        the one before it is tried when the latest does not contain t.
        """
        out = np.full(len(t), -1, dtype=np.int64)
        if not len(self.k_stay) or not len(t):
            return out
        lb = int(lookback_h * US_PER_HOUR)
        lo_subj = np.searchsorted(self.k_subject, subject, side="left")
        hi_subj = np.searchsorted(self.k_subject, subject, side="right")
        # among the subject's stays (a contiguous block sorted by intime), the last one with
        # intime - lb <= t; if it ended before t, the one before it (overlapping windows)
        for back in (0, 1):
            todo = out < 0
            if not todo.any():
                break
            lo_s, hi_s, tt = lo_subj[todo], hi_subj[todo], t[todo]
            cand = self._last_start_le(lo_s, hi_s, tt + lb) - back
            ok = (cand >= lo_s) & (cand < hi_s)
            c = np.where(ok, cand, 0)
            ok &= (self.k_in[c] - lb <= tt) & (tt <= self.k_out[c])
            res = out[todo]
            res[ok] = self.k_stay[c[ok]]
            out[todo] = res
        return out

    def _last_start_le(self, lo: np.ndarray, hi: np.ndarray, t: np.ndarray) -> np.ndarray:
        """For each row, the last position p in [lo, hi) with k_in[p] <= t (lo - 1 if none)."""
        # vectorised binary search inside each subject's block
        a, b = lo.copy(), hi.copy()  # invariant: answer in [a - 1, b - 1]
        while True:
            active = a < b
            if not active.any():
                break
            mid = (a + b) // 2
            midc = np.where(active, mid, 0)
            go_right = active & (self.k_in[midc] <= t)
            a = np.where(go_right, mid + 1, a)
            b = np.where(active & ~go_right, mid, b)
        return a - 1


class FirstPerStay:
    """Running first (earliest time) weight per stay in arrays over the stay index: O(stays) memory."""

    def __init__(self, index: StayIndex) -> None:
        self.index = index
        self.clear()

    def clear(self) -> None:
        """Forget everything (the table is being re-read)."""
        self.t = np.full(len(self.index.ids), np.iinfo(np.int64).max, dtype=np.int64)
        self.w = np.full(len(self.index.ids), np.nan)

    def add(self, stay: np.ndarray, t: np.ndarray, w: np.ndarray) -> None:
        """Merge candidate (stay id, time us, weight) rows; unknown stays are ignored."""
        found, pos = self.index.by_id(stay)
        pos, t, w = pos[found], t[found], w[found]
        if not len(pos):
            return
        before = self.t.copy()
        np.minimum.at(self.t, pos, t)
        better = (t == self.t[pos]) & (t < before[pos])
        # among rows tying at the new earliest time, the first one in file order wins
        order = np.flatnonzero(better)[::-1]
        self.w[pos[order]] = w[order]

    def result(self) -> pd.DataFrame:
        """(stay_id, weight_kg), one row per stay with a weight."""
        has = ~np.isnan(self.w)
        return pd.DataFrame({"stay_id": self.index.ids[has], "weight_kg": self.w[has]})


def keep_known_stays(b: Batch, tr: TableReport, index: StayIndex, column: str) -> np.ndarray:
    """Keep the rows whose stay id `column` is a known stay (others counted as unknown_stay);
    their positions in `index`."""
    found, pos = index.by_id(ids(b[column]))
    b.filter(found)
    tr.drop("unknown_stay", int((~found).sum()))
    return pos[found]
