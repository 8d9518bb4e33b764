"""SOFA's parameters, the dictionary's SOFA concepts, the scoring tables (pure, vectorised)
and the flat hourly grid the scores are written on (`data_prep.concepts.sofa`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_prep.concepts.dictionary import concepts
from data_prep.ids import locate


@dataclass(frozen=True)
class SofaParams:
    """The SOFA options of YAML section `labels` (built by `LabelParams.sofa`)."""

    sofa_lookback_hours: float = 24.0
    fio2_lookback_hours: float = 4.0
    fio2_lookahead_hours: float = 0.5  # FiO2 charted up to this long after the gas counts
    on_bad_rows: str = "error"  # "error" | "skip-and-count"


_D = concepts()
COMPONENTS = ("resp", "coag", "liver", "cardio", "cns", "renal")
SOFA_COLUMNS = ["stay_id", "hour", "sofa"] + [f"sofa_{c}" for c in COMPONENTS]
DEFAULT_FIO2 = 0.21
US_PER_HOUR = 3_600_000_000
TABLE = "events"  # the name of the input in messages and count keys
INTUBATED_TEXT = frozenset(t.strip().lower() for t in _D["gcs_verbal"].extra["intubated_text"])
_RANGE = {
    n: (_D[n].low, _D[n].high)
    for n in ("platelets", "bilirubin", "creatinine", "po2", "mbp", "fio2", "fio2_bloodgas")
}
ARTERIAL_CODE: int = _D["blood_gas_specimen"].extra["arterial_code"]
VENTILATION: tuple[str, ...] = _D.marked_by("ventilation")
VENT_HOLD_HOURS: float = _D["ventilation"].extra["hold_hours"]
GCS: tuple[str, ...] = ("gcs_total", "gcs_eye", "gcs_verbal", "gcs_motor")  # kind codes 0..3
VASOPRESSORS: tuple[str, ...] = tuple(c.name for c in _D.of_kind("vasopressor"))
# every concept hourly_sofa reads (the labels stage reads only these from events/)
SOFA_CONCEPTS: tuple[str, ...] = (
    "po2",
    "blood_gas_specimen",
    "fio2_bloodgas",
    "fio2",
    *VENTILATION,
    "platelets",
    "bilirubin",
    "creatinine",
    "mbp",
    *GCS,
    *VASOPRESSORS,
    "urine_output",
)
KNOWN_CONCEPTS = frozenset(_D.concepts)


# --------------------------------------------------------------------------------------
# scoring tables (pure, vectorised)
# --------------------------------------------------------------------------------------


def score_respiration(pf: np.ndarray, ventilated: np.ndarray) -> np.ndarray:
    """Respiration points from PaO2/FiO2 (mmHg) and ventilation status."""
    pf = np.asarray(pf, float)
    vent = np.asarray(ventilated, bool)
    s = np.select([pf < 100, pf < 200, pf < 300, pf < 400], [4, 3, 2, 1], 0)
    return np.where(vent, s, np.minimum(s, 2)).astype(np.int8)


def score_coagulation(platelets: np.ndarray) -> np.ndarray:
    """Coagulation points from platelets (10^3/uL)."""
    x = np.asarray(platelets, float)
    return np.select([x < 20, x < 50, x < 100, x < 150], [4, 3, 2, 1], 0).astype(np.int8)


def score_liver(bilirubin: np.ndarray) -> np.ndarray:
    """Liver points from bilirubin (mg/dL)."""
    x = np.asarray(bilirubin, float)
    return np.select([x >= 12, x >= 6, x >= 2, x >= 1.2], [4, 3, 2, 1], 0).astype(np.int8)


def score_map(mean_bp: np.ndarray) -> np.ndarray:
    """Cardiovascular points from mean arterial pressure alone (mmHg)."""
    return (np.asarray(mean_bp, float) < 70).astype(np.int8)


def score_vasopressor(drug: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Cardiovascular points of one infusion (drug name, rate in mcg/kg/min > 0)."""
    d = np.asarray(drug, object)
    r = np.asarray(rate, float)
    dopa, dobu = d == "dopamine", d == "dobutamine"
    adr = (d == "epinephrine") | (d == "norepinephrine")
    return np.select(
        [dopa & (r > 15), dopa & (r > 5), dopa, dobu, adr & (r > 0.1), adr], [4, 3, 2, 2, 4, 3], 0
    ).astype(np.int8)


def score_cns(gcs: np.ndarray) -> np.ndarray:
    """CNS points from the Glasgow coma scale total (3-15)."""
    x = np.asarray(gcs, float)
    return np.select([x < 6, x < 10, x < 13, x < 15], [4, 3, 2, 1], 0).astype(np.int8)


def score_creatinine(creatinine: np.ndarray) -> np.ndarray:
    """Renal points from creatinine (mg/dL)."""
    x = np.asarray(creatinine, float)
    return np.select([x >= 5, x >= 3.5, x >= 2, x >= 1.2], [4, 3, 2, 1], 0).astype(np.int8)


def score_urine(ml_per_24h: np.ndarray) -> np.ndarray:
    """Renal points from urine output (mL per 24 h)."""
    x = np.asarray(ml_per_24h, float)
    return np.select([x < 200, x < 500], [4, 3], 0).astype(np.int8)


def fio2_fraction(values: np.ndarray) -> np.ndarray:
    """FiO2 as a fraction: values > 1 are percentages."""
    v = np.asarray(values, float)
    return np.where(v > 1, v / 100.0, v)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _us(s: pd.Series) -> np.ndarray:
    """Timestamps as int64 microseconds (NaT -> INT64 min)."""
    return pd.to_datetime(s).to_numpy(dtype="datetime64[us]").astype(np.int64)


def _bad(
    mask: np.ndarray,
    df: pd.DataFrame,
    table: str,
    column: str,
    what: str,
    params: SofaParams,
    counts: dict[str, int],
    key: str,
) -> np.ndarray:
    """Raise or count structurally bad rows; returns the mask of rows to keep."""
    n = int(mask.sum())
    if n:
        if params.on_bad_rows == "error":
            row = df.index[np.flatnonzero(mask)[0]]
            raise ValueError(
                f"{table}: column {column!r}, row {row}: {what} "
                f"({n} such rows; labels.on_bad_rows=skip-and-count skips them)"
            )
        counts[key] = counts.get(key, 0) + n
    return ~mask


def _count(counts: dict[str, int], key: str, n: int) -> None:
    if n:
        counts[key] = counts.get(key, 0) + int(n)


class _Grid:
    """Flat hourly grid: per stay ``pad`` + ``pre`` + ``n_hours`` cells."""

    def __init__(self, stays: pd.DataFrame, lookback: int, pre: int):
        s = stays.sort_values("stay_id")
        self.stay_ids = s["stay_id"].to_numpy(np.int64)
        if len(np.unique(self.stay_ids)) != len(self.stay_ids):
            raise ValueError("stays: column 'stay_id': duplicated stay ids")
        self.intime = _us(s["intime"])
        outtime = _us(s["outtime"])
        los = (outtime - self.intime) / US_PER_HOUR
        self.n_hours = np.maximum(np.ceil(los), 0).astype(np.int64)
        self.pad, self.pre = lookback - 1, pre
        seg = self.pad + pre + self.n_hours
        self.seg_start = np.concatenate([[0], np.cumsum(seg)[:-1]]).astype(np.int64)
        self.origin = self.seg_start + self.pad + pre  # cell of hour 0
        self.size = int(seg.sum())

    def locate(self, stay_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(stay index, found mask) of each event's stay."""
        return locate(self.stay_ids, stay_id)

    def hours(self, idx: np.ndarray, t_us: np.ndarray) -> np.ndarray:
        """Hours since the stay's intime."""
        return (t_us - self.intime[idx]) / US_PER_HOUR

    def cells(self, idx: np.ndarray, hour_bin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cell index, inside-grid mask) of integer hour bins."""
        inside = (hour_bin >= -(self.pad + self.pre)) & (hour_bin < self.n_hours[idx])
        return self.origin[idx] + hour_bin, inside

    def output_cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(stay_id, hour, cell) of every output hour (-pre .. n_hours - 1)."""
        n_out = self.pre + self.n_hours
        rep = np.repeat(np.arange(len(self.stay_ids)), n_out)
        first = np.concatenate([[0], np.cumsum(n_out)[:-1]]).astype(np.int64)
        within = np.arange(int(n_out.sum()), dtype=np.int64) - np.repeat(first, n_out)
        hour = within - self.pre
        return self.stay_ids[rep], hour, self.origin[rep] + hour


def _put_max(arr: np.ndarray, cells: np.ndarray, score: np.ndarray) -> None:
    """arr[cells] = max(arr[cells], score), by ascending score level (no ufunc.at)."""
    for level in range(1, 5):
        sel = score == level
        if sel.any():
            c = cells[sel]
            arr[c] = np.maximum(arr[c], level)


def _window_max(arr: np.ndarray, lookback: int) -> np.ndarray:
    """out[i] = max(arr[i - lookback + 1 .. i]); valid for i >= lookback - 1.

    Sparse-table doubling: maxima over windows of 1, 2, 4, .. w <= lookback cells take
    log2(lookback) vectorised passes, and the window of `lookback` is the max of two
    overlapping windows of w. (A strided reduction over a sliding-window view costs a
    short inner loop of `lookback` per cell, ~5x slower.)
    """
    out = np.zeros_like(arr)
    n = len(arr)
    if n < lookback or lookback < 1:
        return out
    p, w = arr, 1
    while 2 * w <= lookback:
        q = p.copy()
        np.maximum(p[w:], p[:-w], out=q[w:])
        p, w = q, 2 * w
    rest = lookback - w  # 0 <= rest < w: second window ends `rest` cells earlier
    if rest:
        out[lookback - 1 :] = np.maximum(p[lookback - 1 :], p[w - 1 : n - rest])
    else:
        out[lookback - 1 :] = p[lookback - 1 :]
    return out
