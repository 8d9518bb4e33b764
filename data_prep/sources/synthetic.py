"""Embedded synthetic ICU database in the MIMIC-III v1.4 table format (`sepsis generate`).

`generate(out_dir, params)` writes PATIENTS, ADMISSIONS, ICUSTAYS, CHARTEVENTS, LABEVENTS,
PRESCRIPTIONS, MICROBIOLOGYEVENTS, INPUTEVENTS_MV, INPUTEVENTS_CV, OUTPUTEVENTS, DIAGNOSES_ICD,
D_ITEMS and D_LABITEMS as upper-case `.csv.gz` files with the upper-case column names of the
full MIMIC-III release and the real ITEMIDs of `data_prep.concepts.variables`, plus
`ground_truth.parquet` (each stay's group and designed onset hour; for tests only, the
pipeline never reads it).

Design (each stay belongs to one group):

* ``septic``: SOFA <= 1 before the designed onset hour ``o`` (values kept away from the SOFA
  thresholds), then at ``o + u`` (0 < u < 1) a trigger raises SOFA by >= 2 (a lab with low
  platelets / high creatinine / high bilirubin, MAP < 70 with norepinephrine, a worse
  PaO2/FiO2, a falling GCS), and dysfunction persists for hours. A culture and an antibiotic
  (either order, inside the Sepsis-3 pairing windows) make suspected infection within
  [o - 22, o + 46] h, so the onset hour falls inside the SI window. Over the 6-24 h before
  onset, heart rate, temperature, respiratory rate, lactate and WBC drift (scaled by
  ``signal_strength``; heterogeneous amplitudes, some hypothermic / leukopenic patients).
* ``infection``: cultures and antibiotics, a milder febrile drift, but no organ failure
  (SOFA <= 1 all stay): suspected infection without sepsis.
* ``organ``: an organ-dysfunction event with haemodynamic drift but no infection workup.
* ``control``: everyone else; some with stable chronic organ dysfunction.

Trajectories are Ornstein-Uhlenbeck processes around per-patient means with a shared latent
severity process (heart rate, MAP, respiratory rate, lactate move together) plus measurement
noise; vitals are charted about hourly with gaps, labs every 4-20 h, blood gases mostly in
ventilated patients. Patients are simulated in blocks of `BLOCK` with an RNG seeded from
(seed, block), and each block's rows are appended to gzip streams (mtime 0), so the output
is byte-for-byte deterministic for a seed and memory is bounded by the block size.
"""

from __future__ import annotations

import gzip
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data_prep import io
from data_prep.concepts import variables as V
from data_prep.sources.synthetic_items import (
    CHART_ITEMS,
    LAB,
    NOREPI,
    PANEL,
    URINE_ITEM,
    d_items,
    d_labitems,
)
from data_prep.sources.synthetic_tables import COLUMNS, EVENT_TABLES, KINDS, Rows

# The public API (imported by sepsis/, benchmarks/ and tests/); the layout lives in synthetic_tables.
__all__ = ["BLOCK", "COLUMNS", "EVENT_TABLES", "GROUPS", "KINDS", "SyntheticParams", "generate"]

log = logging.getLogger(__name__)

BLOCK = 250  # patients per block (one RNG stream and one flush per block)
GROUPS = ("septic", "infection", "organ", "control")

UNITS_ICU = ("MICU", "SICU", "CCU", "CSRU", "TSICU")
UNIT_P = (0.38, 0.17, 0.15, 0.17, 0.13)
ANTIBIOTICS = (
    "Vancomycin",
    "Piperacillin-Tazobactam",
    "CefePIME",
    "CeftriaXONE",
    "Meropenem",
    "Levofloxacin",
    "MetRONIDAZOLE (FLagyl)",
    "Ciprofloxacin HCl",
)
OTHER_DRUGS = (
    "Heparin",
    "Pantoprazole",
    "Insulin",
    "Acetaminophen",
    "Potassium Chloride",
    "Docusate Sodium",
    "Furosemide",
    "Metoprolol Tartrate",
)
SPECIMENS = ("BLOOD CULTURE", "URINE", "SPUTUM", "BRONCHOALVEOLAR LAVAGE", "SWAB", "MRSA SCREEN")
ORGANISMS = (
    "ESCHERICHIA COLI",
    "STAPH AUREUS COAG +",
    "KLEBSIELLA PNEUMONIAE",
    "PSEUDOMONAS AERUGINOSA",
    "",
)
OTHER_ICD9 = ("4019", "4280", "42731", "5849", "51881", "25000", "2724", "486", "5990", "2851")
SEPSIS_ICD9 = V.SEPSIS_ICD9  # 99591, 99592, 78552


@dataclass(frozen=True)
class SyntheticParams:
    """YAML section `synthetic`: size and difficulty of the embedded database."""

    n_patients: int = 600
    septic_fraction: float = 0.1
    signal_strength: float = 1.0  # scales the pre-onset drift; 0 = no early signal
    metavision_fraction: float = 0.6
    confounder_fraction: float = (
        0.15  # each of: infection-without-organ-failure, organ-dysfunction-without-infection
    )
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError("synthetic.<key>: expected ..., got ...") for impossible values."""
        n = self.n_patients
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            raise ValueError(f"synthetic.n_patients: expected an integer >= 1, got {n!r}")
        for key in ("septic_fraction", "metavision_fraction", "confounder_fraction"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1):
                raise ValueError(f"synthetic.{key}: expected a number in [0, 1], got {v!r}")
        total = self.septic_fraction + 2 * self.confounder_fraction
        if total > 1:
            raise ValueError(
                f"synthetic.septic_fraction + 2 * confounder_fraction: expected <= 1, got {total:g}"
            )
        s = self.signal_strength
        if not (
            isinstance(s, (int, float))
            and not isinstance(s, bool)
            and math.isfinite(s)
            and 0 <= s <= 10
        ):
            raise ValueError(f"synthetic.signal_strength: expected a number in [0, 10], got {s!r}")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0):
            raise ValueError(f"synthetic.seed: expected an integer >= 0, got {self.seed!r}")


# --------------------------------------------------------------------------------------
# trajectories
# --------------------------------------------------------------------------------------


def _ou(rng: np.random.Generator, t: np.ndarray, sd: float, tau: float) -> np.ndarray:
    """Zero-mean stationary Ornstein-Uhlenbeck values at sorted times `t` (hours)."""
    if len(t) == 0:
        return np.zeros(0)
    x = np.empty(len(t))
    z = rng.standard_normal(len(t))
    x[0] = sd * z[0]
    if len(t) > 1:
        a = np.exp(-np.diff(t) / tau)
        s = sd * np.sqrt(1.0 - a * a)
        for i in range(1, len(t)):
            x[i] = a[i - 1] * x[i - 1] + s[i - 1] * z[i]
    return x


class _Latent:
    """Shared severity process on an hourly grid (interpolated to any time)."""

    def __init__(self, rng: np.random.Generator, t0: float, t1: float) -> None:
        self.grid = np.arange(math.floor(t0) - 1, math.ceil(t1) + 2, dtype=float)
        self.val = _ou(rng, self.grid, 1.0, 10.0)

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self.grid, self.val)


def _ramp(t: np.ndarray, start: float, end: float, decay_after: float | None = None) -> np.ndarray:
    """0 before `start`, rising (convex) to 1 at `end`, 1 after (or decaying after `decay_after`)."""
    r = np.clip((t - start) / max(end - start, 1e-6), 0.0, 1.0) ** 1.5
    if decay_after is not None:
        r = r * np.exp(-np.clip(t - decay_after, 0, None) / 12.0)
    return r


def _reflect_above(
    x: np.ndarray, lo: float, rng: np.random.Generator, mask: np.ndarray | None = None
) -> np.ndarray:
    """Values below `lo` (where mask) reflected to just above it: keeps a SOFA threshold uncrossed."""
    bad = x < lo if mask is None else (x < lo) & mask
    if bad.any():
        x = x.copy()
        x[bad] = (
            lo
            + np.abs(lo - x[bad]) * 0.5
            + rng.uniform(0.5, 3.0, bad.sum()) * (abs(lo) * 0.01 + 0.01)
        )
    return x


def _reflect_below(
    x: np.ndarray, hi: float, rng: np.random.Generator, mask: np.ndarray | None = None
) -> np.ndarray:
    bad = x > hi if mask is None else (x > hi) & mask
    if bad.any():
        x = x.copy()
        x[bad] = (
            hi
            - np.abs(x[bad] - hi) * 0.5
            - rng.uniform(0.5, 3.0, bad.sum()) * (abs(hi) * 0.01 + 0.01)
        )
    return x


# --------------------------------------------------------------------------------------
# one stay
# --------------------------------------------------------------------------------------


@dataclass
class _Ids:
    subject: int
    hadm: int
    stay: int


def _schedule_hourly(
    rng: np.random.Generator, start_off: float, los: float, every: float = 1.0, miss: float = 0.1
) -> np.ndarray:
    """Clock-hour charting times (hours since intime) with random and block gaps."""
    t = np.arange(start_off, los, every)
    if len(t) == 0:
        return t
    keep = rng.random(len(t)) > miss
    n_gaps = rng.poisson(len(t) / 48.0)
    for g in rng.integers(0, len(t), n_gaps):
        keep[g : g + rng.integers(2, 5)] = False
    keep[0] = True
    return t[keep]


def _lab_times(rng: np.random.Generator, los: float) -> np.ndarray:
    t = [rng.uniform(0.2, 2.0)]
    while True:
        nxt = t[-1] + rng.choice([4.0, 6.0, 8.0, 12.0, 12.0, 16.0, 20.0]) + rng.uniform(-0.5, 0.5)
        if nxt >= los:
            break
        t.append(nxt)
    return np.round(np.array(t) * 60) / 60


def _simulate_stay(
    rng: np.random.Generator,
    ids: _Ids,
    group: str,
    db: str,
    params: SyntheticParams,
    rows: dict[str, Rows],
) -> dict:
    """Simulate one ICU stay, append its rows to `rows`, return its ground-truth record."""
    mv = db == "metavision"
    items = CHART_ITEMS[db]
    s_strength = params.signal_strength
    vent = rng.random() < 0.35
    age = float(np.clip(rng.normal(64, 16), 18, 89))
    very_old = rng.random() < 0.03
    female = rng.random() < 0.44
    weight = float(np.clip(rng.normal(80 if not female else 68, 16), 40, 180))

    # --- stay length and the designed events ---
    los = float(np.clip(rng.lognormal(math.log(52), 0.85), 4.0, 720.0))
    onset = np.nan
    trigger_t = np.nan
    event_t = np.nan
    if group == "septic":
        onset = (
            float(rng.integers(1, 7))
            if rng.random() < 0.15
            else float(min(7 + math.floor(rng.exponential(28.0)), 300))
        )
        trigger_t = onset + round(rng.uniform(0.1, 0.9) * 60) / 60
        los = max(los, onset + rng.uniform(12.0, 160.0))
    elif group == "organ":
        event_t = min(3 + rng.exponential(30.0), 250.0)
        event_t = math.floor(event_t) + round(rng.uniform(0.1, 0.9) * 60) / 60
        los = max(los, event_t + rng.uniform(8.0, 100.0))
    elif group == "infection":
        si_target = rng.uniform(-6.0, min(los, 120.0))
        los = max(los, si_target + 12.0)
    los = round(los * 60) / 60
    died = rng.random() < (0.25 if group == "septic" else 0.12 if group == "organ" else 0.07)

    # which organ components must stay "clean" (SOFA <= 1) and when
    clean_until = {"septic": trigger_t, "infection": np.inf}.get(group, -np.inf)
    chronic: set[str] = set()
    mild = None
    if group in ("septic", "infection") and rng.random() < 0.25:
        mild = "renal"  # chronic kidney disease: creatinine 1.2-1.8 (1 SOFA point) all stay
    if group in ("control", "organ") and rng.random() < 0.35:
        chronic = set(
            rng.choice(
                ["coag", "renal", "liver", "cardio", "resp"], size=rng.integers(1, 3), replace=False
            )
        )
        if "resp" in chronic:
            vent = True
    # dysfunction trigger (septic at o+u, organ confounder at the event)
    trig_at = trigger_t if group == "septic" else event_t
    triggers: set[str] = set()
    if not np.isnan(trig_at):
        choices = ["cardio", "renal", "coag", "resp", "liver"] + ([] if vent else ["cns"])
        w = np.array([0.3, 0.2, 0.15, 0.15, 0.1] + ([] if vent else [0.1]))
        if mild == "renal":
            w[1] = 0.0
        first = str(rng.choice(choices, p=w / w.sum()))
        triggers.add(first)
        if rng.random() < 0.35:
            second = str(rng.choice(choices, p=w / w.sum()))
            triggers.add(second)
    dys_end = trig_at + rng.uniform(8.0, 72.0) if not np.isnan(trig_at) else -np.inf

    # --- times (absolute minutes) ---
    year = int(rng.integers(2100, 2200))
    intime = np.datetime64(f"{year}-01-01T00:00", "m") + int(rng.integers(0, 365 * 24 * 60))
    admit = intime - int(rng.uniform(0.5, 48.0) * 60)
    outtime = intime + int(round(los * 60))
    death_time = None
    if died:
        death_time = outtime if rng.random() < 0.7 else outtime + int(rng.uniform(1, 240) * 60)
        dischtime = death_time
    else:
        dischtime = outtime + int(rng.uniform(2, 240) * 60)
    first_clock = (60 - (intime.astype(np.int64) % 60)) / 60.0  # hours to the next clock hour

    def at(h: np.ndarray) -> np.ndarray:
        return intime + np.round(np.asarray(h, float) * 60).astype(np.int64).astype(
            "timedelta64[m]"
        )

    lat = _Latent(rng, -30, los + 1)
    # --- drift: the early-warning signal ---
    amp = s_strength * rng.uniform(0.4, 1.6)
    fever_sign = -0.7 if rng.random() < 0.2 else 1.0
    wbc_sign = -0.6 if rng.random() < 0.15 else 1.0

    def drift(t: np.ndarray) -> np.ndarray:
        if group == "septic":
            lead = drift.lead
            return amp * _ramp(t, onset - lead, onset + 1.0)
        if group == "infection":
            return (
                0.6
                * amp
                * _ramp(t, si_target - drift.lead, si_target + 4.0, decay_after=si_target + 12.0)
            )
        return np.zeros_like(t)

    drift.lead = rng.uniform(6.0, 24.0)

    def organ_drift(t: np.ndarray) -> np.ndarray:
        if group != "organ":
            return np.zeros_like(t)
        return rng_amp_o * _ramp(t, event_t - lead_o, event_t, decay_after=event_t + 24.0)

    rng_amp_o = s_strength * rng.uniform(0.3, 1.2)
    lead_o = rng.uniform(3.0, 16.0)

    def dys(t: np.ndarray, comp: str) -> np.ndarray:
        """1 while the triggered component `comp` is dysfunctional (from trigger to recovery)."""
        if comp not in triggers:
            return np.zeros(len(t), bool)
        return (t >= trig_at) & (t < dys_end)

    def clean(t: np.ndarray) -> np.ndarray:
        return t < clean_until

    chart = rows["CHARTEVENTS"]
    base = dict(SUBJECT_ID=ids.subject, HADM_ID=ids.hadm, ICUSTAY_ID=ids.stay)

    def put_chart(
        name: str, t: np.ndarray, vals: np.ndarray, text: np.ndarray | None = None, nd: int = 0
    ) -> None:
        if len(t) == 0:
            return
        item, uom = items[name]
        v = np.round(vals, nd) if nd else np.round(vals)
        value = (
            text
            if text is not None
            else (v.astype(np.int64).astype(str) if nd == 0 else v.astype(str))
        )
        extra = {"ERROR": "0", "WARNING": "0"} if mv else {}
        chart.add(
            **base,
            ITEMID=np.full(len(t), item, np.int64),
            CHARTTIME=at(t),
            VALUE=value.astype(object),
            VALUENUM=v.astype(float),
            VALUEUOM=uom,
            **extra,
        )

    # --- vitals ---
    tv = _schedule_hourly(rng, first_clock, los)
    z = lat(tv)
    d = drift(tv)
    od = organ_drift(tv)
    hr = (
        rng.normal(84, 11)
        + 5 * z
        + 16 * d
        + 14 * od
        + _ou(rng, tv, 5, 4)
        + rng.normal(0, 3, len(tv))
    )
    map_mu = rng.normal(82, 7) - (8 if "cardio" in chronic else 0)
    mbp = map_mu - 3.5 * z - 5 * d - 8 * od + _ou(rng, tv, 4, 4) + rng.normal(0, 3, len(tv))
    in_dys = dys(tv, "cardio")
    mbp = np.where(in_dys, rng.uniform(60, 71, len(tv)), mbp)
    mbp = _reflect_above(mbp, 71.0, rng, clean(tv))
    pp = rng.normal(48, 9)
    sbp = mbp + (2 / 3) * pp + rng.normal(0, 4, len(tv))
    dbp = mbp - pp / 3 + rng.normal(0, 3, len(tv))
    rr = (
        rng.normal(18, 3)
        + 1.5 * z
        + 4 * d
        + 2 * od
        + _ou(rng, tv, 2, 3)
        + rng.normal(0, 1.2, len(tv))
    )
    spo2 = np.minimum(
        rng.normal(97, 1.2) - 1.3 * d - 0.5 * np.maximum(z, 0) + rng.normal(0, 1, len(tv)), 100
    )
    hr, rr = np.clip(hr, 35, 190), np.clip(rr, 6, 50)
    arterial = vent or rng.random() < 0.3
    sfx = "_a" if arterial else ""
    put_chart("hr", tv, hr)
    put_chart("sbp" + sfx, tv, np.clip(sbp, 60, 230))
    put_chart("dbp" + sfx, tv, np.clip(dbp, 25, 130))
    put_chart("mbp" + sfx, tv, np.clip(mbp, 40, 160))
    put_chart("rr", tv, rr)
    put_chart("spo2", tv, np.clip(spo2, 80, 100))
    tt = tv[::4] if len(tv) else tv
    temp = (
        rng.normal(36.9, 0.3)
        + 0.25 * z[::4]
        + 0.9 * fever_sign * d[::4]
        + _ou(rng, tt, 0.25, 6)
        + rng.normal(0, 0.1, len(tt))
    )
    temp = np.clip(temp, 34.0, 41.5)
    put_chart("temp", tt, temp * 9 / 5 + 32 if db == "carevue" else temp, nd=1)
    put_chart("weight", np.array([min(0.5, los / 2)]), np.array([weight]), nd=1)

    # extra charting at a cardiovascular trigger: MAP < 70 at the trigger time
    if "cardio" in triggers and trig_at < los:
        m = np.array([rng.uniform(55, 68)])
        t1 = np.array([trig_at])
        put_chart("mbp" + sfx, t1, m)
        put_chart("sbp" + sfx, t1, m + 30)
        put_chart("dbp" + sfx, t1, m - 14)

    # --- ventilation, FiO2, GCS ---
    fio2 = round(rng.uniform(0.35, 0.6), 1)
    if vent:
        tvent = tv[::2]
        put_chart("fio2", tvent, np.full(len(tvent), fio2 * 100))
        t4 = tv[::4]
        put_chart("tv", t4, rng.normal(480, 50) + rng.normal(0, 15, len(t4)))
        put_chart("peep", t4, np.full(len(t4), float(rng.choice([5, 5, 8, 10]))))
        mode_text = "CMV/ASSIST/AutoFlow" if mv else "Drager"
        put_chart("mode", t4, np.full(len(t4), np.nan), text=np.full(len(t4), mode_text, object))
    tg = tv[::4] if len(tv) else tv
    if vent:
        eye = rng.integers(1, 5, len(tg)).astype(float)
        motor = rng.integers(3, 7, len(tg)).astype(float)
        txt = "No Response-ETT" if mv else "1.0 ET/Trach"
        put_chart("eye", tg, eye)
        put_chart("verbal", tg, np.full(len(tg), 1.0), text=np.full(len(tg), txt, object))
        put_chart("motor", tg, motor)
    else:
        cns_dys = dys(tg, "cns")
        eye = np.where(cns_dys, rng.integers(2, 4, len(tg)), 4).astype(float)
        verbal = np.where(cns_dys, rng.integers(2, 4, len(tg)), 5).astype(float)
        motor = np.where(cns_dys, rng.integers(4, 6, len(tg)), 6).astype(float)
        if "cns" in triggers and trig_at < los:
            tg = np.r_[tg, trig_at]
            eye, verbal, motor = np.r_[eye, 2.0], np.r_[verbal, 3.0], np.r_[motor, 5.0]
        put_chart("eye", tg, eye)
        put_chart("verbal", tg, verbal)
        put_chart("motor", tg, motor)

    # --- vasopressors ---
    pressor_spans = []
    if "cardio" in triggers and trig_at < los:
        pressor_spans.append((trig_at, min(dys_end, los)))
    if "cardio" in chronic and rng.random() < 0.5:
        pressor_spans.append((rng.uniform(0, los / 2), los))
    for st, en in pressor_spans:
        edges = np.arange(st, en, rng.uniform(2.0, 6.0))
        if len(edges) == 0:
            continue
        rates = np.round(np.clip(rng.lognormal(math.log(0.08), 0.5, len(edges)), 0.02, 0.5), 3)
        if mv:
            ends = np.r_[edges[1:], en]
            rows["INPUTEVENTS_MV"].add(
                **base,
                STARTTIME=at(edges),
                ENDTIME=at(ends),
                ITEMID=np.full(len(edges), NOREPI[db], np.int64),
                AMOUNT=np.round(rates * weight * 60 * (ends - edges) / 1000, 3),
                AMOUNTUOM="mg",
                RATE=rates,
                RATEUOM="mcg/kg/min",
                PATIENTWEIGHT=np.full(len(edges), round(weight, 1)),
                ORDERCATEGORYNAME="01-Drips",
                STATUSDESCRIPTION="Changed",
            )
        else:
            hrs = np.arange(st, en, 1.0)
            r = np.round(np.interp(hrs, edges, rates), 3)
            rows["INPUTEVENTS_CV"].add(
                **base,
                CHARTTIME=at(hrs),
                ITEMID=np.full(len(hrs), NOREPI[db], np.int64),
                RATE=r,
                RATEUOM="mcgkgmin",
            )
    # non-vasopressor MetaVision rows carry the admission weight too (as in MIMIC-III)
    if mv:
        tfl = np.array([min(1.0, los / 2)])
        rows["INPUTEVENTS_MV"].add(
            **base,
            STARTTIME=at(tfl),
            ENDTIME=at(tfl + 1 / 60),
            ITEMID=np.array([V.MV_NACL_0_9], np.int64),
            AMOUNT=np.array([500.0]),
            AMOUNTUOM="ml",
            PATIENTWEIGHT=np.array([round(weight, 1)]),
            ORDERCATEGORYNAME="03-IV Fluid Bolus",
            STATUSDESCRIPTION="FinishedRunning",
        )

    # --- urine ---
    tu = _schedule_hourly(rng, first_clock, los, miss=0.08)
    uo = rng.uniform(50, 140) * np.exp(_ou(rng, tu, 0.3, 6)) - 25 * drift(tu) - 20 * organ_drift(tu)
    low_u = dys(tu, "renal") | dys(tu, "cardio")
    uo = np.where(low_u, rng.uniform(5, 25, len(tu)), uo)
    uo = np.where(clean(tu), np.maximum(uo, 45 + rng.uniform(0, 10, len(tu))), np.maximum(uo, 0))
    if len(tu):
        rows["OUTPUTEVENTS"].add(
            **base,
            CHARTTIME=at(tu),
            ITEMID=np.full(len(tu), URINE_ITEM[db], np.int64),
            VALUE=np.round(uo),
            VALUEUOM="ml" if db == "carevue" else "mL",
        )

    # --- labs ---
    tl = _lab_times(rng, los)
    if rng.random() < 0.5:
        tl = np.r_[-round(rng.uniform(1.0, 12.0) * 60) / 60, tl]
    if not np.isnan(trig_at) and trig_at < los and triggers & {"coag", "renal", "liver"}:
        tl = np.sort(np.r_[tl, trig_at])
    zl, dl, odl = lat(tl), drift(tl), organ_drift(tl)
    cl = clean(tl)
    lab = {}
    plt_mu = rng.lognormal(math.log(230), 0.3) if "coag" not in chronic else rng.uniform(60, 140)
    lab["platelets"] = plt_mu * np.exp(_ou(rng, tl, 0.1, 48)) - 20 * dl
    lab["platelets"] = np.where(dys(tl, "coag"), rng.uniform(35, 90, len(tl)), lab["platelets"])
    lab["platelets"] = _reflect_above(lab["platelets"], 158.0, rng, cl)
    cr_mu = (
        rng.uniform(1.25, 1.7)
        if mild == "renal"
        else rng.uniform(1.6, 3.4)
        if "renal" in chronic
        else rng.lognormal(math.log(0.8), 0.2)
    )
    lab["creatinine"] = cr_mu * np.exp(_ou(rng, tl, 0.06, 48)) + 0.08 * dl
    lab["creatinine"] = np.where(
        dys(tl, "renal"), rng.uniform(2.2, 3.8, len(tl)), lab["creatinine"]
    )
    if mild == "renal":
        lab["creatinine"] = _reflect_above(
            _reflect_below(lab["creatinine"], 1.9, rng, cl), 1.21, rng, cl
        )
    else:
        lab["creatinine"] = _reflect_below(lab["creatinine"], 1.12, rng, cl)
    bili_mu = rng.uniform(1.6, 5) if "liver" in chronic else rng.lognormal(math.log(0.6), 0.3)
    lab["bilirubin"] = bili_mu * np.exp(_ou(rng, tl, 0.1, 48)) + 0.1 * dl
    lab["bilirubin"] = np.where(dys(tl, "liver"), rng.uniform(2.1, 4.5, len(tl)), lab["bilirubin"])
    lab["bilirubin"] = _reflect_below(lab["bilirubin"], 1.12, rng, cl)
    lab["wbc"] = np.maximum(
        rng.lognormal(math.log(9), 0.25)
        + 0.5 * zl
        + 5 * wbc_sign * dl
        + _ou(rng, tl, 1.2, 24)
        + rng.normal(0, 0.5, len(tl)),
        0.5,
    )
    lab["lactate"] = np.maximum(
        rng.lognormal(math.log(1.2), 0.25)
        + 0.2 * zl
        + 1.1 * dl
        + 0.9 * odl
        + _ou(rng, tl, 0.2, 8)
        + rng.normal(0, 0.1, len(tl)),
        0.3,
    )
    hgb = rng.normal(10.5, 1.4) + _ou(rng, tl, 0.4, 24) - 1.5 * odl
    lab["hemoglobin"] = np.clip(hgb, 5, 17)
    lab["hematocrit"] = np.clip(3 * lab["hemoglobin"] + rng.normal(0, 1, len(tl)), 15, 55)
    lab["sodium"] = rng.normal(139, 3) + _ou(rng, tl, 1.5, 24)
    lab["potassium"] = np.clip(rng.normal(4.1, 0.35) + _ou(rng, tl, 0.3, 12), 2.5, 6.5)
    lab["chloride"] = rng.normal(104, 3.5) + _ou(rng, tl, 1.5, 24)
    lab["bicarbonate"] = rng.normal(24, 2.5) + _ou(rng, tl, 1.2, 24) - 2.5 * dl - 2 * odl
    lab["anion_gap"] = np.clip(
        lab["sodium"] - lab["chloride"] - lab["bicarbonate"] + rng.normal(0, 1, len(tl)), 3, 30
    )
    lab["bun"] = np.clip(
        rng.lognormal(math.log(18), 0.4) * (lab["creatinine"] / cr_mu) + _ou(rng, tl, 2, 24), 3, 150
    )
    lab["glucose"] = np.clip(rng.normal(130, 20) + 10 * dl + _ou(rng, tl, 20, 6), 50, 450)
    lab["magnesium"] = np.clip(rng.normal(2.0, 0.15) + _ou(rng, tl, 0.15, 24), 1.0, 3.5)
    lab["calcium"] = np.clip(rng.normal(8.5, 0.4) + _ou(rng, tl, 0.3, 24), 6, 11)
    lab["phosphate"] = np.clip(rng.normal(3.4, 0.6) + _ou(rng, tl, 0.4, 24), 1, 8)
    rnd = {
        "platelets": 0,
        "wbc": 1,
        "hemoglobin": 1,
        "hematocrit": 1,
        "creatinine": 1,
        "bun": 0,
        "sodium": 0,
        "potassium": 1,
        "chloride": 0,
        "bicarbonate": 0,
        "anion_gap": 0,
        "glucose": 0,
        "magnesium": 1,
        "calcium": 1,
        "phosphate": 1,
        "bilirubin": 1,
        "lactate": 1,
        "alt": 0,
        "ast": 0,
        "inr": 1,
        "pt": 1,
        "ptt": 1,
        "po2": 0,
        "pco2": 0,
        "ph": 2,
        "base_excess": 0,
        "fio2_lab": 0,
    }
    # creatinine and bilirubin are reported with 1 decimal: keep clean values off the thresholds
    lab["creatinine"] = np.where(
        cl & (mild != "renal"), np.minimum(lab["creatinine"], 1.14), lab["creatinine"]
    )
    lab["creatinine"] = np.where(
        cl & (mild == "renal"), np.maximum(lab["creatinine"], 1.26), lab["creatinine"]
    )
    lab["creatinine"] = np.where(
        cl & (mild == "renal"), np.minimum(lab["creatinine"], 1.84), lab["creatinine"]
    )
    lab["bilirubin"] = np.where(cl, np.minimum(lab["bilirubin"], 1.14), lab["bilirubin"])
    labrows = rows["LABEVENTS"]

    def put_lab(name: str, t: np.ndarray, v: np.ndarray) -> None:
        if len(t) == 0:
            return
        item, uom = LAB[name][0], LAB[name][1]
        nd = rnd[name]
        v = np.round(v, nd)
        value = v.astype(np.int64).astype(str) if nd == 0 else v.astype(str)
        labrows.add(
            SUBJECT_ID=ids.subject,
            HADM_ID=ids.hadm,
            ITEMID=np.full(len(t), item, np.int64),
            CHARTTIME=at(t),
            VALUE=value.astype(object),
            VALUENUM=v.astype(float),
            VALUEUOM=uom,
        )

    for name in PANEL:
        put_lab(name, tl, lab[name])
    # lactate: about half of the panels (more often in shock), liver/coag panels daily
    lac_mask = rng.random(len(tl)) < 0.5
    put_lab("lactate", tl[lac_mask], lab["lactate"][lac_mask])
    liv = np.r_[True, np.diff(tl) >= 10] | (np.abs(tl - trig_at) < 1e-9)
    tlv = tl[liv]
    put_lab("bilirubin", tlv, lab["bilirubin"][liv])
    inr = np.clip(rng.lognormal(math.log(1.2), 0.12) + _ou(rng, tlv, 0.08, 24), 0.8, 5)
    put_lab("inr", tlv, inr)
    put_lab("pt", tlv, 11 * inr + rng.normal(0, 0.5, len(tlv)))
    put_lab("ptt", tlv, np.clip(rng.normal(31, 4) + _ou(rng, tlv, 3, 24), 20, 120))
    put_lab("alt", tlv, rng.lognormal(math.log(28), 0.5) * np.exp(_ou(rng, tlv, 0.2, 24)))
    put_lab("ast", tlv, rng.lognormal(math.log(32), 0.5) * np.exp(_ou(rng, tlv, 0.2, 24)))

    # --- blood gases: every 4-8 h when ventilated, rarely otherwise ---
    if vent:
        tgas = np.arange(rng.uniform(0.5, 3.0), los, rng.uniform(4.0, 8.0))
    else:
        tgas = (
            np.sort(rng.uniform(0, los, rng.poisson(0.02 * los)))
            if rng.random() < 0.25
            else np.zeros(0)
        )
    if "resp" in triggers and trig_at < los:
        tgas = np.sort(np.r_[tgas, trig_at])
    tgas = np.round(tgas * 60) / 60
    if len(tgas):
        f = fio2 if vent else 0.21
        pf_mu = rng.uniform(220, 330) if "resp" in chronic else rng.uniform(430, 520)
        pf = pf_mu * np.exp(_ou(rng, tgas, 0.08, 24)) - 40 * drift(tgas)
        resp_dys = dys(tgas, "resp")
        pf = np.where(
            resp_dys,
            rng.uniform(110, 190, len(tgas)) if vent else rng.uniform(200, 280, len(tgas)),
            pf,
        )
        pf = _reflect_above(pf, 415.0, rng, clean(tgas))
        po2 = np.clip(pf * f, 40, 600)
        pco2 = np.clip(rng.normal(40, 4) + _ou(rng, tgas, 3, 12), 20, 90)
        ph = np.clip(
            7.40 - 0.008 * (pco2 - 40) - 0.03 * drift(tgas) + rng.normal(0, 0.02, len(tgas)),
            6.9,
            7.6,
        )
        put_lab("po2", tgas, po2)
        put_lab("pco2", tgas, pco2)
        put_lab("ph", tgas, ph)
        put_lab("base_excess", tgas, rng.normal(0, 2, len(tgas)) - 3 * drift(tgas))
        if vent:
            put_lab("fio2_lab", tgas, np.full(len(tgas), f * 100))
        lacg = np.maximum(np.interp(tgas, tl, lab["lactate"]) + rng.normal(0, 0.1, len(tgas)), 0.3)
        put_lab("lactate", tgas, lacg)

    # --- infection workup: culture + antibiotic ---
    si_hour = np.nan
    if group in ("septic", "infection"):
        for _ in range(50):
            if group == "septic":
                c = trigger_t + rng.uniform(-14.0, 34.0)
            else:
                c = si_target + rng.uniform(-2.0, 2.0)
            c = max(c, -20.0)
            c_abs = at(np.array([c]))[0]
            c_day = c_abs.astype("datetime64[D]")
            day_off = int(
                rng.choice([0, 0, 1, 1, 2])
            )  # antibiotic the same day (earlier) or 1-2 days later
            abx_day = c_day + day_off
            abx_h = float((abx_day.astype("datetime64[m]") - intime).astype(np.int64)) / 60.0
            si = min(c, abx_h)
            if group != "septic" or (onset - 22 <= si <= onset + 46 and trigger_t - si < 47.5):
                break
        si_hour = si
        abx = str(rng.choice(ANTIBIOTICS))
        ndays = int(rng.integers(2, 8))
        rows["PRESCRIPTIONS"].add(
            SUBJECT_ID=ids.subject,
            HADM_ID=ids.hadm,
            ICUSTAY_ID=ids.stay,
            STARTDATE=np.array([abx_day.astype("datetime64[m]")]),
            ENDDATE=np.array([(abx_day + ndays).astype("datetime64[m]")]),
            DRUG_TYPE="MAIN",
            DRUG=abx,
            ROUTE="IV",
        )
        spec = str(rng.choice(SPECIMENS[:5]))
        org = str(rng.choice(ORGANISMS)) if group == "septic" else ""
        rows["MICROBIOLOGYEVENTS"].add(
            SUBJECT_ID=ids.subject,
            HADM_ID=ids.hadm,
            CHARTDATE=np.array([c_day.astype("datetime64[m]")]),
            CHARTTIME=np.array([c_abs]),
            SPEC_TYPE_DESC=spec,
            ORG_NAME=org or None,
        )
        if rng.random() < 0.5:  # a second specimen drawn with the first
            rows["MICROBIOLOGYEVENTS"].add(
                SUBJECT_ID=ids.subject,
                HADM_ID=ids.hadm,
                CHARTDATE=np.array([c_day.astype("datetime64[m]")]),
                CHARTTIME=np.array([c_abs]),
                SPEC_TYPE_DESC="URINE",
            )
    elif rng.random() < 0.15:
        # a screening swab without antibiotics (no suspected infection)
        c_abs = at(np.array([rng.uniform(0, los)]))
        rows["MICROBIOLOGYEVENTS"].add(
            SUBJECT_ID=ids.subject,
            HADM_ID=ids.hadm,
            CHARTDATE=c_abs.astype("datetime64[D]").astype("datetime64[m]"),
            CHARTTIME=c_abs,
            SPEC_TYPE_DESC="MRSA SCREEN",
        )
    # ordinary drugs for everyone
    for drug in rng.choice(OTHER_DRUGS, size=int(rng.integers(1, 4)), replace=False):
        st = at(np.array([rng.uniform(-12, los)])).astype("datetime64[D]").astype("datetime64[m]")
        rows["PRESCRIPTIONS"].add(
            SUBJECT_ID=ids.subject,
            HADM_ID=ids.hadm,
            ICUSTAY_ID=ids.stay,
            STARTDATE=st,
            ENDDATE=st + np.timedelta64(int(rng.integers(1, 5)) * 1440, "m"),
            DRUG_TYPE="MAIN",
            DRUG=str(drug),
            ROUTE=str(rng.choice(["IV", "PO", "SC"])),
        )

    # --- patient, admission, stay, diagnoses ---
    dob_years = 300 if very_old else age
    dob = (admit - int(dob_years * 365.25 * 1440)).astype("datetime64[D]").astype("datetime64[m]")
    dod = np.array(
        [death_time.astype("datetime64[D]").astype("datetime64[m]")]
        if died
        else [np.datetime64("NaT", "m")]
    )
    rows["PATIENTS"].add(
        SUBJECT_ID=ids.subject,
        GENDER="F" if female else "M",
        DOB=np.array([dob]),
        DOD=dod,
        DOD_HOSP=dod,
        EXPIRE_FLAG=np.array([int(died)]),
    )
    sepsis_dx = group == "septic" and rng.random() < 0.5
    rows["ADMISSIONS"].add(
        SUBJECT_ID=ids.subject,
        HADM_ID=ids.hadm,
        ADMITTIME=np.array([admit]),
        DISCHTIME=np.array([dischtime]),
        DEATHTIME=np.array([death_time if died else np.datetime64("NaT", "m")]),
        ADMISSION_TYPE=str(rng.choice(["EMERGENCY", "ELECTIVE", "URGENT"], p=[0.8, 0.15, 0.05])),
        DISCHARGE_LOCATION="DEAD/EXPIRED" if died else "HOME",
        DIAGNOSIS="SEPSIS" if sepsis_dx else "OTHER",
        HOSPITAL_EXPIRE_FLAG=np.array([int(died)]),
        HAS_CHARTEVENTS_DATA=np.array([1]),
    )
    unit = str(rng.choice(UNITS_ICU, p=UNIT_P))
    rows["ICUSTAYS"].add(
        SUBJECT_ID=ids.subject,
        HADM_ID=ids.hadm,
        ICUSTAY_ID=ids.stay,
        DBSOURCE=db,
        FIRST_CAREUNIT=unit,
        LAST_CAREUNIT=unit,
        INTIME=np.array([intime]),
        OUTTIME=np.array([outtime]),
        LOS=np.array([round(los / 24, 4)]),
    )
    codes = list(rng.choice(OTHER_ICD9, size=int(rng.integers(1, 5)), replace=False))
    if sepsis_dx:
        codes.insert(0, str(rng.choice(SEPSIS_ICD9)))
    rows["DIAGNOSES_ICD"].add(
        SUBJECT_ID=ids.subject,
        HADM_ID=ids.hadm,
        SEQ_NUM=np.arange(1, len(codes) + 1, dtype=np.int64),
        ICD9_CODE=np.array(codes, dtype=object),
    )
    return {
        "stay_id": ids.stay,
        "icustay_id": ids.stay,
        "subject_id": ids.subject,
        "hadm_id": ids.hadm,
        "group": group,
        "dbsource": db,
        "designed_onset_hour": onset,
        "trigger_hour": trig_at if group in ("septic", "organ") else np.nan,
        "si_hour": si_hour,
        "triggers": ",".join(sorted(triggers)),
        "ventilated": vent,
        "los_hours": los,
        "icd9_sepsis": sepsis_dx,
    }


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------


def _groups(params: SyntheticParams) -> np.ndarray:
    """Group of every patient: exact counts from the fractions, order shuffled by the seed."""
    n = params.n_patients
    n_sep = int(round(n * params.septic_fraction))
    n_conf = int(round(n * params.confounder_fraction))
    n_conf = min(n_conf, (n - n_sep) // 2)
    g = np.array(
        ["septic"] * n_sep
        + ["infection"] * n_conf
        + ["organ"] * n_conf
        + ["control"] * (n - n_sep - 2 * n_conf),
        dtype=object,
    )
    np.random.default_rng([params.seed, 0xC0FFEE]).shuffle(g)
    return g


def _open_gz(path: Path):
    raw = open(path, "wb")
    gz = gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0)
    return raw, gz


def generate(out_dir: Path, params: SyntheticParams, progress: bool = True) -> dict:
    """Write the synthetic MIMIC-III-format database into `out_dir` (atomically); return counts.

    The tables are built in a temporary sibling folder and renamed into place at the end, so
    an interrupted run leaves no folder that looks complete. Returns a summary: rows per table,
    stays per group, seconds and peak RSS (MiB).
    """
    params.validate()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    groups = _groups(params)
    n = params.n_patients
    n_blocks = (n + BLOCK - 1) // BLOCK
    counts = {t: 0 for t in COLUMNS}
    truth_parts = []
    with io.atomic_dir(out_dir) as tmp:
        handles = {}
        try:
            for t in EVENT_TABLES:
                raw, gz = _open_gz(tmp / f"{t}.csv.gz")
                gz.write((",".join(COLUMNS[t]) + "\n").encode())
                handles[t] = (raw, gz)
            bar = tqdm(total=n, desc="synthetic patients", unit="patient", disable=not progress)
            for b in range(n_blocks):
                rng = np.random.default_rng([params.seed, b])
                rows = {t: Rows(t) for t in EVENT_TABLES}
                for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
                    db = "metavision" if rng.random() < params.metavision_fraction else "carevue"
                    ids = _Ids(subject=10_000 + i, hadm=100_000 + i, stay=200_000 + i)
                    truth_parts.append(_simulate_stay(rng, ids, str(groups[i]), db, params, rows))
                    bar.update(1)
                for t in EVENT_TABLES:
                    frame = rows[t].frame(counts[t] + 1)
                    if len(frame):
                        handles[t][1].write(
                            frame.to_csv(header=False, index=False, lineterminator="\n").encode()
                        )
                    counts[t] += len(frame)
            bar.close()
        finally:
            for raw, gz in handles.values():
                gz.close()
                raw.close()
        for t, frame in (("D_ITEMS", d_items()), ("D_LABITEMS", d_labitems())):
            raw, gz = _open_gz(tmp / f"{t}.csv.gz")
            with raw, gz:
                gz.write(frame.to_csv(index=False, lineterminator="\n").encode())
            counts[t] = len(frame)
        truth = pd.DataFrame(truth_parts)
        truth.to_parquet(tmp / "ground_truth.parquet", index=False)
    seconds = time.perf_counter() - t0
    from data_prep.sources.mimic3 import peak_rss_mb

    summary = {
        "out_dir": str(out_dir),
        "n_patients": n,
        "rows": counts,
        "groups": {g: int((groups == g).sum()) for g in GROUPS},
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    log.info("synthetic database: %d patients in %.1f s -> %s", n, seconds, out_dir)
    return summary
