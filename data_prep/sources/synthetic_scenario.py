"""The designed course of one synthetic ICU stay: who is septic, when, and the care around it.

`draw_stay` decides a stay's patient, length, designed events (the septic onset and its organ
dysfunction trigger, the organ confounder's event, the infection confounder's workup time),
chronic dysfunction and clock times. The other draws here are care decisions: vasopressor
infusions, the infection workup (cultures and antibiotics inside the Sepsis-3 pairing windows),
ordinary drugs and the admission's coding. The physiology that follows from the design lives
in `synthetic_physiology`, the table rows in `synthetic_emit`.

Every function draws from the stay's RNG; `synthetic._simulate_stay` calls them in a fixed
order, which is part of the output's determinism.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from data_prep.concepts import variables as V

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
SEPSIS_ICD9 = V.SEPSIS_ICD9  # the ICD-9 codes that exclude a control


@dataclass
class Ids:
    subject: int
    hadm: int
    stay: int


@dataclass
class Stay:
    """One stay's design. Hours are since ICU admission (`intime`); nan where not designed."""

    ids: Ids
    group: str  # septic | infection | organ | control
    db: str  # metavision | carevue
    vent: bool
    age: float
    very_old: bool
    female: bool
    weight: float  # kg
    los: float  # hours
    onset: float  # designed septic onset hour
    trigger_t: float  # septic: the hour SOFA rises by >= 2 (onset + u, 0 < u < 1)
    event_t: float  # organ confounder: the hour of its dysfunction event
    si_target: float  # infection confounder: around when the workup happens
    died: bool
    clean_until: float  # organ components stay at SOFA <= 1 before this hour
    chronic: set[str]  # stable chronic dysfunction (controls, organ confounders)
    mild: str | None  # "renal": one chronic SOFA point (septic, infection)
    triggers: set[str]  # the components that fail at `trig_at`
    trig_at: float  # septic trigger or organ event
    dys_end: float  # the triggered dysfunction lasts [trig_at, dys_end)
    intime: np.datetime64
    admit: np.datetime64
    outtime: np.datetime64
    death_time: np.datetime64 | None
    dischtime: np.datetime64
    first_clock: float  # hours from intime to the next clock hour

    @property
    def mv(self) -> bool:
        return self.db == "metavision"

    def at(self, h: np.ndarray) -> np.ndarray:
        """Absolute times (minutes) of hours `h` since intime."""
        return self.intime + np.round(np.asarray(h, float) * 60).astype(np.int64).astype(
            "timedelta64[m]"
        )

    def dys(self, t: np.ndarray, comp: str) -> np.ndarray:
        """True while the triggered component `comp` is dysfunctional (from trigger to recovery)."""
        if comp not in self.triggers:
            return np.zeros(len(t), bool)
        return (t >= self.trig_at) & (t < self.dys_end)

    def clean(self, t: np.ndarray) -> np.ndarray:
        """True where the organ components must stay clean (SOFA <= 1)."""
        return t < self.clean_until


def draw_stay(rng: np.random.Generator, ids: Ids, group: str, db: str) -> Stay:
    """Draw the design of one stay of `group` in database `db`."""
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
    si_target = np.nan
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
    first_clock = (60 - (intime.astype(np.int64) % 60)) / 60.0
    return Stay(
        ids=ids,
        group=group,
        db=db,
        vent=vent,
        age=age,
        very_old=very_old,
        female=female,
        weight=weight,
        los=los,
        onset=onset,
        trigger_t=trigger_t,
        event_t=event_t,
        si_target=si_target,
        died=died,
        clean_until=clean_until,
        chronic=chronic,
        mild=mild,
        triggers=triggers,
        trig_at=trig_at,
        dys_end=dys_end,
        intime=intime,
        admit=admit,
        outtime=outtime,
        death_time=death_time,
        dischtime=dischtime,
        first_clock=first_clock,
    )


# --------------------------------------------------------------------------------------
# care: vasopressors, infection workup, other drugs, coding
# --------------------------------------------------------------------------------------


@dataclass
class Infusion:
    """A norepinephrine infusion on [start, end) h; its rate (mcg/kg/min) changes at `edges`."""

    start: float
    end: float
    edges: np.ndarray
    rates: np.ndarray


def vasopressor_infusions(rng: np.random.Generator, stay: Stay) -> list[Infusion]:
    """Norepinephrine through a cardiovascular trigger's dysfunction, and for some chronic
    cardiovascular patients from a random hour to discharge."""
    spans = []
    if "cardio" in stay.triggers and stay.trig_at < stay.los:
        spans.append((stay.trig_at, min(stay.dys_end, stay.los)))
    if "cardio" in stay.chronic and rng.random() < 0.5:
        spans.append((rng.uniform(0, stay.los / 2), stay.los))
    out = []
    for st, en in spans:
        edges = np.arange(st, en, rng.uniform(2.0, 6.0))
        if len(edges) == 0:
            continue
        rates = np.round(np.clip(rng.lognormal(math.log(0.08), 0.5, len(edges)), 0.02, 0.5), 3)
        out.append(Infusion(st, en, edges, rates))
    return out


@dataclass
class Culture:
    """A microbiology specimen drawn at `time` (organism None: no growth reported)."""

    time: np.datetime64
    specimen: str
    organism: str | None = None


@dataclass
class Prescription:
    start: np.datetime64  # minutes, at midnight
    end: np.datetime64
    drug: str
    route: str


@dataclass
class Workup:
    """Microbiology specimens and antibiotic orders; `si_hour`: suspected infection (their
    pairing), nan where there is none."""

    cultures: list[Culture] = field(default_factory=list)
    antibiotics: list[Prescription] = field(default_factory=list)
    si_hour: float = np.nan


def infection_workup(rng: np.random.Generator, stay: Stay) -> Workup:
    """Cultures and antibiotics of the stay.

    Septic and infection stays get a culture and an antibiotic (either order) whose pairing
    makes suspected infection; for a septic stay it falls in [onset - 22, onset + 46] h, so the
    designed onset is inside the SI window. Some other stays get a screening swab only.
    """
    group, at = stay.group, stay.at
    if group in ("septic", "infection"):
        for _ in range(50):
            if group == "septic":
                c = stay.trigger_t + rng.uniform(-14.0, 34.0)
            else:
                c = stay.si_target + rng.uniform(-2.0, 2.0)
            c = max(c, -20.0)
            c_abs = at(np.array([c]))[0]
            c_day = c_abs.astype("datetime64[D]")
            day_off = int(
                rng.choice([0, 0, 1, 1, 2])
            )  # antibiotic the same day (earlier) or 1-2 days later
            abx_day = c_day + day_off
            abx_h = float((abx_day.astype("datetime64[m]") - stay.intime).astype(np.int64)) / 60.0
            si = min(c, abx_h)
            if group != "septic" or (
                stay.onset - 22 <= si <= stay.onset + 46 and stay.trigger_t - si < 47.5
            ):
                break
        abx = str(rng.choice(ANTIBIOTICS))
        ndays = int(rng.integers(2, 8))
        orders = [
            Prescription(
                abx_day.astype("datetime64[m]"),
                (abx_day + ndays).astype("datetime64[m]"),
                abx,
                "IV",
            )
        ]
        spec = str(rng.choice(SPECIMENS[:5]))
        org = str(rng.choice(ORGANISMS)) if group == "septic" else ""
        cultures = [Culture(c_abs, spec, org or None)]
        if rng.random() < 0.5:  # a second specimen drawn with the first
            cultures.append(Culture(c_abs, "URINE"))
        return Workup(cultures, orders, si)
    if rng.random() < 0.15:
        # a screening swab without antibiotics (no suspected infection)
        return Workup([Culture(at(np.array([rng.uniform(0, stay.los)]))[0], "MRSA SCREEN")])
    return Workup()


def other_drugs(rng: np.random.Generator, stay: Stay) -> list[Prescription]:
    """Ordinary (non-antibiotic) drugs, for everyone."""
    out = []
    for drug in rng.choice(OTHER_DRUGS, size=int(rng.integers(1, 4)), replace=False):
        st = stay.at(np.array([rng.uniform(-12, stay.los)])).astype("datetime64[D]")
        st = st.astype("datetime64[m]")[0]
        end = st + np.timedelta64(int(rng.integers(1, 5)) * 1440, "m")
        out.append(Prescription(st, end, str(drug), str(rng.choice(["IV", "PO", "SC"]))))
    return out


@dataclass
class Coding:
    """The admission's administrative record: type, ICU unit and ICD-9 diagnoses."""

    sepsis_dx: bool  # septic stays coded with a sepsis ICD-9 code (half of them)
    admission_type: str
    unit: str
    icd9: list[str]


def coding(rng: np.random.Generator, stay: Stay) -> Coding:
    sepsis_dx = stay.group == "septic" and rng.random() < 0.5
    admission_type = str(rng.choice(["EMERGENCY", "ELECTIVE", "URGENT"], p=[0.8, 0.15, 0.05]))
    unit = str(rng.choice(UNITS_ICU, p=UNIT_P))
    codes = list(rng.choice(OTHER_ICD9, size=int(rng.integers(1, 5)), replace=False))
    if sepsis_dx:
        codes.insert(0, str(rng.choice(SEPSIS_ICD9)))
    return Coding(sepsis_dx, admission_type, unit, codes)
