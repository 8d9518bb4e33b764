"""The latent patient state of a synthetic stay and the measurements that follow from it.

Trajectories are Ornstein-Uhlenbeck processes around per-patient means with a shared latent
severity process (`Latent`: heart rate, MAP, respiratory rate, lactate move together) plus
measurement noise. `Course` adds the early-warning drift before a septic onset (or an
infection confounder's workup, or an organ confounder's event). The stay's design
(`synthetic_scenario.Stay`) decides when organ components fail and when they must stay clean
(SOFA <= 1: values reflected away from the thresholds).

Each function returns `Series` (an item key of `synthetic_items`, times in hours, values) in
the order they are charted; `synthetic_emit` writes them as rows. All draw from the stay's RNG
in a fixed order (part of the output's determinism).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data_prep.sources.synthetic_scenario import Stay

# --------------------------------------------------------------------------------------
# trajectories
# --------------------------------------------------------------------------------------


def ou(rng: np.random.Generator, t: np.ndarray, sd: float, tau: float) -> np.ndarray:
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


class Latent:
    """Shared severity process on an hourly grid (interpolated to any time)."""

    def __init__(self, rng: np.random.Generator, t0: float, t1: float) -> None:
        self.grid = np.arange(math.floor(t0) - 1, math.ceil(t1) + 2, dtype=float)
        self.val = ou(rng, self.grid, 1.0, 10.0)

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self.grid, self.val)


def ramp(t: np.ndarray, start: float, end: float, decay_after: float | None = None) -> np.ndarray:
    """0 before `start`, rising (convex) to 1 at `end`, 1 after (or decaying after `decay_after`)."""
    r = np.clip((t - start) / max(end - start, 1e-6), 0.0, 1.0) ** 1.5
    if decay_after is not None:
        r = r * np.exp(-np.clip(t - decay_after, 0, None) / 12.0)
    return r


def reflect_above(
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


def reflect_below(
    x: np.ndarray, hi: float, rng: np.random.Generator, mask: np.ndarray | None = None
) -> np.ndarray:
    """Values above `hi` (where mask) reflected to just below it."""
    bad = x > hi if mask is None else (x > hi) & mask
    if bad.any():
        x = x.copy()
        x[bad] = (
            hi
            - np.abs(x[bad] - hi) * 0.5
            - rng.uniform(0.5, 3.0, bad.sum()) * (abs(hi) * 0.01 + 0.01)
        )
    return x


def schedule_hourly(
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


def lab_times(rng: np.random.Generator, los: float) -> np.ndarray:
    """Lab draw times: the first in the first 2 h, then every 4-20 h."""
    t = [rng.uniform(0.2, 2.0)]
    while True:
        nxt = t[-1] + rng.choice([4.0, 6.0, 8.0, 12.0, 12.0, 16.0, 20.0]) + rng.uniform(-0.5, 0.5)
        if nxt >= los:
            break
        t.append(nxt)
    return np.round(np.array(t) * 60) / 60


# --------------------------------------------------------------------------------------
# one stay
# --------------------------------------------------------------------------------------


@dataclass
class Series:
    """Values of one item (a key of `synthetic_items.CHART_ITEMS` or `LAB`) at hours `t`;
    `text`: VALUE as charted where it is not the number."""

    name: str
    t: np.ndarray
    vals: np.ndarray
    text: np.ndarray | None = None


class Course:
    """The latent severity process and the drift signals of one stay."""

    def __init__(self, rng: np.random.Generator, stay: Stay, signal_strength: float) -> None:
        self.stay = stay
        self.lat = Latent(rng, -30, stay.los + 1)
        # --- drift: the early-warning signal ---
        self.amp = signal_strength * rng.uniform(0.4, 1.6)
        self.fever_sign = -0.7 if rng.random() < 0.2 else 1.0  # some patients hypothermic
        self.wbc_sign = -0.6 if rng.random() < 0.15 else 1.0  # some leukopenic
        self.lead = rng.uniform(6.0, 24.0)
        self.amp_o = signal_strength * rng.uniform(0.3, 1.2)
        self.lead_o = rng.uniform(3.0, 16.0)

    def drift(self, t: np.ndarray) -> np.ndarray:
        """Septic: rising over the lead time to the onset; infection: milder, then decaying."""
        s = self.stay
        if s.group == "septic":
            return self.amp * ramp(t, s.onset - self.lead, s.onset + 1.0)
        if s.group == "infection":
            return (
                0.6
                * self.amp
                * ramp(
                    t, s.si_target - self.lead, s.si_target + 4.0, decay_after=s.si_target + 12.0
                )
            )
        return np.zeros_like(t)

    def organ_drift(self, t: np.ndarray) -> np.ndarray:
        """Organ confounder: haemodynamic drift up to its event, decaying after."""
        s = self.stay
        if s.group != "organ":
            return np.zeros_like(t)
        return self.amp_o * ramp(
            t, s.event_t - self.lead_o, s.event_t, decay_after=s.event_t + 24.0
        )


def vitals(rng: np.random.Generator, stay: Stay, course: Course) -> tuple[list[Series], np.ndarray]:
    """Hourly vitals, 4-hourly temperature, the admission weight, and a MAP < 70 at a
    cardiovascular trigger; also returns the hourly charting times."""
    los, chronic = stay.los, stay.chronic
    tv = schedule_hourly(rng, stay.first_clock, los)
    z = course.lat(tv)
    d = course.drift(tv)
    od = course.organ_drift(tv)
    hr = (
        rng.normal(84, 11)
        + 5 * z
        + 16 * d
        + 14 * od
        + ou(rng, tv, 5, 4)
        + rng.normal(0, 3, len(tv))
    )
    map_mu = rng.normal(82, 7) - (8 if "cardio" in chronic else 0)
    mbp = map_mu - 3.5 * z - 5 * d - 8 * od + ou(rng, tv, 4, 4) + rng.normal(0, 3, len(tv))
    in_dys = stay.dys(tv, "cardio")
    mbp = np.where(in_dys, rng.uniform(60, 71, len(tv)), mbp)
    mbp = reflect_above(mbp, 71.0, rng, stay.clean(tv))
    pp = rng.normal(48, 9)
    sbp = mbp + (2 / 3) * pp + rng.normal(0, 4, len(tv))
    dbp = mbp - pp / 3 + rng.normal(0, 3, len(tv))
    rr = (
        rng.normal(18, 3)
        + 1.5 * z
        + 4 * d
        + 2 * od
        + ou(rng, tv, 2, 3)
        + rng.normal(0, 1.2, len(tv))
    )
    spo2 = np.minimum(
        rng.normal(97, 1.2) - 1.3 * d - 0.5 * np.maximum(z, 0) + rng.normal(0, 1, len(tv)), 100
    )
    hr, rr = np.clip(hr, 35, 190), np.clip(rr, 6, 50)
    arterial = stay.vent or rng.random() < 0.3
    sfx = "_a" if arterial else ""
    out = [
        Series("hr", tv, hr),
        Series("sbp" + sfx, tv, np.clip(sbp, 60, 230)),
        Series("dbp" + sfx, tv, np.clip(dbp, 25, 130)),
        Series("mbp" + sfx, tv, np.clip(mbp, 40, 160)),
        Series("rr", tv, rr),
        Series("spo2", tv, np.clip(spo2, 80, 100)),
    ]
    tt = tv[::4] if len(tv) else tv
    temp = (
        rng.normal(36.9, 0.3)
        + 0.25 * z[::4]
        + 0.9 * course.fever_sign * d[::4]
        + ou(rng, tt, 0.25, 6)
        + rng.normal(0, 0.1, len(tt))
    )
    temp = np.clip(temp, 34.0, 41.5)
    out.append(Series("temp", tt, temp * 9 / 5 + 32 if stay.db == "carevue" else temp))
    out.append(Series("weight", np.array([min(0.5, los / 2)]), np.array([stay.weight])))

    # extra charting at a cardiovascular trigger: MAP < 70 at the trigger time
    if "cardio" in stay.triggers and stay.trig_at < los:
        m = np.array([rng.uniform(55, 68)])
        t1 = np.array([stay.trig_at])
        out += [
            Series("mbp" + sfx, t1, m),
            Series("sbp" + sfx, t1, m + 30),
            Series("dbp" + sfx, t1, m - 14),
        ]
    return out, tv


def ventilation_and_gcs(
    rng: np.random.Generator, stay: Stay, tv: np.ndarray
) -> tuple[list[Series], float]:
    """Ventilator settings (FiO2, tidal volume, PEEP, mode) and GCS at the vitals' times `tv`;
    also returns the FiO2 (fraction) of the ventilated patient's gases."""
    mv, vent, triggers = stay.mv, stay.vent, stay.triggers
    out = []
    fio2 = round(rng.uniform(0.35, 0.6), 1)
    if vent:
        tvent = tv[::2]
        out.append(Series("fio2", tvent, np.full(len(tvent), fio2 * 100)))
        t4 = tv[::4]
        out.append(Series("tv", t4, rng.normal(480, 50) + rng.normal(0, 15, len(t4))))
        out.append(Series("peep", t4, np.full(len(t4), float(rng.choice([5, 5, 8, 10])))))
        mode_text = "CMV/ASSIST/AutoFlow" if mv else "Drager"
        out.append(
            Series("mode", t4, np.full(len(t4), np.nan), np.full(len(t4), mode_text, object))
        )
    tg = tv[::4] if len(tv) else tv
    if vent:
        eye = rng.integers(1, 5, len(tg)).astype(float)
        motor = rng.integers(3, 7, len(tg)).astype(float)
        txt = "No Response-ETT" if mv else "1.0 ET/Trach"
        out.append(Series("eye", tg, eye))
        out.append(Series("verbal", tg, np.full(len(tg), 1.0), np.full(len(tg), txt, object)))
        out.append(Series("motor", tg, motor))
    else:
        cns_dys = stay.dys(tg, "cns")
        eye = np.where(cns_dys, rng.integers(2, 4, len(tg)), 4).astype(float)
        verbal = np.where(cns_dys, rng.integers(2, 4, len(tg)), 5).astype(float)
        motor = np.where(cns_dys, rng.integers(4, 6, len(tg)), 6).astype(float)
        if "cns" in triggers and stay.trig_at < stay.los:
            tg = np.r_[tg, stay.trig_at]
            eye, verbal, motor = np.r_[eye, 2.0], np.r_[verbal, 3.0], np.r_[motor, 5.0]
        out += [Series("eye", tg, eye), Series("verbal", tg, verbal), Series("motor", tg, motor)]
    return out, fio2


def urine_output(
    rng: np.random.Generator, stay: Stay, course: Course
) -> tuple[np.ndarray, np.ndarray]:
    """Hourly urine output (mL): its times and volumes."""
    tu = schedule_hourly(rng, stay.first_clock, stay.los, miss=0.08)
    uo = (
        rng.uniform(50, 140) * np.exp(ou(rng, tu, 0.3, 6))
        - 25 * course.drift(tu)
        - 20 * course.organ_drift(tu)
    )
    low_u = stay.dys(tu, "renal") | stay.dys(tu, "cardio")
    uo = np.where(low_u, rng.uniform(5, 25, len(tu)), uo)
    uo = np.where(
        stay.clean(tu), np.maximum(uo, 45 + rng.uniform(0, 10, len(tu))), np.maximum(uo, 0)
    )
    return tu, uo
