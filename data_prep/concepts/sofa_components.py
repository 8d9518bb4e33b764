"""SOFA's point inputs per component, as events (idx, t_us, score, value): validated events,
P/F ratio (arterial gases, nearest FiO2, ventilation), labs, MAP and GCS
(`data_prep.concepts.sofa`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_prep.concepts.sofa_grid import (
    _D,
    _RANGE,
    ARTERIAL_CODE,
    COMPONENTS,
    DEFAULT_FIO2,
    GCS,
    INTUBATED_TEXT,
    KNOWN_CONCEPTS,
    SOFA_CONCEPTS,
    TABLE,
    US_PER_HOUR,
    VENT_HOLD_HOURS,
    VENTILATION,
    SofaParams,
    _bad,
    _count,
    _Grid,
    _us,
    fio2_fraction,
    score_cns,
    score_coagulation,
    score_creatinine,
    score_liver,
    score_map,
    score_respiration,
)

# --------------------------------------------------------------------------------------
# events per component: (stay_id, time_us, score)
# --------------------------------------------------------------------------------------


def _of(ev: pd.DataFrame, names: str | tuple[str, ...]) -> pd.DataFrame:
    """The events of one concept or of several (row order kept: dedups keep the last row)."""
    names = (names,) if isinstance(names, str) else names
    return ev[ev["concept"].isin(names).to_numpy(bool)]


def sofa_rows(events: pd.DataFrame) -> pd.DataFrame:
    """The events SOFA reads (`SOFA_CONCEPTS`), plus those whose concept is not in the
    dictionary at all (reported by `_point_events`); row order kept. The concept and text
    columns become categorical: selections by concept are then code comparisons, and each
    row selection later moves small integer codes instead of copying Arrow strings (text
    is null but for a few coded items, e.g. an intubated GCS verbal)."""
    c = events["concept"]
    if not isinstance(c.dtype, pd.CategoricalDtype):
        c = c.astype("category")
    keep = (c.isin(SOFA_CONCEPTS) | ~c.isin(KNOWN_CONCEPTS)).to_numpy(bool)
    out = events.assign(concept=c) if keep.all() else events[keep].assign(concept=c[keep])
    if "text" in out and not isinstance(out["text"].dtype, pd.CategoricalDtype):
        out["text"] = out["text"].astype("category")
    return out


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
