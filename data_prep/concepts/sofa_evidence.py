"""Which measurements formed a SOFA score: the onset audit's `sofa_inputs_at_onset`.

For chosen (stay, hour) cells, each organ system's score is the worst input in the hour's
window ``[k + 1 - L, k + 1)`` (`data_prep.concepts.sofa`); this module names that input, with
the same event builders the score uses (so the audit can never disagree with the score):
the latest input in the window whose points equal the component's score, e.g.
``renal 3: creatinine 3.6 mg/dL at h 2.5``. Vasopressor infusions are named with their rate,
urine output with its window total. Only the few onset rows are looked at, so the cost is
small whatever the database size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_prep.concepts import sofa as S

UNITS = {
    "PaO2/FiO2": "mmHg",
    "platelets": "K/uL",
    "bilirubin": "mg/dL",
    "creatinine": "mg/dL",
    "MAP": "mmHg",
    "GCS": "",
}


def sofa_inputs(
    stays: pd.DataFrame,
    events: pd.DataFrame,
    params: S.SofaParams,
    cells: pd.DataFrame,
    pre_hours: int = 0,
    scored: S.SofaInputs | None = None,
) -> pd.Series:
    """For each row of `cells` (stay_id, hour, components: comma-separated names), the inputs
    behind those components' scores at that hour, as one text (index = cells' index).
    ``events`` (``io.EVENTS``) and ``pre_hours`` as given to `hourly_sofa`; `scored`, the
    inputs `hourly_sofa_inputs` returned for these stays and events, saves building them
    again (the same builders: the result is the same either way)."""
    out = pd.Series("", index=cells.index, dtype="string")
    if cells.empty:
        return out
    if scored is None:
        ids = cells["stay_id"].unique()
        st = stays.loc[stays["stay_id"].isin(ids), ["stay_id", "intime", "outtime"]]
        st = st[st["intime"].notna() & st["outtime"].notna()]
        lookback = int(params.sofa_lookback_hours)
        grid = S._Grid(st, lookback, pre_hours)
        counts: dict[str, int] = {}  # already reported by hourly_sofa
        ev = S.sofa_rows(events[events["stay_id"].isin(st["stay_id"]).to_numpy(bool)])
        ev = S._point_events(ev, grid, params, counts)
        scored = S.SofaInputs(
            grid,
            S.component_events(ev, params, counts),
            S.vasopressor_rows(ev, grid, params, counts),
            S._of(ev, "urine_output"),
            lookback,
        )
    grid, lookback = scored.grid, scored.lookback
    # each frame split by stay once (a lookup per onset then touches that stay's rows only)
    events_by_comp = {
        comp: [(name, _ArraysByStay(f, ("t_us", "score", "value"))) for name, f in frames]
        for comp, frames in scored.events_by_comp.items()
    }
    vaso = _ArraysByStay(scored.vasopressors, ("b0", "b1", "score", "rate", "drug"))
    ur = _ArraysByStay(scored.urine, ("t_us", "value"))
    pos, found = grid.locate(cells["stay_id"].to_numpy(np.int64))
    hours = cells["hour"].to_numpy(np.int64)
    comps = cells["components"].astype(object).to_numpy(object)
    texts = [""] * len(cells)
    for row, (i, ok) in enumerate(zip(pos, found, strict=True)):
        if not ok:
            continue
        hour = int(hours[row])
        lo_us = grid.intime[i] + (hour + 1 - lookback) * S.US_PER_HOUR
        hi_us = grid.intime[i] + (hour + 1) * S.US_PER_HOUR
        parts = []
        comp_list = comps[row] if isinstance(comps[row], str) else ""
        for comp in comp_list.split(","):
            if comp not in S.COMPONENTS:
                continue
            best = _worst_point_input(events_by_comp[comp], i, lo_us, hi_us)
            if comp == "cardio" and i in vaso:
                best = max(best, _worst_infusion(vaso[i], i, hour, lookback), key=lambda b: b[0])
            if comp == "renal" and i in ur:
                best = max(best, _urine_input(ur[i], grid, i, hour, lookback), key=lambda b: b[0])
            if best[0] > 0:
                parts.append(f"{comp} {best[0]}: {best[1]}")
        texts[row] = "; ".join(parts)
    return pd.Series(texts, index=cells.index, dtype="string")


class _ArraysByStay:
    """Per grid index (``idx``), the numpy arrays of `cols` in the frame's order: one stable
    sort of the whole frame, each stay a slice of it (a pandas groupby costs more than
    the whole audit on 10,000 stays). Supports ``i in x``, ``x[i]`` and ``x.get(i)``."""

    def __init__(self, frame: pd.DataFrame, cols: tuple[str, ...]):
        if frame.empty:
            self.where: dict[int, tuple[int, int]] = {}
            self.arrays: tuple = ()
            return
        idx = frame["idx"].to_numpy(np.int64)
        perm = np.argsort(idx, kind="stable")
        keys, starts = np.unique(idx[perm], return_index=True)
        ends = np.append(starts[1:], len(idx))
        self.where = {int(k): (int(a), int(b)) for k, a, b in zip(keys, starts, ends, strict=True)}
        self.arrays = tuple(frame[c].to_numpy()[perm] for c in cols)

    def __contains__(self, i: int) -> bool:
        return i in self.where

    def __getitem__(self, i: int) -> tuple:
        a, b = self.where[i]
        return tuple(x[a:b] for x in self.arrays)

    def get(self, i: int) -> tuple | None:
        return self[i] if i in self.where else None


def _worst_point_input(frames, i: int, lo_us: int, hi_us: int) -> tuple[int, str]:
    """The worst-scoring input of the window [lo_us, hi_us) (ties: the latest)."""
    best: tuple[int, int, str] = (0, -1, "")  # (score, time, text)
    for name, by_stay in frames:
        arr = by_stay.get(i)
        if arr is None:
            continue
        t, score, value = arr
        m = (t >= lo_us) & (t < hi_us)
        if not m.any():
            continue
        ts, ss, vs = t[m], score[m], value[m]
        top = ss == ss.max()
        tk, vk = ts[top], vs[top]
        j = np.argsort(tk, kind="quicksort")[-1]  # as DataFrame.sort_values("t_us").iloc[-1]
        unit = UNITS.get(name, "")
        text = f"{name} {float(vk[j]):.4g}{' ' + unit if unit else ''}"
        cand = (int(ss.max()), int(tk[j]), text)
        if cand[:2] > best[:2]:
            best = cand
    return best[0], best[2]


def _worst_infusion(vaso: tuple, i: int, hour: int, lookback: int) -> tuple[int, str]:
    b0, b1, score, rate, drug = vaso
    m = (b0 <= hour) & (b1 >= hour + 1 - lookback)
    if not m.any():
        return 0, ""
    sc, rt, dr = score[m], rate[m], drug[m]
    j = np.lexsort((rt, sc))[-1]  # as sort_values(["score", "rate"]).iloc[-1] (stable)
    return int(sc[j]), f"{dr[j]} {float(rt[j]):.3g} mcg/kg/min"


def _urine_input(ur: tuple, grid, i: int, hour: int, lookback: int) -> tuple[int, str]:
    if hour < lookback - 1:
        return 0, ""
    t_us, value = ur
    b = np.floor(grid.hours(np.full(len(t_us), i, np.int64), t_us.astype(np.int64)))
    inside = (b >= hour + 1 - lookback) & (b <= hour)
    vals = value.astype(float)[inside]
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return 0, ""
    per_day = vals.sum() * 24.0 / lookback
    return int(S.score_urine(np.array([per_day]))[0]), f"urine {per_day:.0f} mL/24 h"
