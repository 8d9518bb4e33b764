"""The variable dictionary: MIMIC-III ITEMIDs, units, conversions and plausible ranges.

One entry per clinical variable used by the learners (vitals from CHARTEVENTS, labs from
LABEVENTS), plus the item sets the Sepsis-3 concepts need (SOFA inputs, ventilation,
urine output, vasopressors, weight). CareVue (ITEMID < 220000 in CHARTEVENTS) and
MetaVision (>= 220000) items are both listed. Values outside a variable's plausible range
are dropped and counted by the caller; this module only describes.

The reference code (Moor et al.) never matched anion gap (wrong ITEMID); here it is 50868.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Variable:
    """One clinical variable: where it lives in MIMIC-III and what values are plausible."""

    name: str
    table: str  # "chartevents" | "labevents"
    itemids: tuple[int, ...]
    unit: str
    low: float
    high: float
    # ITEMIDs whose values are in another unit, with the conversion to `unit`:
    # {itemid: (scale, offset)} meaning value_unit = value * scale + offset.
    convert: dict[int, tuple[float, float]] = field(default_factory=dict)
    # PhysioNet 2019 column name, where the challenge has this variable.
    physionet: str | None = None


F_TO_C = (5.0 / 9.0, -32.0 * 5.0 / 9.0)

# The tables below read as tables (one variable or item group per line): no reformatting.
# fmt: off
VARIABLES: tuple[Variable, ...] = (
    # --- vitals and respiratory settings (CHARTEVENTS) ---
    Variable("heart_rate", "chartevents", (211, 220045), "bpm", 0, 300, physionet="HR"),
    Variable("sbp", "chartevents", (51, 442, 455, 6701, 220179, 220050, 225309), "mmHg", 0, 400, physionet="SBP"),
    Variable("dbp", "chartevents", (8368, 8440, 8441, 8555, 220180, 220051, 225310), "mmHg", 0, 300, physionet="DBP"),
    Variable("mbp", "chartevents", (456, 52, 6702, 443, 220052, 220181, 225312), "mmHg", 0, 300, physionet="MAP"),
    Variable("resp_rate", "chartevents", (615, 618, 220210, 224690), "/min", 0, 80, physionet="Resp"),
    Variable(
        "temperature", "chartevents", (223762, 676, 223761, 678), "degC", 25, 45,
        convert={223761: F_TO_C, 678: F_TO_C}, physionet="Temp",
    ),
    Variable("spo2", "chartevents", (646, 220277), "%", 0, 100, physionet="O2Sat"),
    Variable("cardiac_output", "chartevents", (90, 220088), "L/min", 0, 20),
    Variable("tidal_volume_set", "chartevents", (683, 224684), "mL", 0, 2000),
    Variable("tidal_volume_observed", "chartevents", (682, 224685), "mL", 0, 2000),
    Variable("tidal_volume_spont", "chartevents", (654, 224686), "mL", 0, 2000),
    Variable("peak_insp_pressure", "chartevents", (535, 224695), "cmH2O", 0, 100),
    Variable("peep", "chartevents", (506, 220339), "cmH2O", 0, 50),
    Variable("o2_flow", "chartevents", (470, 471, 223834), "L/min", 0, 70),
    # FiO2 is charted as % or fraction; callers normalise to a fraction (value > 1 -> /100).
    Variable("fio2", "chartevents", (3420, 190, 223835, 3422), "fraction", 0.21, 1.0, physionet="FiO2"),
    # --- laboratory (LABEVENTS) ---
    Variable("albumin", "labevents", (50862,), "g/dL", 0, 10),
    Variable("alt", "labevents", (50861,), "IU/L", 0, 20000),
    Variable("anion_gap", "labevents", (50868,), "mEq/L", 0, 100),
    Variable("ast", "labevents", (50878,), "IU/L", 0, 20000, physionet="AST"),
    Variable("bands", "labevents", (51144,), "%", 0, 100),
    Variable("base_excess", "labevents", (50802,), "mEq/L", -50, 50, physionet="BaseExcess"),
    Variable("bicarbonate", "labevents", (50882, 50803), "mEq/L", 0, 60, physionet="HCO3"),
    Variable("bilirubin", "labevents", (50885,), "mg/dL", 0, 150, physionet="Bilirubin_total"),
    Variable("bun", "labevents", (51006,), "mg/dL", 0, 300, physionet="BUN"),
    Variable("calcium", "labevents", (50893,), "mg/dL", 0, 30, physionet="Calcium"),
    Variable("calcium_free", "labevents", (50808,), "mmol/L", 0, 10),
    Variable("chloride", "labevents", (50902, 50806), "mEq/L", 50, 200, physionet="Chloride"),
    Variable("ck", "labevents", (50910,), "IU/L", 0, 100000),
    Variable("ck_mb", "labevents", (50911,), "ng/mL", 0, 10000),
    Variable("creatinine", "labevents", (50912,), "mg/dL", 0, 150, physionet="Creatinine"),
    Variable("fibrinogen", "labevents", (51214,), "mg/dL", 0, 2000, physionet="Fibrinogen"),
    Variable("glucose", "labevents", (50931, 50809), "mg/dL", 0, 2000, physionet="Glucose"),
    Variable("hematocrit", "labevents", (51221, 50810), "%", 0, 100, physionet="Hct"),
    Variable("hemoglobin", "labevents", (51222, 50811), "g/dL", 0, 50, physionet="Hgb"),
    Variable("inr", "labevents", (51237,), "ratio", 0, 50),
    Variable("lactate", "labevents", (50813,), "mmol/L", 0, 50, physionet="Lactate"),
    Variable("ldh", "labevents", (50954,), "IU/L", 0, 100000),
    Variable("magnesium", "labevents", (50960,), "mg/dL", 0, 20, physionet="Magnesium"),
    Variable("pco2", "labevents", (50818,), "mmHg", 0, 200, physionet="PaCO2"),
    Variable("ph", "labevents", (50820,), "pH", 6.5, 8.0, physionet="pH"),
    Variable("phosphate", "labevents", (50970,), "mg/dL", 0, 30, physionet="Phosphate"),
    Variable("platelets", "labevents", (51265,), "10^3/uL", 0, 2000, physionet="Platelets"),
    Variable("po2", "labevents", (50821,), "mmHg", 0, 800),
    Variable("potassium", "labevents", (50971, 50822), "mEq/L", 0, 30, physionet="Potassium"),
    Variable("pt", "labevents", (51274,), "sec", 0, 150),
    Variable("ptt", "labevents", (51275,), "sec", 0, 150, physionet="PTT"),
    Variable("so2", "labevents", (50817,), "%", 0, 100, physionet="SaO2"),
    Variable("sodium", "labevents", (50983, 50824), "mEq/L", 50, 250),
    Variable("troponin_t", "labevents", (51003,), "ng/mL", 0, 100, physionet="TroponinI"),
    Variable("wbc", "labevents", (51301, 51300), "10^3/uL", 0, 1000, physionet="WBC"),
)

VARIABLES_BY_NAME: dict[str, Variable] = {v.name: v for v in VARIABLES}

# PhysioNet 2019 columns with no MIMIC-III counterpart above (kept under their own names).
PHYSIONET_EXTRA = {"EtCO2": ("etco2", "mmHg", 0, 100), "Alkalinephos": ("alkaline_phosphatase", "IU/L", 0, 5000),
                   "Bilirubin_direct": ("bilirubin_direct", "mg/dL", 0, 100)}


def itemid_to_variable(table: str) -> dict[int, Variable]:
    """Map each ITEMID of `table` ("chartevents" or "labevents") to its variable."""
    out: dict[int, Variable] = {}
    for var in VARIABLES:
        if var.table == table:
            for item in var.itemids:
                out[item] = var
    return out


# --------------------------------------------------------------------------------------
# Item sets for the Sepsis-3 concepts (PIPELINE.md section 1)
# --------------------------------------------------------------------------------------

# Respiration
LAB_PO2 = 50821
# Blood-gas specimen type of the same draw (LABEVENTS 50800, text): only an arterial gas gives
# PaO2 (issue 14, defect 4). Stored by the reader as a numeric code in VALUENUM.
LAB_SPECIMEN_TYPE = 50800
SPECIMEN_CODES = {"ART": 1, "VEN": 2, "MIX": 3, "CENTRAL VENOUS": 4}  # anything else: 0
SPECIMEN_ARTERIAL = 1
LAB_FIO2 = 50816  # blood-gas FiO2, in % in MIMIC-III
CHART_FIO2 = (3420, 190, 223835, 3422)
# Charted ventilator settings/measurements whose presence marks mechanical ventilation
# (a subset of the mimic-code ventilation-durations items).
VENT_ITEMIDS = (
    720, 223849, 223848,  # ventilator type / mode
    683, 224684, 682, 224685, 224686, 654,  # tidal volumes
    506, 220339, 224700,  # PEEP
    535, 224695, 224696, 543,  # peak / plateau pressure
    445, 448, 449, 450, 1340, 1486, 1600, 224687,  # minute volume
    221, 1, 1211, 1655, 2000, 226873, 224738, 224419, 224750, 227187,  # airway/ETT
)
VENT_HOLD_HOURS = 8  # a ventilator setting charted at t marks ventilation on [t, t + 8 h)

# Coagulation, liver, renal labs
LAB_PLATELETS = 51265
LAB_BILIRUBIN = 50885
LAB_CREATININE = 50912

# Cardiovascular
MAP_ITEMIDS = (220052, 220181, 225312, 456, 52, 6702, 443)
VASOPRESSORS: dict[str, tuple[int, ...]] = {
    "norepinephrine": (221906, 30047, 30120),
    "epinephrine": (221289, 30044, 30119, 30309),
    "dopamine": (221662, 30043, 30307),
    "dobutamine": (221653, 30042, 30306),
}
VASOPRESSOR_BY_ITEMID = {i: name for name, ids in VASOPRESSORS.items() for i in ids}

# CNS
GCS_TOTAL = 198  # CareVue
GCS_EYE = (220739, 184)
GCS_VERBAL = (223900, 723)
GCS_MOTOR = (223901, 454)
# Verbal scored while intubated: GCS total is taken as 15 (mimic-code convention).
GCS_INTUBATED_TEXT = ("no response-ett", "no response-ett ", "1.0 et/trach")

# Renal: urine output (OUTPUTEVENTS), mL
URINE_ITEMIDS = (
    40055, 43175, 40069, 40094, 40715, 40473, 40085, 40057, 40056, 40405, 40428,
    40086, 40096, 40651,
    226559, 226560, 226561, 226584, 226563, 226564, 226565, 226567, 226557, 226558,
    227489,
)
# GU irrigation (MetaVision): 227489 "GU Irrigant/Urine Volume Out" holds urine plus the
# irrigant instilled, charted as 227488 "GU Irrigant Volume In"; urine = out - in, so the
# reader stores 227488 volumes negated (mimic-code's urine_output does the same; issue 14).
URINE_IRRIGANT_IN = 227488

# Weight for vasopressor dose normalisation (kg; 3581 is lb, 3582 oz: converted)
WEIGHT_ITEMIDS_KG = (762, 763, 3723, 3580, 226512, 224639)
WEIGHT_ITEMIDS_LB = (3581,)
# The reader takes the admission weight from PATIENTWEIGHT of every INPUTEVENTS_MV row, not only
# vasopressor rows; the synthetic generator charts this non-vasopressor one (NaCl 0.9%) to carry it.
MV_NACL_0_9 = 225158

# ICD-9 codes that exclude a control (PIPELINE.md section 2)
SEPSIS_ICD9 = ("99591", "99592", "78552")


# fmt: on


def chart_itemids_needed() -> set[int]:
    """Every CHARTEVENTS ITEMID the pipeline reads (variables + SOFA + weight)."""
    ids = {i for v in VARIABLES if v.table == "chartevents" for i in v.itemids}
    ids |= set(CHART_FIO2) | set(VENT_ITEMIDS) | set(MAP_ITEMIDS)
    ids |= {GCS_TOTAL, *GCS_EYE, *GCS_VERBAL, *GCS_MOTOR}
    ids |= set(WEIGHT_ITEMIDS_KG) | set(WEIGHT_ITEMIDS_LB)
    return ids


def lab_itemids_needed() -> set[int]:
    """Every LABEVENTS ITEMID the pipeline reads."""
    ids = {i for v in VARIABLES if v.table == "labevents" for i in v.itemids}
    return ids | {
        LAB_PO2,
        LAB_FIO2,
        LAB_SPECIMEN_TYPE,
        LAB_PLATELETS,
        LAB_BILIRUBIN,
        LAB_CREATININE,
    }


# Items stored in another unit than their variable's (converted by `Variable.convert` later):
# their unit is checked against this group's expected unit instead (concepts/units.csv).
CONVERTED_ITEM_UNIT_GROUP = {223761: "temperature_f", 678: "temperature_f"}


def unit_groups(table: str) -> dict[int, str]:
    """ITEMID -> unit group (a row group of concepts/units.csv) for every item of `table` read.

    `table` is "chartevents" or "labevents". A variable's items share its group; the
    concept items outside the variables get their own: gcs, ventilation (presence only),
    weight_kg / weight_lb, fio2_lab.
    """
    out: dict[int, str] = {}
    for var in VARIABLES:
        if var.table == table:
            for item in var.itemids:
                out[item] = CONVERTED_ITEM_UNIT_GROUP.get(item, var.name)
    if table == "chartevents":
        for item in (GCS_TOTAL, *GCS_EYE, *GCS_VERBAL, *GCS_MOTOR):
            out.setdefault(item, "gcs")
        for item in WEIGHT_ITEMIDS_KG:
            out.setdefault(item, "weight_kg")
        for item in WEIGHT_ITEMIDS_LB:
            out.setdefault(item, "weight_lb")
        for item in VENT_ITEMIDS:
            out.setdefault(item, "ventilation")
    elif table == "labevents":
        out.setdefault(LAB_FIO2, "fio2_lab")
        out.setdefault(LAB_SPECIMEN_TYPE, "specimen_type")
    else:
        raise ValueError(f"table: expected 'chartevents' or 'labevents', got {table!r}")
    return out
