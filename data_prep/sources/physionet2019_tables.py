"""PhysioNet 2019 table building: the parsed columns -> stays, onsets, labels_hourly,
events and observations (`data_prep.sources.physionet2019`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from data_prep.concepts.variables import PHYSIONET_EXTRA, VARIABLES
from data_prep.sepsis3 import LABEL_COLUMNS, ONSET_COLUMNS

EPOCH = pd.Timestamp("2100-01-01")
PHYSIONET_SOURCE = "physionet2019"
ONSET_SHIFT_HOURS = 6
ONSET_BEFORE_DATA = -1.0  # onset_hour of stays labelled septic from their first row
SOFA_UNKNOWN = -1  # the SOFA columns of labels_hourly (non-nullable int8; no SOFA published)


def _variable_map() -> list[tuple[str, str, float, float]]:
    """(PhysioNet column, variable name, low, high) for every time-varying column."""
    out = [(v.physionet, v.name, float(v.low), float(v.high)) for v in VARIABLES if v.physionet]
    out += [
        (col, name, float(lo), float(hi)) for col, (name, _unit, lo, hi) in PHYSIONET_EXTRA.items()
    ]
    return out


VARIABLE_MAP = _variable_map()


@dataclass
class PhysioNetTables:
    """The prepared tables of one PhysioNet 2019 training set (CONTRACTS.md schemas)."""

    stays: pd.DataFrame
    onsets: pd.DataFrame
    labels_hourly: pd.DataFrame
    diagnoses: pd.DataFrame
    observations: pd.DataFrame
    dropped_values: dict[str, int] = field(default_factory=dict)
    events: pd.DataFrame | None = None  # io.EVENTS: every non-missing value, as read
    attrition: list[dict] = field(default_factory=list)
    bad_rows: list[str] = field(default_factory=list)  # one message per skipped row / file

    @property
    def source_attrition(self) -> list[dict]:
        """The reader's counts, for `prepare_from_tables(source_attrition=...)`."""
        return self.attrition


def _build(
    stay_ids: np.ndarray, file_of_row: np.ndarray, cols: dict[str, np.ndarray], progress: bool
) -> PhysioNetTables:
    """Vectorised table construction from the parsed columns (rows grouped by file, in order)."""
    present = np.unique(file_of_row)
    # rows of each file are contiguous and ordered: first / last row index per file
    starts = np.searchsorted(file_of_row, present, side="left")
    ends = np.searchsorted(file_of_row, present, side="right")
    sid_row = stay_ids[file_of_row]
    sid = stay_ids[present]
    icu, lab = cols["ICULOS"], cols["SepsisLabel"]

    # onsets: first labelled row per file
    pos_rows = np.flatnonzero(lab == 1)
    pos_files, first_pos = np.unique(file_of_row[pos_rows], return_index=True)
    first_pos_row = pos_rows[first_pos]
    onset_by_file = np.full(len(stay_ids), np.nan)
    onset_by_file[pos_files] = icu[first_pos_row] + ONSET_SHIFT_HOURS
    at_start = np.zeros(len(stay_ids), bool)
    at_start[pos_files] = first_pos_row == starts[np.searchsorted(present, pos_files)]
    onset_by_file[at_start] = ONSET_BEFORE_DATA
    onset = onset_by_file[present]

    def static(c: str) -> np.ndarray:  # first non-missing value of the stay (constant in set A)
        v = cols[c]
        ok = np.isfinite(v)
        idx = np.flatnonzero(ok)
        f_idx = np.searchsorted(idx, starts)  # first finite row at or after the file's start
        out = np.full(len(present), np.nan)
        has = f_idx < len(idx)
        has[has] &= idx[f_idx[has]] < ends[has]
        out[has] = v[idx[f_idx[has]]]
        return out

    gender = static("Gender")
    u1, u2 = static("Unit1"), static("Unit2")
    los = icu[ends - 1].astype(float)
    unit = np.where(u1 == 1, "MICU", np.where(u2 == 1, "SICU", None))
    stays = pd.DataFrame(
        {
            "stay_id": sid,
            "patient_id": sid,
            "hadm_id": pd.array([pd.NA] * len(sid), dtype="Int64"),
            "source": PHYSIONET_SOURCE,
            "intime": pd.Series(EPOCH, index=range(len(sid))).astype("datetime64[us]"),
            "outtime": (EPOCH + pd.to_timedelta(los, unit="h")).astype("datetime64[us]"),
            "los_hours": los,
            "age": static("Age"),
            "gender": pd.array(
                np.where(gender == 1, "M", np.where(gender == 0, "F", None)), dtype="string"
            ),
            "dbsource": pd.array([None] * len(sid), dtype="string"),
            "unit": pd.array(unit, dtype="string"),
            "died": pd.array([None] * len(sid), dtype="boolean"),
            "positive_at_start": at_start[present],
            "_has_label": np.isin(present, pos_files),
        }
    )

    onsets = pd.DataFrame({c: pd.Series([None] * len(sid), dtype="object") for c in ONSET_COLUMNS})
    onsets["stay_id"] = sid
    for c in ("si_time", "antibiotic_time", "culture_time", "onset_time"):
        onsets[c] = pd.Series(pd.NaT, index=onsets.index, dtype="datetime64[us]")
    for c in ("antibiotic", "culture_specimen", "components_rose"):
        onsets[c] = pd.array([None] * len(sid), dtype="string")
    for c in ("sofa_baseline", "sofa_at_onset"):
        onsets[c] = pd.array([None] * len(sid), dtype="Int8")
    onsets["si_hour"] = np.nan
    onsets["onset_hour"] = onset
    onsets = onsets[ONSET_COLUMNS]

    row_onset = onset_by_file[file_of_row]
    n = len(icu)
    labels = {"stay_id": sid_row, "hour": icu.astype(np.int32)}
    for c in LABEL_COLUMNS:
        if c.startswith("sofa"):
            labels[c] = np.full(n, SOFA_UNKNOWN, np.int8)
    labels["si_window"] = np.zeros(n, bool)
    labels["sepsis"] = np.isfinite(row_onset) & (icu >= row_onset)
    labels_hourly = pd.DataFrame(labels)[LABEL_COLUMNS]

    # observations: the shared builder over the events (the dictionary's ranges and FiO2
    # rule, written once for every source)
    from data_prep.observations import observations_from_events

    events = _events(sid_row, icu, cols)
    observations, dropped_all = observations_from_events(events, stays)
    dropped = dropped_all["out_of_range"]
    empty_diag = pd.DataFrame({"hadm_id": pd.Series(dtype="int64")})  # no sepsis codes
    return PhysioNetTables(
        stays=stays,
        onsets=onsets,
        labels_hourly=labels_hourly,
        diagnoses=empty_diag,
        observations=observations,
        dropped_values={k: v for k, v in dropped.items() if v},
        events=events,
    )


def _events(sid_row: np.ndarray, icu: np.ndarray, cols: dict[str, np.ndarray]) -> pd.DataFrame:
    """io.EVENTS rows: one per non-missing value of a mapped column, as read (the observation
    builder applies the dictionary's ranges and the FiO2 rule, as for every source), at
    time = EPOCH + ICULOS hours, in row order then column order."""
    parts = []
    for code, (col, _name, _lo, _hi) in enumerate(VARIABLE_MAP):
        rows = np.flatnonzero(np.isfinite(cols[col]))
        parts.append((rows, np.full(len(rows), code, np.int16)))
    rows = np.concatenate([p[0] for p in parts])
    codes = np.concatenate([p[1] for p in parts])
    order = np.lexsort((codes, rows))
    rows, codes = rows[order], codes[order]
    vals = np.empty(len(rows))
    for code, (col, _name, _lo, _hi) in enumerate(VARIABLE_MAP):
        sel = codes == code
        vals[sel] = cols[col][rows[sel]]
    hours_us = np.round(icu[rows] * 3_600_000_000).astype(np.int64)
    return pd.DataFrame(
        {
            "stay_id": sid_row[rows],
            "time": np.datetime64(EPOCH.to_datetime64(), "us") + hours_us.astype("timedelta64[us]"),
            "concept": pd.Categorical.from_codes(codes, categories=[m[1] for m in VARIABLE_MAP]),
            "value": vals,
            "end_time": pd.Series(pd.NaT, index=range(len(rows)), dtype="datetime64[us]"),
            "text": pd.array([None] * len(rows), dtype="string"),
        }
    )
