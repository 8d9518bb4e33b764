"""MIMIC-III v1.4 table layout of the synthetic database, and the row accumulator.

`COLUMNS` holds every table's upper-case column names in file order, `KINDS` the kind of each
column the generator fills (others stay empty), and `Rows` collects one table's column
fragments for one block of patients and assembles them in that order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TS_FMT = "%Y-%m-%d %H:%M:%S"

# Upper-case column names of the MIMIC-III v1.4 tables (file order).
COLUMNS: dict[str, tuple[str, ...]] = {
    "PATIENTS": (
        "ROW_ID",
        "SUBJECT_ID",
        "GENDER",
        "DOB",
        "DOD",
        "DOD_HOSP",
        "DOD_SSN",
        "EXPIRE_FLAG",
    ),
    "ADMISSIONS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ADMITTIME",
        "DISCHTIME",
        "DEATHTIME",
        "ADMISSION_TYPE",
        "ADMISSION_LOCATION",
        "DISCHARGE_LOCATION",
        "INSURANCE",
        "LANGUAGE",
        "RELIGION",
        "MARITAL_STATUS",
        "ETHNICITY",
        "EDREGTIME",
        "EDOUTTIME",
        "DIAGNOSIS",
        "HOSPITAL_EXPIRE_FLAG",
        "HAS_CHARTEVENTS_DATA",
    ),
    "ICUSTAYS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "DBSOURCE",
        "FIRST_CAREUNIT",
        "LAST_CAREUNIT",
        "FIRST_WARDID",
        "LAST_WARDID",
        "INTIME",
        "OUTTIME",
        "LOS",
    ),
    "CHARTEVENTS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "ITEMID",
        "CHARTTIME",
        "STORETIME",
        "CGID",
        "VALUE",
        "VALUENUM",
        "VALUEUOM",
        "WARNING",
        "ERROR",
        "RESULTSTATUS",
        "STOPPED",
    ),
    "LABEVENTS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ITEMID",
        "CHARTTIME",
        "VALUE",
        "VALUENUM",
        "VALUEUOM",
        "FLAG",
    ),
    "PRESCRIPTIONS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "STARTDATE",
        "ENDDATE",
        "DRUG_TYPE",
        "DRUG",
        "DRUG_NAME_POE",
        "DRUG_NAME_GENERIC",
        "FORMULARY_DRUG_CD",
        "GSN",
        "NDC",
        "PROD_STRENGTH",
        "DOSE_VAL_RX",
        "DOSE_UNIT_RX",
        "FORM_VAL_DISP",
        "FORM_UNIT_DISP",
        "ROUTE",
    ),
    "MICROBIOLOGYEVENTS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "CHARTDATE",
        "CHARTTIME",
        "SPEC_ITEMID",
        "SPEC_TYPE_DESC",
        "ORG_ITEMID",
        "ORG_NAME",
        "ISOLATE_NUM",
        "AB_ITEMID",
        "AB_NAME",
        "DILUTION_TEXT",
        "DILUTION_COMPARISON",
        "DILUTION_VALUE",
        "INTERPRETATION",
    ),
    "INPUTEVENTS_MV": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "STARTTIME",
        "ENDTIME",
        "ITEMID",
        "AMOUNT",
        "AMOUNTUOM",
        "RATE",
        "RATEUOM",
        "STORETIME",
        "CGID",
        "ORDERID",
        "LINKORDERID",
        "ORDERCATEGORYNAME",
        "SECONDARYORDERCATEGORYNAME",
        "ORDERCOMPONENTTYPEDESCRIPTION",
        "ORDERCATEGORYDESCRIPTION",
        "PATIENTWEIGHT",
        "TOTALAMOUNT",
        "TOTALAMOUNTUOM",
        "ISOPENBAG",
        "CONTINUEINNEXTDEPT",
        "CANCELREASON",
        "STATUSDESCRIPTION",
        "COMMENTS_EDITEDBY",
        "COMMENTS_CANCELEDBY",
        "COMMENTS_DATE",
        "ORIGINALAMOUNT",
        "ORIGINALRATE",
    ),
    "INPUTEVENTS_CV": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "CHARTTIME",
        "ITEMID",
        "AMOUNT",
        "AMOUNTUOM",
        "RATE",
        "RATEUOM",
        "STORETIME",
        "CGID",
        "ORDERID",
        "LINKORDERID",
        "STOPPED",
        "NEWBOTTLE",
        "ORIGINALAMOUNT",
        "ORIGINALAMOUNTUOM",
        "ORIGINALROUTE",
        "ORIGINALRATE",
        "ORIGINALRATEUOM",
        "ORIGINALSITE",
    ),
    "OUTPUTEVENTS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "CHARTTIME",
        "ITEMID",
        "VALUE",
        "VALUEUOM",
        "STORETIME",
        "CGID",
        "STOPPED",
        "NEWBOTTLE",
        "ISERROR",
    ),
    "DIAGNOSES_ICD": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
    "D_ITEMS": (
        "ROW_ID",
        "ITEMID",
        "LABEL",
        "ABBREVIATION",
        "DBSOURCE",
        "LINKSTO",
        "CATEGORY",
        "UNITNAME",
        "PARAM_TYPE",
        "CONCEPTID",
    ),
    "D_LABITEMS": ("ROW_ID", "ITEMID", "LABEL", "FLUID", "CATEGORY", "LOINC_CODE"),
}
# Column kinds of the columns this generator fills (others are empty): int | float | str | ts.
KINDS: dict[str, dict[str, str]] = {
    "PATIENTS": {
        "ROW_ID": "int",
        "SUBJECT_ID": "int",
        "GENDER": "str",
        "DOB": "ts",
        "DOD": "ts",
        "DOD_HOSP": "ts",
        "EXPIRE_FLAG": "int",
    },
    "ADMISSIONS": {
        "ROW_ID": "int",
        "SUBJECT_ID": "int",
        "HADM_ID": "int",
        "ADMITTIME": "ts",
        "DISCHTIME": "ts",
        "DEATHTIME": "ts",
        "ADMISSION_TYPE": "str",
        "DISCHARGE_LOCATION": "str",
        "DIAGNOSIS": "str",
        "HOSPITAL_EXPIRE_FLAG": "int",
        "HAS_CHARTEVENTS_DATA": "int",
    },
    "ICUSTAYS": {
        "ROW_ID": "int",
        "SUBJECT_ID": "int",
        "HADM_ID": "int",
        "ICUSTAY_ID": "int",
        "DBSOURCE": "str",
        "FIRST_CAREUNIT": "str",
        "LAST_CAREUNIT": "str",
        "INTIME": "ts",
        "OUTTIME": "ts",
        "LOS": "float",
    },
    "CHARTEVENTS": {
        "ROW_ID": "int",
        "SUBJECT_ID": "int",
        "HADM_ID": "int",
        "ICUSTAY_ID": "int",
        "ITEMID": "int",
        "CHARTTIME": "ts",
        "VALUE": "str",
        "VALUENUM": "float",
        "VALUEUOM": "str",
    },
    "LABEVENTS": {
        "ROW_ID": "int",
        "SUBJECT_ID": "int",
        "HADM_ID": "int",
        "ITEMID": "int",
        "CHARTTIME": "ts",
        "VALUE": "str",
        "VALUENUM": "float",
        "VALUEUOM": "str",
    },
    "PRESCRIPTIONS": {
        "ROW_ID": "int",
        "SUBJECT_ID": "int",
        "HADM_ID": "int",
        "STARTDATE": "ts",
        "ENDDATE": "ts",
        "DRUG_TYPE": "str",
        "DRUG": "str",
        "ROUTE": "str",
    },
    "MICROBIOLOGYEVENTS": {
        "ROW_ID": "int",
        "SUBJECT_ID": "int",
        "HADM_ID": "int",
        "CHARTDATE": "ts",
        "CHARTTIME": "ts",
        "SPEC_TYPE_DESC": "str",
    },
    "INPUTEVENTS_MV": {
        "ROW_ID": "int",
        "SUBJECT_ID": "int",
        "HADM_ID": "int",
        "ICUSTAY_ID": "int",
        "STARTTIME": "ts",
        "ENDTIME": "ts",
        "ITEMID": "int",
        "AMOUNT": "float",
        "RATE": "float",
        "RATEUOM": "str",
        "PATIENTWEIGHT": "float",
        "STATUSDESCRIPTION": "str",
    },
    "INPUTEVENTS_CV": {
        "ROW_ID": "int",
        "SUBJECT_ID": "int",
        "HADM_ID": "int",
        "ICUSTAY_ID": "int",
        "CHARTTIME": "ts",
        "ITEMID": "int",
        "RATE": "float",
        "RATEUOM": "str",
    },
    "OUTPUTEVENTS": {
        "ROW_ID": "int",
        "SUBJECT_ID": "int",
        "HADM_ID": "int",
        "ICUSTAY_ID": "int",
        "CHARTTIME": "ts",
        "ITEMID": "int",
        "VALUE": "float",
        "VALUEUOM": "str",
    },
    "DIAGNOSES_ICD": {
        "ROW_ID": "int",
        "SUBJECT_ID": "int",
        "HADM_ID": "int",
        "SEQ_NUM": "int",
        "ICD9_CODE": "str",
    },
    "D_ITEMS": {
        "ROW_ID": "int",
        "ITEMID": "int",
        "LABEL": "str",
        "DBSOURCE": "str",
        "LINKSTO": "str",
        "UNITNAME": "str",
    },
    "D_LABITEMS": {
        "ROW_ID": "int",
        "ITEMID": "int",
        "LABEL": "str",
        "FLUID": "str",
        "CATEGORY": "str",
    },
}
EVENT_TABLES = tuple(t for t in COLUMNS if not t.startswith("D_"))


class Rows:
    """Column fragments of one table for one block; `frame()` concatenates them."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.cols: dict[str, list] = {}
        self.n = 0

    def add(self, **cols) -> None:
        n = max((len(v) for v in cols.values() if isinstance(v, np.ndarray)), default=1)
        if n == 0:
            return
        for k, v in cols.items():  # scalars are broadcast when the block is assembled
            self.cols.setdefault(k, []).append((self.n, n, v))
        self.n += n

    def frame(self, first_row_id: int) -> pd.DataFrame:
        out = {}
        for c in COLUMNS[self.table]:
            if c == "ROW_ID":
                out[c] = np.arange(first_row_id, first_row_id + self.n, dtype=np.int64)
                continue
            parts = self.cols.get(c)
            if not parts:
                out[c] = np.full(self.n, None, dtype=object)
                continue
            kind = KINDS[self.table].get(c, "str")
            if kind == "ts":
                full = np.full(self.n, np.datetime64("NaT"), dtype="datetime64[m]")
            elif kind == "float":
                full = np.full(self.n, np.nan)
            elif kind == "int":
                full = np.full(self.n, -1, dtype=np.int64)
            else:
                full = np.full(self.n, None, dtype=object)
            for start, m, arr in parts:
                full[start : start + m] = arr
            if kind == "ts":
                full = pd.Series(full.astype("datetime64[ns]")).dt.strftime(TS_FMT).to_numpy(object)
            elif kind == "int":
                full = (
                    pd.array(np.where(full == -1, None, full), dtype="Int64")
                    if (full == -1).any()
                    else full
                )
            out[c] = full
        return pd.DataFrame(out)
