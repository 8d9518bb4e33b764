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

from data_prep.concepts.dictionary import concepts
from data_prep.ids import locate

log = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------------------
# events per component: (stay_id, time_us, score)
# --------------------------------------------------------------------------------------


def _of(ev: pd.DataFrame, names: str | tuple[str, ...]) -> pd.DataFrame:
    """The events of one concept or of several (row order kept: dedups keep the last row)."""
    names = (names,) if isinstance(names, str) else names
    return ev[ev["concept"].isin(names).to_numpy(bool)]


def sofa_rows(events: pd.DataFrame) -> pd.DataFrame:
    """The events SOFA reads (`SOFA_CONCEPTS`), plus those whose concept is not in the
    dictionary at all (reported by `_point_events`); row order kept. The concept column
    becomes categorical (selections by concept are then code comparisons)."""
    c = events["concept"]
    if not isinstance(c.dtype, pd.CategoricalDtype):
        c = c.astype("category")
    keep = (c.isin(SOFA_CONCEPTS) | ~c.isin(KNOWN_CONCEPTS)).to_numpy(bool)
    return events[keep].assign(concept=c[keep])


def _point_events(
    df: pd.DataFrame, grid: _Grid, params: SofaParams, counts: dict[str, int]
) -> pd.DataFrame:
    """Validate stay_id/time/concept of the events; adds columns idx, t_us."""
    keep = _bad(
        df["stay_id"].isna().to_numpy(),
        df,
        TABLE,
        "stay_id",
        "missing stay_id",
        params,
        counts,
        f"{TABLE}_rows_no_stay",
    )
    keep &= _bad(
        df["time"].isna().to_numpy() & keep,
        df,
        TABLE,
        "time",
        "missing time",
        params,
        counts,
        f"{TABLE}_rows_no_time",
    )
    keep &= _bad(
        ~df["concept"].isin(KNOWN_CONCEPTS).to_numpy(bool) & keep,
        df,
        TABLE,
        "concept",
        "not a concept of the dictionary (data_prep/concepts/dictionary.yaml)",
        params,
        counts,
        f"{TABLE}_rows_unknown_concept",
    )
    df = df[keep]
    idx, found = grid.locate(df["stay_id"].to_numpy(np.int64))
    keep = _bad(
        ~found,
        df,
        TABLE,
        "stay_id",
        "stay_id not in stays",
        params,
        counts,
        f"{TABLE}_rows_unknown_stay",
    )
    df = df[keep].assign(idx=idx[keep])
    return df.assign(t_us=_us(df["time"]))


def _in_range(
    df: pd.DataFrame,
    name: str,
    counts: dict[str, int],
    low: float | None = None,
    high: float | None = None,
) -> pd.DataFrame:
    lo, hi = _RANGE.get(name, (low, high))
    lo = lo if low is None else low
    hi = hi if high is None else high
    v = df["value"].to_numpy(float)
    ok = np.isfinite(v) & (v >= lo) & (v <= hi)
    _count(counts, f"{name}_implausible", (~ok).sum())
    return df[ok]


def _fio2(ev: pd.DataFrame, counts: dict[str, int]) -> pd.DataFrame:
    """Valid FiO2 fractions (blood-gas and charted), one per stay and instant: the highest."""
    parts = []
    for name in ("fio2_bloodgas", "fio2"):
        f = _of(ev, name)[["stay_id", "t_us", "value"]]
        f = f.assign(fio2=fio2_fraction(f["value"].to_numpy(float)))
        ok = np.isfinite(f["fio2"]) & f["fio2"].between(*_RANGE[name])
        _count(counts, "fio2_implausible", (~ok).sum())
        parts.append(f[ok])
    return (
        pd.concat(parts)
        .sort_values(["stay_id", "t_us", "fio2"])
        .drop_duplicates(["stay_id", "t_us"], keep="last")
        .sort_values("t_us")
    )


def _respiration_events(
    ev: pd.DataFrame, params: SofaParams, counts: dict[str, int]
) -> pd.DataFrame:
    gas = _in_range(_of(ev, "po2"), "po2", counts, low=1e-9)
    gas = _arterial_only(gas, _of(ev, "blood_gas_specimen"), counts)
    fio2 = _fio2(ev, counts)
    vent = _of(ev, VENTILATION)[["stay_id", "t_us"]].drop_duplicates()
    g = gas[["stay_id", "idx", "t_us", "value"]].sort_values("t_us")
    if g.empty:
        return pd.DataFrame({"idx": [], "t_us": [], "score": [], "value": []})
    g = _nearest_fio2(g, fio2[["stay_id", "t_us", "fio2"]], params)
    no_fio2 = g["fio2"].isna()
    _count(counts, "pao2_without_fio2_assumed_room_air", no_fio2.sum())
    g["fio2"] = g["fio2"].fillna(DEFAULT_FIO2)
    vent = vent.sort_values("t_us").assign(vent_t=lambda d: d["t_us"])
    g = pd.merge_asof(
        g,
        vent,
        on="t_us",
        by="stay_id",
        direction="backward",
        # [t, t + 8 h): merge_asof's tolerance is inclusive, times are integer us
        tolerance=int(VENT_HOLD_HOURS * US_PER_HOUR) - 1,
    )
    pf = g["value"].to_numpy(float) / g["fio2"].to_numpy(float)
    return pd.DataFrame(
        {
            "idx": g["idx"].to_numpy(),
            "t_us": g["t_us"].to_numpy(),
            "score": score_respiration(pf, g["vent_t"].notna().to_numpy()),
            "value": pf,
        }
    )


def _arterial_only(gas: pd.DataFrame, spec: pd.DataFrame, counts: dict[str, int]) -> pd.DataFrame:
    """Drop pO2 values whose draw is typed venous, mixed or central venous (issue 14, defect 4).

    The specimen type (``blood_gas_specimen``, coded with the dictionary's ``codes``) is
    charted at the same instant as the gas's other values. A pO2 without a specimen event,
    or with another text (code 0), is kept and counted: most gases in ICU records are
    arterial, and dropping untyped ones would lose them.
    """
    spec = spec[["stay_id", "t_us", "value"]]
    if spec.empty:
        _count(counts, "pao2_specimen_unknown_kept", len(gas))
        return gas
    # several rows at one instant: arterial if any says so (the gas was drawn arterially)
    spec = spec.assign(art=spec["value"] == ARTERIAL_CODE, typed=spec["value"] > 0)
    spec = spec.groupby(["stay_id", "t_us"], as_index=False)[["art", "typed"]].max()
    g = gas[["stay_id", "t_us"]].merge(spec, on=["stay_id", "t_us"], how="left")
    art = g["art"].fillna(False).to_numpy(bool)
    typed = g["typed"].fillna(False).to_numpy(bool)
    _count(counts, "pao2_non_arterial_dropped", (typed & ~art).sum())
    _count(counts, "pao2_specimen_unknown_kept", (~typed).sum())
    return gas[art | ~typed]


def _nearest_fio2(gas: pd.DataFrame, fio2: pd.DataFrame, params: SofaParams) -> pd.DataFrame:
    """Each gas with the FiO2 charted nearest to it in [draw - lookback, draw + lookahead].

    FiO2 is often charted a few minutes after the blood is drawn; a gas with only such a
    FiO2 was scored as room air before issue 14 (defect 5). The window after the draw is
    short (``fio2_lookahead_hours``, 30 min) because a FiO2 changed in response to this gas
    is charted later. Equal distances prefer the earlier FiO2.
    """
    t = fio2.assign(t_f=fio2["t_us"])
    before, after = (
        pd.merge_asof(
            gas, t, on="t_us", by="stay_id", direction=direction, tolerance=int(h * US_PER_HOUR)
        )
        for direction, h in (
            ("backward", params.fio2_lookback_hours),
            ("forward", params.fio2_lookahead_hours),
        )
    )
    d_before = gas["t_us"].to_numpy() - before["t_f"].to_numpy(float)
    d_after = after["t_f"].to_numpy(float) - gas["t_us"].to_numpy()
    use_after = np.isfinite(d_after) & ~(np.isfinite(d_before) & (d_before <= d_after))
    out = before.drop(columns="t_f")
    out["fio2"] = np.where(use_after, after["fio2"].to_numpy(float), before["fio2"].to_numpy(float))
    return out


def _gcs_events(ev: pd.DataFrame, counts: dict[str, int]) -> pd.DataFrame:
    # kind codes: 0 total, 1 eye, 2 verbal, 3 motor (numeric lookups, not string maps)
    c = _of(ev, GCS)[["stay_id", "idx", "t_us", "concept", "value", "text"]]
    kind = pd.Categorical(c["concept"].astype(object), categories=list(GCS)).codes.astype(np.int8)
    verbal = kind == 2
    intub = np.zeros(len(c), bool)
    if verbal.any():
        text = c["text"][verbal].astype("string").str.strip().str.lower()
        intub[verbal] = text.isin(INTUBATED_TEXT).fillna(False).to_numpy(bool)
    intub_keys = c.loc[intub, ["stay_id", "idx", "t_us"]].drop_duplicates()
    c, kind = c[~intub], kind[~intub]
    hi = np.array([_D[n].high for n in GCS], float)[kind]
    lo = np.array([_D[n].low for n in GCS], float)[kind]
    v = c["value"].to_numpy(float)
    ok = np.isfinite(v) & (v >= lo) & (v <= hi)
    _count(counts, "gcs_implausible", (~ok).sum())
    c = c[ok].assign(kind=kind[ok])
    totals = c.loc[c["kind"] == 0, ["stay_id", "idx", "t_us", "value"]]
    comp = c[c["kind"] != 0].drop_duplicates(["stay_id", "t_us", "kind"], keep="last")
    wide = comp.pivot(index=["stay_id", "idx", "t_us"], columns="kind", values="value")
    wide = wide.reindex(columns=[1, 2, 3])  # eye, verbal, motor
    complete = wide.notna().all(axis=1)
    _count(counts, "gcs_incomplete_component_sets", (~complete).sum())
    sums = wide[complete].sum(axis=1).rename("value").reset_index()
    gcs = pd.concat([totals, sums], ignore_index=True)
    # an intubated verbal overrides every GCS value charted at the same instant
    key = ["stay_id", "t_us"]
    gcs = gcs.merge(intub_keys[key].assign(_i=True), on=key, how="left")
    gcs = gcs[gcs["_i"].isna()].drop(columns="_i")
    gcs = pd.concat([gcs, intub_keys.assign(value=15.0)], ignore_index=True)
    return pd.DataFrame(
        {
            "idx": gcs["idx"].to_numpy(),
            "t_us": gcs["t_us"].to_numpy(),
            "score": score_cns(gcs["value"].to_numpy(float)),
            "value": gcs["value"].to_numpy(float),
        }
    )


def component_events(
    ev: pd.DataFrame, params: SofaParams, counts: dict[str, int]
) -> dict[str, list[tuple[str, pd.DataFrame]]]:
    """Per component, (input name, events with idx, t_us, score, value) of every point input:
    P/F ratio, platelets, bilirubin, creatinine, MAP, GCS (vasopressors and urine are
    intervals and sums, handled by their own functions). ``ev``: validated events
    (`_point_events`)."""
    events: dict[str, list[tuple[str, pd.DataFrame]]] = {c: [] for c in COMPONENTS}
    events["resp"].append(("PaO2/FiO2", _respiration_events(ev, params, counts)))
    for name, fn, comp in (
        ("platelets", score_coagulation, "coag"),
        ("bilirubin", score_liver, "liver"),
        ("creatinine", score_creatinine, "renal"),
    ):
        x = _in_range(_of(ev, name), name, counts)
        events[comp].append((name, _scored(x, fn)))
    mbp = _in_range(_of(ev, "mbp"), "mbp", counts, low=1e-9)
    events["cardio"].append(("MAP", _scored(mbp, score_map)))
    events["cns"].append(("GCS", _gcs_events(ev, counts)))
    return events


def _scored(x: pd.DataFrame, fn) -> pd.DataFrame:
    v = x["value"].to_numpy(float)
    return pd.DataFrame({"idx": x["idx"], "t_us": x["t_us"], "score": fn(v), "value": v})


def hourly_sofa(
    stays: pd.DataFrame,
    events: pd.DataFrame,
    params: SofaParams,
    pre_hours: int = 0,
) -> tuple[pd.DataFrame, dict[str, int]]:
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

    _vasopressor_cells(ev, grid, grids["cardio"], params, counts, seen)
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
    return pd.DataFrame(cols)[SOFA_COLUMNS + ["observed"]], counts


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
    """Mark the cardiovascular score of every hour an infusion interval touches."""
    rows = vasopressor_rows(ev, grid, params, counts)
    if rows.empty:
        return
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
