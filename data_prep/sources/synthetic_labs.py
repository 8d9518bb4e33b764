"""Laboratory values and blood gases of a synthetic stay (part of its physiology).

Labs are drawn every 4-20 h (`lab_times`), plus one at a coagulation / renal / liver trigger:
a chemistry and haematology panel each time, lactate with about half, the liver and
coagulation panel about daily. Blood gases come every 4-8 h in ventilated patients and rarely
otherwise, plus one at a respiratory trigger. Platelets, creatinine, bilirubin and PaO2/FiO2
are kept off the SOFA thresholds while the stay must be clean, and cross them while the
triggered component is dysfunctional.
"""

from __future__ import annotations

import math

import numpy as np

from data_prep.sources.synthetic_items import PANEL
from data_prep.sources.synthetic_physiology import (
    Course,
    Series,
    lab_times,
    ou,
    reflect_above,
    reflect_below,
)
from data_prep.sources.synthetic_scenario import Stay


def labs(
    rng: np.random.Generator, stay: Stay, course: Course
) -> tuple[list[Series], np.ndarray, np.ndarray]:
    """Lab series in reporting order; also the panel times and their lactate values (which the
    blood gases' lactate follows)."""
    los, chronic, mild = stay.los, stay.chronic, stay.mild
    trig_at = stay.trig_at
    tl = lab_times(rng, los)
    if rng.random() < 0.5:
        tl = np.r_[-round(rng.uniform(1.0, 12.0) * 60) / 60, tl]
    if not np.isnan(trig_at) and trig_at < los and stay.triggers & {"coag", "renal", "liver"}:
        tl = np.sort(np.r_[tl, trig_at])
    zl, dl, odl = course.lat(tl), course.drift(tl), course.organ_drift(tl)
    cl = stay.clean(tl)
    lab = {}
    plt_mu = rng.lognormal(math.log(230), 0.3) if "coag" not in chronic else rng.uniform(60, 140)
    lab["platelets"] = plt_mu * np.exp(ou(rng, tl, 0.1, 48)) - 20 * dl
    lab["platelets"] = np.where(
        stay.dys(tl, "coag"), rng.uniform(35, 90, len(tl)), lab["platelets"]
    )
    lab["platelets"] = reflect_above(lab["platelets"], 158.0, rng, cl)
    cr_mu = (
        rng.uniform(1.25, 1.7)
        if mild == "renal"
        else rng.uniform(1.6, 3.4)
        if "renal" in chronic
        else rng.lognormal(math.log(0.8), 0.2)
    )
    lab["creatinine"] = cr_mu * np.exp(ou(rng, tl, 0.06, 48)) + 0.08 * dl
    lab["creatinine"] = np.where(
        stay.dys(tl, "renal"), rng.uniform(2.2, 3.8, len(tl)), lab["creatinine"]
    )
    if mild == "renal":
        lab["creatinine"] = reflect_above(
            reflect_below(lab["creatinine"], 1.9, rng, cl), 1.21, rng, cl
        )
    else:
        lab["creatinine"] = reflect_below(lab["creatinine"], 1.12, rng, cl)
    bili_mu = rng.uniform(1.6, 5) if "liver" in chronic else rng.lognormal(math.log(0.6), 0.3)
    lab["bilirubin"] = bili_mu * np.exp(ou(rng, tl, 0.1, 48)) + 0.1 * dl
    lab["bilirubin"] = np.where(
        stay.dys(tl, "liver"), rng.uniform(2.1, 4.5, len(tl)), lab["bilirubin"]
    )
    lab["bilirubin"] = reflect_below(lab["bilirubin"], 1.12, rng, cl)
    lab["wbc"] = np.maximum(
        rng.lognormal(math.log(9), 0.25)
        + 0.5 * zl
        + 5 * course.wbc_sign * dl
        + ou(rng, tl, 1.2, 24)
        + rng.normal(0, 0.5, len(tl)),
        0.5,
    )
    lab["lactate"] = np.maximum(
        rng.lognormal(math.log(1.2), 0.25)
        + 0.2 * zl
        + 1.1 * dl
        + 0.9 * odl
        + ou(rng, tl, 0.2, 8)
        + rng.normal(0, 0.1, len(tl)),
        0.3,
    )
    hgb = rng.normal(10.5, 1.4) + ou(rng, tl, 0.4, 24) - 1.5 * odl
    lab["hemoglobin"] = np.clip(hgb, 5, 17)
    lab["hematocrit"] = np.clip(3 * lab["hemoglobin"] + rng.normal(0, 1, len(tl)), 15, 55)
    lab["sodium"] = rng.normal(139, 3) + ou(rng, tl, 1.5, 24)
    lab["potassium"] = np.clip(rng.normal(4.1, 0.35) + ou(rng, tl, 0.3, 12), 2.5, 6.5)
    lab["chloride"] = rng.normal(104, 3.5) + ou(rng, tl, 1.5, 24)
    lab["bicarbonate"] = rng.normal(24, 2.5) + ou(rng, tl, 1.2, 24) - 2.5 * dl - 2 * odl
    lab["anion_gap"] = np.clip(
        lab["sodium"] - lab["chloride"] - lab["bicarbonate"] + rng.normal(0, 1, len(tl)), 3, 30
    )
    lab["bun"] = np.clip(
        rng.lognormal(math.log(18), 0.4) * (lab["creatinine"] / cr_mu) + ou(rng, tl, 2, 24), 3, 150
    )
    lab["glucose"] = np.clip(rng.normal(130, 20) + 10 * dl + ou(rng, tl, 20, 6), 50, 450)
    lab["magnesium"] = np.clip(rng.normal(2.0, 0.15) + ou(rng, tl, 0.15, 24), 1.0, 3.5)
    lab["calcium"] = np.clip(rng.normal(8.5, 0.4) + ou(rng, tl, 0.3, 24), 6, 11)
    lab["phosphate"] = np.clip(rng.normal(3.4, 0.6) + ou(rng, tl, 0.4, 24), 1, 8)
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

    out = [Series(name, tl, lab[name]) for name in PANEL]
    # lactate: about half of the panels (more often in shock), liver/coag panels daily
    lac_mask = rng.random(len(tl)) < 0.5
    out.append(Series("lactate", tl[lac_mask], lab["lactate"][lac_mask]))
    liv = np.r_[True, np.diff(tl) >= 10] | (np.abs(tl - trig_at) < 1e-9)
    tlv = tl[liv]
    out.append(Series("bilirubin", tlv, lab["bilirubin"][liv]))
    inr = np.clip(rng.lognormal(math.log(1.2), 0.12) + ou(rng, tlv, 0.08, 24), 0.8, 5)
    out.append(Series("inr", tlv, inr))
    out.append(Series("pt", tlv, 11 * inr + rng.normal(0, 0.5, len(tlv))))
    out.append(Series("ptt", tlv, np.clip(rng.normal(31, 4) + ou(rng, tlv, 3, 24), 20, 120)))
    out.append(Series("alt", tlv, rng.lognormal(math.log(28), 0.5) * np.exp(ou(rng, tlv, 0.2, 24))))
    out.append(Series("ast", tlv, rng.lognormal(math.log(32), 0.5) * np.exp(ou(rng, tlv, 0.2, 24))))
    return out, tl, lab["lactate"]


def blood_gases(
    rng: np.random.Generator,
    stay: Stay,
    course: Course,
    fio2: float,
    tl: np.ndarray,
    lactate: np.ndarray,
) -> list[Series]:
    """PaO2 (from a PaO2/FiO2 ratio and the FiO2), PaCO2, pH, base excess, the gas's FiO2 when
    ventilated, and lactate (following the panels' `lactate` at times `tl`)."""
    los, vent = stay.los, stay.vent
    # --- every 4-8 h when ventilated, rarely otherwise ---
    if vent:
        tgas = np.arange(rng.uniform(0.5, 3.0), los, rng.uniform(4.0, 8.0))
    else:
        tgas = (
            np.sort(rng.uniform(0, los, rng.poisson(0.02 * los)))
            if rng.random() < 0.25
            else np.zeros(0)
        )
    if "resp" in stay.triggers and stay.trig_at < los:
        tgas = np.sort(np.r_[tgas, stay.trig_at])
    tgas = np.round(tgas * 60) / 60
    if not len(tgas):
        return []
    f = fio2 if vent else 0.21
    pf_mu = rng.uniform(220, 330) if "resp" in stay.chronic else rng.uniform(430, 520)
    pf = pf_mu * np.exp(ou(rng, tgas, 0.08, 24)) - 40 * course.drift(tgas)
    resp_dys = stay.dys(tgas, "resp")
    pf = np.where(
        resp_dys,
        rng.uniform(110, 190, len(tgas)) if vent else rng.uniform(200, 280, len(tgas)),
        pf,
    )
    pf = reflect_above(pf, 415.0, rng, stay.clean(tgas))
    po2 = np.clip(pf * f, 40, 600)
    pco2 = np.clip(rng.normal(40, 4) + ou(rng, tgas, 3, 12), 20, 90)
    ph = np.clip(
        7.40 - 0.008 * (pco2 - 40) - 0.03 * course.drift(tgas) + rng.normal(0, 0.02, len(tgas)),
        6.9,
        7.6,
    )
    out = [
        Series("po2", tgas, po2),
        Series("pco2", tgas, pco2),
        Series("ph", tgas, ph),
        Series("base_excess", tgas, rng.normal(0, 2, len(tgas)) - 3 * course.drift(tgas)),
    ]
    if vent:
        out.append(Series("fio2_lab", tgas, np.full(len(tgas), f * 100)))
    lacg = np.maximum(np.interp(tgas, tl, lactate) + rng.normal(0, 0.1, len(tgas)), 0.3)
    out.append(Series("lactate", tgas, lacg))
    return out
