"""Hourly SOFA score (six organ systems) for every hour of every ICU stay, vectorised.

PIPELINE.md section 1. Hour ``k`` is ``[k, k + 1)`` hours after ``intime``; SOFA at hour
``k`` uses data with ``time`` in ``[intime + k + 1 - L, intime + k + 1)`` (``L`` =
``sofa_lookback_hours``, 24 by default). Each component is its worst score in that window;
a component without data in the window scores 0 (the other components are still scored:
the reference code zeroed the whole SOFA of such hours, which is not reproduced).

Inputs are one events frame (``io.EVENTS``: stay_id, time, concept, value, end_time, text)
read by concept name only (``dictionary.yaml``); values are in the concept's unit, as the
source's reader wrote them. No item ID or source table reaches this module.

Implementation: one flat int8 array holds, per stay, ``L - 1`` padding hours, the optional
pre-ICU hours (``pre_hours``) and the stay's hours. Each event is binned to
``floor(hours since intime)``; the per-hour maximum of every component is written by
fancy indexing, the trailing-window maximum is a sliding-window max over the flat array
(the padding keeps windows inside their stay), and 24-h urine sums are cumulative-sum
differences. No Python loop over hours or stays.

Component rules (choices documented here):
* respiration: each arterial PaO2 (concept ``po2``; a draw typed venous, mixed or central
  venous by a ``blood_gas_specimen`` event at the same instant is dropped, an untyped one
  kept) is divided by the FiO2 (``fio2`` or ``fio2_bloodgas``; a value > 1 is a percentage
  and divided by 100; valid fractions 0.21-1.0) charted nearest to the gas within
  ``fio2_lookback_hours`` (4 h) before and ``fio2_lookahead_hours`` (30 min) after it (the
  highest FiO2 wins among simultaneous ones; equal distances prefer the earlier one).
  Without any FiO2 the gas is scored with FiO2 = 0.21 (room air): true FiO2 is never below
  0.21, so this P/F is an upper bound and the score a lower bound of the true one - never
  worse than ignoring the gas. Points <400:1, <300:2, <200:3 and <100:4 only when
  ventilated (any event of the concepts marking ``ventilation`` within its ``hold_hours``
  before the gas); without ventilation the score is capped at 2.
* coagulation: ``platelets`` <150/<100/<50/<20 -> 1/2/3/4.
* liver: ``bilirubin`` >=1.2/>=2/>=6/>=12.
* cardiovascular: ``mbp`` <70 -> 1; vasopressor infusions (events of kind vasopressor,
  value = rate > 0 mcg/kg/min) count in every hour their ``[time, end_time)`` touches:
  dopamine <=5 or any dobutamine -> 2; dopamine >5, epinephrine <=0.1 or norepinephrine
  <=0.1 -> 3; dopamine >15, epinephrine >0.1 or norepinephrine >0.1 -> 4.
* CNS: ``gcs_total`` or the sum of ``gcs_eye``/``gcs_verbal``/``gcs_motor`` charted at the
  same instant; a verbal whose text is one of the dictionary's ``intubated_text`` ("No
  Response-ETT", "1.0 ET/Trach") makes GCS 15 at that instant (mimic-code convention:
  sedated/intubated patients are not scored as comatose). 13-14:1, 10-12:2, 6-9:3, <6:4.
* renal: ``creatinine`` >=1.2/>=2/>=3.5/>=5; ``urine_output`` (negative volumes are
  irrigant instilled, subtracted) summed over the window (scaled to mL/24 h when ``L`` !=
  24) <500 -> 3, <200 -> 4, scored only from hour ``L - 1`` on (the stay observed for a full
  window) and only when at least one urine row is in the window (no rows = no data, not
  anuria).

Implausible values (NaN, outside the concept's range in the dictionary) are dropped and
counted. Structural problems (unknown stay, missing time, end_time < time, a concept not in
the dictionary) raise unless ``on_bad_rows == "skip-and-count"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_prep.concepts.sofa_components import (  # noqa: F401  (re-exported)
    _of,
    _point_events,
    component_events,
    sofa_rows,
)
from data_prep.concepts.sofa_grid import (  # noqa: F401  (re-exported)
    COMPONENTS,
    SOFA_COLUMNS,
    SOFA_CONCEPTS,
    TABLE,
    US_PER_HOUR,
    VASOPRESSORS,
    VENTILATION,
    SofaParams,
    _bad,
    _count,
    _Grid,
    _put_max,
    _us,
    _window_max,
    fio2_fraction,
    score_cns,
    score_coagulation,
    score_creatinine,
    score_liver,
    score_map,
    score_respiration,
    score_urine,
    score_vasopressor,
)

log = logging.getLogger(__name__)


@dataclass
class SofaInputs:
    """What `hourly_sofa` scored, kept for the onset audit (`sofa_evidence`): the hour grid,
    per component the (input name, events with idx, t_us, score, value) of point inputs,
    the valid vasopressor infusions (`vasopressor_rows`) and the urine output events."""

    grid: _Grid
    events_by_comp: dict[str, list[tuple[str, pd.DataFrame]]]
    vasopressors: pd.DataFrame
    urine: pd.DataFrame
    lookback: int


def hourly_sofa(
    stays: pd.DataFrame,
    events: pd.DataFrame,
    params: SofaParams,
    pre_hours: int = 0,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Hourly SOFA and its components (see `hourly_sofa_inputs`, which also returns the
    inputs it scored)."""
    frame, counts, _ = hourly_sofa_inputs(stays, events, params, pre_hours)
    return frame, counts


def hourly_sofa_inputs(
    stays: pd.DataFrame,
    events: pd.DataFrame,
    params: SofaParams,
    pre_hours: int = 0,
) -> tuple[pd.DataFrame, dict[str, int], SofaInputs]:
    """Hourly SOFA and its components for every hour of every stay.

    ``stays`` needs stay_id, intime, outtime (stays without both times are left out and
    counted). ``events``: schema ``io.EVENTS`` (CONTRACTS.md, `extracted/events/`); only the
    `SOFA_CONCEPTS` are read. With ``pre_hours > 0`` the hours ``-pre_hours .. -1`` before
    ICU admission are scored too (from whatever data exists then, e.g. pre-ICU labs), which
    the onset baseline uses. Returns (frame with ``SOFA_COLUMNS`` plus ``observed``, True
    when some SOFA input lies in the hour's window; hour int32 and scores int8; counts).
    """
    counts: dict[str, int] = {}
    lookback = int(params.sofa_lookback_hours)
    st = stays[["stay_id", "intime", "outtime"]]
    has_times = st["intime"].notna() & st["outtime"].notna()
    _count(counts, "stays_without_times", (~has_times).sum())
    grid = _Grid(st[has_times], lookback, pre_hours)
    events = sofa_rows(events)
    if not has_times.all():  # their events are left out with them (and counted), not an error
        timeless = st.loc[~has_times, "stay_id"].to_numpy()
        drop = events["stay_id"].isin(timeless).to_numpy(bool)
        _count(counts, f"{TABLE}_rows_of_stays_without_times", drop.sum())
        events = events[~drop]
    _count(counts, "stays_without_hours", (grid.n_hours == 0).sum())

    ev = _point_events(events, grid, params, counts)
    urine = _of(ev, "urine_output")

    events_by_comp = component_events(ev, params, counts)
    grids: dict[str, np.ndarray] = {}
    seen = np.zeros(grid.size, np.int8)  # 1 where any SOFA input (any score) was recorded
    for comp in COMPONENTS:
        arr = np.zeros(grid.size, np.int8)
        for _, e in events_by_comp[comp]:
            if e.empty:
                continue
            idx = e["idx"].to_numpy(np.int64)
            b = np.floor(grid.hours(idx, e["t_us"].to_numpy(np.int64))).astype(np.int64)
            cells, inside = grid.cells(idx, b)
            _count(counts, f"{comp}_events_outside_grid", (~inside).sum())
            _put_max(arr, cells[inside], e["score"].to_numpy(np.int8)[inside])
            seen[cells[inside]] = 1
        grids[comp] = arr

    vaso = _vasopressor_cells(ev, grid, grids["cardio"], params, counts, seen)
    if len(urine):
        u_idx = urine["idx"].to_numpy(np.int64)
        u_b = np.floor(grid.hours(u_idx, urine["t_us"].to_numpy(np.int64))).astype(np.int64)
        u_cells, u_inside = grid.cells(u_idx, u_b)
        seen[u_cells[u_inside]] = 1

    out_stay, out_hour, out_cell = grid.output_cells()
    cols: dict[str, np.ndarray] = {"stay_id": out_stay, "hour": out_hour.astype(np.int32)}
    for comp in COMPONENTS:
        cols[f"sofa_{comp}"] = _window_max(grids[comp], lookback)[out_cell]
    cols["sofa_renal"] = np.maximum(
        cols["sofa_renal"], _urine_scores(urine, grid, out_hour, out_cell, lookback, counts)
    )
    total = sum(cols[f"sofa_{c}"].astype(np.int16) for c in COMPONENTS)
    cols["sofa"] = np.asarray(total, np.int16).astype(np.int8)
    cols["observed"] = _window_max(seen, lookback)[out_cell].astype(bool)
    inputs = SofaInputs(grid, events_by_comp, vaso, urine, lookback)
    return pd.DataFrame(cols)[SOFA_COLUMNS + ["observed"]], counts, inputs


def vasopressor_rows(
    ev: pd.DataFrame, grid: _Grid, params: SofaParams, counts: dict[str, int]
) -> pd.DataFrame:
    """Valid infusions (events of kind vasopressor, validated by `_point_events`) with their
    score and the hour bins b0..b1 their [time, end_time) touches (clipped to the grid):
    idx, b0, b1, score, drug (the concept), rate (the value)."""
    cols = {"idx": [], "b0": [], "b1": [], "score": [], "drug": [], "rate": []}
    v = _of(ev, VASOPRESSORS)
    if v.empty:
        return pd.DataFrame(cols)
    drug = v["concept"].astype(object).to_numpy(object)
    keep = np.ones(len(v), bool)
    s_us = v["t_us"].to_numpy()
    e_us = _us(v["end_time"])
    no_end = v["end_time"].isna().to_numpy()
    _count(counts, "vasopressors_rows_no_endtime_as_point", (no_end & keep).sum())
    e_us = np.where(no_end, s_us, e_us)
    keep &= _bad(
        (e_us < s_us) & keep,
        v,
        TABLE,
        "end_time",
        "end_time before time (a vasopressor interval)",
        params,
        counts,
        "vasopressors_rows_end_before_start",
    )
    rate = v["value"].to_numpy(float)
    ok_rate = np.isfinite(rate) & (rate > 0)
    _count(counts, "vasopressors_rows_no_positive_rate", (keep & ~ok_rate).sum())
    keep &= ok_rate
    idx = v["idx"].to_numpy(np.int64)[keep]
    score = score_vasopressor(drug[keep], rate[keep])
    hs = grid.hours(idx, s_us[keep])
    he = grid.hours(idx, e_us[keep])
    b0 = np.floor(hs).astype(np.int64)
    b1 = np.maximum(np.ceil(he).astype(np.int64) - 1, b0)  # [s, e) touches bins b0..b1
    lo = -(grid.pad + grid.pre)
    hi = grid.n_hours[idx] - 1
    inside = (b1 >= lo) & (b0 <= hi)
    _count(counts, "vasopressors_rows_outside_grid", (~inside).sum())
    return pd.DataFrame(
        {
            "idx": idx[inside],
            "b0": np.maximum(b0, lo)[inside],
            "b1": np.minimum(b1, hi)[inside],
            "score": score[inside],
            "drug": drug[keep][inside],
            "rate": rate[keep][inside],
        }
    )


def _vasopressor_cells(
    ev: pd.DataFrame,
    grid: _Grid,
    cardio: np.ndarray,
    params: SofaParams,
    counts: dict[str, int],
    seen: np.ndarray | None = None,
) -> None:
    """Mark the cardiovascular score of every hour an infusion interval touches; returns
    the infusions (`vasopressor_rows`)."""
    rows = vasopressor_rows(ev, grid, params, counts)
    if rows.empty:
        return rows
    idx = rows["idx"].to_numpy(np.int64)
    score = rows["score"].to_numpy()
    c0 = grid.origin[idx] + rows["b0"].to_numpy(np.int64)
    c1 = grid.origin[idx] + rows["b1"].to_numpy(np.int64)
    for level in range(2, 5):
        sel = score == level
        if not sel.any():
            continue
        diff = np.bincount(c0[sel], minlength=grid.size + 1)[: grid.size + 1].astype(np.int64)
        diff -= np.bincount(c1[sel] + 1, minlength=grid.size + 1)[: grid.size + 1]
        covered = np.cumsum(diff)[: grid.size] > 0
        cardio[covered] = np.maximum(cardio[covered], level)
        if seen is not None:
            seen[covered] = 1
    return rows


def _urine_scores(
    urine: pd.DataFrame,
    grid: _Grid,
    out_hour: np.ndarray,
    out_cell: np.ndarray,
    lookback: int,
    counts: dict[str, int],
) -> np.ndarray:
    """Renal points from the urine output summed over each hour's trailing window."""
    res = np.zeros(len(out_cell), np.int8)
    if urine.empty:
        return res
    val = urine["value"].to_numpy(float)
    # negative volumes are irrigant instilled (the reader negates them: the dictionary's
    # `negate`), subtracted from the irrigant-and-urine volume out; a window whose net is
    # <= 0 produced no urine
    ok = np.isfinite(val)
    _count(counts, "urine_rows_implausible", (~ok).sum())
    idx = urine["idx"].to_numpy(np.int64)[ok]
    b = np.floor(grid.hours(idx, urine["t_us"].to_numpy(np.int64)[ok])).astype(np.int64)
    cells, inside = grid.cells(idx, b)
    cells, vol = cells[inside], val[ok][inside]
    csum = np.concatenate([[0.0], np.cumsum(np.bincount(cells, vol, minlength=grid.size))])
    ccnt = np.concatenate([[0], np.cumsum(np.bincount(cells, minlength=grid.size))])
    # out cells are always >= pad, so the window start index never underflows
    total = csum[out_cell + 1] - csum[out_cell + 1 - lookback]
    n = ccnt[out_cell + 1] - ccnt[out_cell + 1 - lookback]
    scored = (out_hour >= lookback - 1) & (n > 0)
    res[scored] = score_urine(total[scored] * 24.0 / lookback)
    return res
