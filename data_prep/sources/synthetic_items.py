"""The items of the synthetic database: ITEMIDs from the concept mapping, labels and units.

Every ITEMID comes from `data_prep.concepts.variables` (the one mapping the reader also uses),
picked by name with `db_item`; only the text (D_ITEMS / D_LABITEMS labels, units as charted)
lives here. `d_items()` and `d_labitems()` build the two dictionary tables.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from data_prep.concepts import variables as V
from data_prep.sources.synthetic_tables import COLUMNS

# Not a concept (the pipeline never reads it): the reader takes the admission weight from
# PATIENTWEIGHT of every INPUTEVENTS_MV row, so the generator charts this non-vasopressor
# item (NaCl 0.9%) to carry it, as MetaVision does.
MV_NACL_0_9 = 225158

# MIMIC-III: MetaVision ITEMIDs are >= 220000, CareVue ones below.
MV_MIN_ITEMID = 220000


def db_item(itemids: Iterable[int], db: str, nth: int = 0) -> int:
    """The `nth` (0 = first) ITEMID of `itemids`, in their order, that belongs to `db`
    ("metavision" or "carevue"): how this generator picks its items from the concept mapping."""
    return [i for i in itemids if (i >= MV_MIN_ITEMID) == (db == "metavision")][nth]


# Units as charted, per database (text; the ITEMIDs come from data_prep.concepts.variables).
CHART_UNITS = {
    "metavision": {
        "hr": "bpm",
        "sbp": "mmHg",
        "dbp": "mmHg",
        "mbp": "mmHg",
        "sbp_a": "mmHg",
        "dbp_a": "mmHg",
        "mbp_a": "mmHg",
        "rr": "insp/min",
        "temp": "?C",
        "spo2": "%",
        "fio2": "",
        "tv": "mL",
        "peep": "cmH2O",
        "mode": "",
        "eye": "",
        "verbal": "",
        "motor": "",
        "weight": "kg",
    },
    "carevue": {
        "hr": "BPM",
        "sbp": "mmHg",
        "dbp": "mmHg",
        "mbp": "mmHg",
        "sbp_a": "mmHg",
        "dbp_a": "mmHg",
        "mbp_a": "mmHg",
        "rr": "BPM",
        "temp": "Deg. F",
        "spo2": "%",
        "fio2": "%",
        "tv": "ml/b",
        "peep": "cmH2O",
        "mode": "",
        "eye": "",
        "verbal": "",
        "motor": "",
        "weight": "kg",
    },
}


def _chart_items(db: str) -> dict[str, tuple[int, str]]:
    """Chart item key -> (ITEMID, unit) in database `db`, the ITEMID from the concept mapping."""
    var = {name: v.itemids for name, v in V.VARIABLES_BY_NAME.items()}
    temp = V.VARIABLES_BY_NAME["temperature"]
    # Celsius in MetaVision; in CareVue the Fahrenheit item (one that `convert` maps to degC)
    temp_items = tuple(i for i in temp.itemids if (i in temp.convert) == (db == "carevue"))
    # key -> (items, n-th MetaVision item, n-th CareVue item among them)
    src = {
        "hr": (var["heart_rate"], 0, 0),
        "sbp": (var["sbp"], 0, 2),  # non-invasive
        "dbp": (var["dbp"], 0, 2),
        "mbp": (var["mbp"], 1, 0),
        "sbp_a": (var["sbp"], 1, 0),  # arterial
        "dbp_a": (var["dbp"], 1, 0),
        "mbp_a": (var["mbp"], 0, 1),
        "rr": (var["resp_rate"], 0, 1),
        "temp": (temp_items, 0, 0),
        "spo2": (var["spo2"], 0, 0),
        "fio2": (var["fio2"], 0, 0),
        "tv": (var["tidal_volume_set"], 0, 0),
        "peep": (var["peep"], 0, 0),
        # ventilator mode (MetaVision) / type (CareVue); VENT_ITEMIDS is a set of markers whose
        # order means nothing (the YAML-backed mapping sorts it), so counted in sorted order
        "mode": (sorted(V.VENT_ITEMIDS), 2, 12),
        "eye": (V.GCS_EYE, 0, 0),
        "verbal": (V.GCS_VERBAL, 0, 0),
        "motor": (V.GCS_MOTOR, 0, 0),
        "weight": (V.WEIGHT_ITEMIDS_KG, 0, 0),
    }
    nth = 1 if db == "metavision" else 2
    return {k: (db_item(s[0], db, s[nth]), CHART_UNITS[db][k]) for k, s in src.items()}


# chart items per database: key -> (itemid, unit)
CHART_ITEMS = {db: _chart_items(db) for db in ("metavision", "carevue")}
# lab name -> (unit, label, fluid, category); the ITEMID is the variable's first (LAB_ITEMS)
LAB_TEXT = {
    "platelets": ("K/uL", "Platelet Count", "Blood", "Hematology"),
    "wbc": ("K/uL", "White Blood Cells", "Blood", "Hematology"),
    "hemoglobin": ("g/dL", "Hemoglobin", "Blood", "Hematology"),
    "hematocrit": ("%", "Hematocrit", "Blood", "Hematology"),
    "creatinine": ("mg/dL", "Creatinine", "Blood", "Chemistry"),
    "bun": ("mg/dL", "Urea Nitrogen", "Blood", "Chemistry"),
    "sodium": ("mEq/L", "Sodium", "Blood", "Chemistry"),
    "potassium": ("mEq/L", "Potassium", "Blood", "Chemistry"),
    "chloride": ("mEq/L", "Chloride", "Blood", "Chemistry"),
    "bicarbonate": ("mEq/L", "Bicarbonate", "Blood", "Chemistry"),
    "anion_gap": ("mEq/L", "Anion Gap", "Blood", "Chemistry"),
    "glucose": ("mg/dL", "Glucose", "Blood", "Chemistry"),
    "magnesium": ("mg/dL", "Magnesium", "Blood", "Chemistry"),
    "calcium": ("mg/dL", "Calcium, Total", "Blood", "Chemistry"),
    "phosphate": ("mg/dL", "Phosphate", "Blood", "Chemistry"),
    "bilirubin": ("mg/dL", "Bilirubin, Total", "Blood", "Chemistry"),
    "alt": ("IU/L", "Alanine Aminotransferase (ALT)", "Blood", "Chemistry"),
    "ast": ("IU/L", "Asparate Aminotransferase (AST)", "Blood", "Chemistry"),
    "inr": ("", "INR(PT)", "Blood", "Hematology"),
    "pt": ("sec", "PT", "Blood", "Hematology"),
    "ptt": ("sec", "PTT", "Blood", "Hematology"),
    "lactate": ("mmol/L", "Lactate", "Blood", "Blood Gas"),
    "po2": ("mm Hg", "pO2", "Blood", "Blood Gas"),
    "pco2": ("mm Hg", "pCO2", "Blood", "Blood Gas"),
    "ph": ("units", "pH", "Blood", "Blood Gas"),
    "base_excess": ("mEq/L", "Base Excess", "Blood", "Blood Gas"),
    "fio2_lab": ("", "Oxygen", "Blood", "Blood Gas"),
}
LAB_ITEMS = {
    name: V.LAB_FIO2 if name == "fio2_lab" else V.VARIABLES_BY_NAME[name].itemids[0]
    for name in LAB_TEXT
}
LAB = {  # name -> (itemid, unit, label, fluid, category)
    name: (LAB_ITEMS[name], *text) for name, text in LAB_TEXT.items()
}
PANEL = (
    "platelets",
    "wbc",
    "hemoglobin",
    "hematocrit",
    "creatinine",
    "bun",
    "sodium",
    "potassium",
    "chloride",
    "bicarbonate",
    "anion_gap",
    "glucose",
    "magnesium",
    "calcium",
    "phosphate",
)
# Reported decimals (values are rounded to these; 0: written as integers).
CHART_DIGITS = {"temp": 1, "weight": 1}  # others 0
LAB_DIGITS = {
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
URINE_ITEM = {db: db_item(V.URINE_ITEMIDS, db) for db in ("metavision", "carevue")}
# norepinephrine: in CareVue the weight-based rate item (mcg/kg/min), its second
NOREPI = {
    db: db_item(V.VASOPRESSORS["norepinephrine"], db, 0 if db == "metavision" else 1)
    for db in ("metavision", "carevue")
}


# --------------------------------------------------------------------------------------
# dictionaries
# --------------------------------------------------------------------------------------


def d_items() -> pd.DataFrame:
    """D_ITEMS: every chart, output and input item the generator writes, by ITEMID."""
    names = {
        "hr": "Heart Rate",
        "sbp": "Non Invasive Blood Pressure systolic",
        "dbp": "Non Invasive Blood Pressure diastolic",
        "mbp": "Non Invasive Blood Pressure mean",
        "sbp_a": "Arterial Blood Pressure systolic",
        "dbp_a": "Arterial Blood Pressure diastolic",
        "mbp_a": "Arterial Blood Pressure mean",
        "rr": "Respiratory Rate",
        "temp": "Temperature",
        "spo2": "O2 saturation pulseoxymetry",
        "fio2": "Inspired O2 Fraction",
        "tv": "Tidal Volume (set)",
        "peep": "PEEP set",
        "mode": "Ventilator Mode",
        "eye": "GCS - Eye Opening",
        "verbal": "GCS - Verbal Response",
        "motor": "GCS - Motor Response",
        "weight": "Admission Weight (Kg)",
    }
    recs = []
    for db, its in CHART_ITEMS.items():
        for key, (item, uom) in its.items():
            recs.append((item, names[key], db, "chartevents", uom or None))
        recs.append(
            (
                URINE_ITEM[db],
                "Foley" if db == "metavision" else "Urine Out Foley",
                db,
                "outputevents",
                "mL",
            )
        )
        recs.append(
            (
                NOREPI[db],
                "Norepinephrine" if db == "metavision" else "Levophed-k",
                db,
                "inputevents_mv" if db == "metavision" else "inputevents_cv",
                "mcg/kg/min",
            )
        )
    recs.append((MV_NACL_0_9, "NaCl 0.9%", "metavision", "inputevents_mv", "mL"))
    recs.sort()
    return pd.DataFrame(
        {
            "ROW_ID": np.arange(1, len(recs) + 1),
            "ITEMID": [r[0] for r in recs],
            "LABEL": [r[1] for r in recs],
            "ABBREVIATION": None,
            "DBSOURCE": [r[2] for r in recs],
            "LINKSTO": [r[3] for r in recs],
            "CATEGORY": None,
            "UNITNAME": [r[4] for r in recs],
            "PARAM_TYPE": None,
            "CONCEPTID": None,
        }
    )[list(COLUMNS["D_ITEMS"])]


def d_labitems() -> pd.DataFrame:
    """D_LABITEMS: every lab item the generator writes, by ITEMID."""
    recs = sorted((v[0], v[2], v[3], v[4]) for v in LAB.values())
    return pd.DataFrame(
        {
            "ROW_ID": np.arange(1, len(recs) + 1),
            "ITEMID": [r[0] for r in recs],
            "LABEL": [r[1] for r in recs],
            "FLUID": [r[2] for r in recs],
            "CATEGORY": [r[3] for r in recs],
            "LOINC_CODE": None,
        }
    )
