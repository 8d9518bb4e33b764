"""The learner variables and the MIMIC-III item sets, derived from `dictionary.yaml`.

Nothing here is declared twice: every ITEMID, unit, range and conversion lives in the
concept dictionary (data_prep/concepts/dictionary.yaml, docs/CONCEPTS.md). This module
gives the views that code wants:

* `VARIABLES`: the 44 learner variables with a MIMIC-III source, in dictionary order
  (`Variable.itemids`, `.convert` are their MIMIC-III items); `PHYSIONET_EXTRA`: the
  PhysioNet 2019 columns without a MIMIC-III counterpart.
* the MIMIC-III item sets of the SOFA and infection concepts (`LAB_PO2`, `VENT_ITEMIDS`,
  `VASOPRESSORS`, `URINE_ITEMIDS`, ...), used by the MIMIC-III reader and the synthetic
  generator (which writes MIMIC-III tables). The concept layer (SOFA, suspected
  infection, observations) never uses item IDs: it reads concept names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_prep.concepts.dictionary import concepts

_D = concepts()


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


def _physionet_column(c) -> str | None:
    m = c.mappings("physionet2019")
    return m[0].column if m else None


def _variable(c) -> Variable:
    (m,) = c.mappings("mimic3")
    return Variable(
        c.name,
        m.table,
        m.ids + tuple(m.convert),
        c.unit,
        c.low,
        c.high,
        convert=dict(m.convert),
        physionet=_physionet_column(c),
    )


VARIABLES: tuple[Variable, ...] = tuple(
    _variable(c) for c in _D.of_kind("variable") if c.mappings("mimic3")
)
VARIABLES_BY_NAME: dict[str, Variable] = {v.name: v for v in VARIABLES}
F_TO_C = _D.conversions["degF_to_degC"]

# PhysioNet 2019 column -> (name, unit, low, high) of the variables MIMIC-III lacks
PHYSIONET_EXTRA = {
    _physionet_column(c): (c.name, c.unit, c.low, c.high)
    for c in _D.of_kind("variable")
    if not c.mappings("mimic3") and _physionet_column(c)
}


def itemid_to_variable(table: str) -> dict[int, Variable]:
    """Map each ITEMID of `table` ("chartevents" or "labevents") to its variable."""
    return {item: v for v in VARIABLES if v.table == table for item in v.itemids}


def _ids(name: str, table: str | None = None) -> tuple[int, ...]:
    return tuple(i for m in _D[name].mappings("mimic3", table) for i in m.all_ids)


# ------------------------------------------------ MIMIC-III item sets of the Sepsis-3 concepts
LAB_PO2 = _ids("po2")[0]
LAB_SPECIMEN_TYPE = _ids("blood_gas_specimen")[0]
SPECIMEN_CODES: dict[str, int] = dict(_D["blood_gas_specimen"].extra["codes"])
SPECIMEN_ARTERIAL: int = _D["blood_gas_specimen"].extra["arterial_code"]
LAB_FIO2 = _ids("fio2_bloodgas")[0]
CHART_FIO2 = _ids("fio2")
VENT_ITEMIDS = tuple(
    sorted({i for name in _D.marked_by("ventilation") for i in _ids(name, "chartevents")})
)
VENT_HOLD_HOURS = _D["ventilation"].extra["hold_hours"]
LAB_PLATELETS = _ids("platelets")[0]
LAB_BILIRUBIN = _ids("bilirubin")[0]
LAB_CREATININE = _ids("creatinine")[0]
MAP_ITEMIDS = _ids("mbp")
VASOPRESSORS: dict[str, tuple[int, ...]] = {c.name: _ids(c.name) for c in _D.of_kind("vasopressor")}
VASOPRESSOR_BY_ITEMID = {i: name for name, ids in VASOPRESSORS.items() for i in ids}
GCS_TOTAL = _ids("gcs_total")[0]
GCS_EYE = _ids("gcs_eye")
GCS_VERBAL = _ids("gcs_verbal")
GCS_MOTOR = _ids("gcs_motor")
GCS_INTUBATED_TEXT = tuple(_D["gcs_verbal"].extra["intubated_text"])
_urine = _D["urine_output"].mappings("mimic3")[0]
URINE_ITEMIDS = _urine.ids
URINE_IRRIGANT_IN = _urine.negate[0]
_weight = _D["weight"].mappings("mimic3")[0]
WEIGHT_ITEMIDS_KG = _weight.ids
WEIGHT_ITEMIDS_LB = tuple(_weight.convert)
SEPSIS_ICD9 = tuple(_D["sepsis_diagnosis"].mappings("mimic3")[0].extra["icd9"])


def chart_itemids_needed() -> set[int]:
    """Every CHARTEVENTS ITEMID the pipeline reads (variables + SOFA + weight)."""
    return set(_D.items("mimic3", "chartevents"))


def lab_itemids_needed() -> set[int]:
    """Every LABEVENTS ITEMID the pipeline reads."""
    return set(_D.items("mimic3", "labevents"))


# Items stored in another unit than their variable's (converted by `Variable.convert` later):
# their unit is checked against this group's expected unit instead (concepts/units.csv).
CONVERTED_ITEM_UNIT_GROUP = {i: "temperature_f" for i in VARIABLES_BY_NAME["temperature"].convert}
_UNIT_GROUP_OF_CONCEPT = {
    "gcs_total": "gcs",
    "gcs_eye": "gcs",
    "gcs_verbal": "gcs",
    "gcs_motor": "gcs",
    "ventilation": "ventilation",
    "fio2_bloodgas": "fio2_lab",
    "blood_gas_specimen": "specimen_type",
}


def unit_groups(table: str) -> dict[int, str]:
    """ITEMID -> unit group (a row group of concepts/units.csv) for every item of `table` read.

    `table` is "chartevents" or "labevents". A variable's items share its group; the
    concept items outside the variables get their own: gcs, ventilation (presence only),
    weight_kg / weight_lb, fio2_lab, specimen_type.
    """
    if table not in ("chartevents", "labevents"):
        raise ValueError(f"table: expected 'chartevents' or 'labevents', got {table!r}")
    out: dict[int, str] = {}
    for var in VARIABLES:
        if var.table == table:
            for item in var.itemids:
                out[item] = CONVERTED_ITEM_UNIT_GROUP.get(item, var.name)
    for item, (concept, _, _) in _D.items("mimic3", table).items():
        if concept == "weight":
            out.setdefault(item, "weight_lb" if item in WEIGHT_ITEMIDS_LB else "weight_kg")
        elif concept in _UNIT_GROUP_OF_CONCEPT:
            out.setdefault(item, _UNIT_GROUP_OF_CONCEPT[concept])
    return out
