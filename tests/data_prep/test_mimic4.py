"""MIMIC-IV source: hand-written tables with golden timelines for the MIMIC-IV-specific rules,
layout errors, the dictionary's mimic4 item IDs against the demo's d_items / d_labitems,
and an extraction of the real demo (skipped when the shared data is absent)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from data_prep import io as dio
from data_prep import sources
from data_prep.concepts.dictionary import concepts
from data_prep.concepts.infection import antibiotic_names
from data_prep.errors import DataError
from data_prep.sources import ReaderOptions
from data_prep.sources import mimic4_tables as T
from data_prep.sources.csv_stream import MalformedRowError, MissingTableError
from data_prep.sources.mimic4_inputs import antibiotic_items

SHARED = Path(
    os.environ.get(
        "SEPSIS_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)
DEMO = SHARED / "mimic4-demo"
needs_demo = pytest.mark.skipif(
    not (DEMO / "icu" / "icustays.csv.gz").exists(),
    reason=f"MIMIC-IV demo not found at {DEMO} (set SEPSIS_SHARED_DATA)",
)
TS = pd.Timestamp


# ------------------------------------------------------------------ hand-written tables


def _tables() -> dict[str, list[dict]]:
    """Two stays: 100 (subject 1, hadm 10) and 200 (subject 2, hadm 20, died)."""
    d1, d2 = "2150-01-02", "2161-01-02"
    return {
        "patients": [
            dict(subject_id=1, gender="F", anchor_age=60, anchor_year=2150, dod=""),
            dict(subject_id=2, gender="M", anchor_age=70, anchor_year=2160, dod="2161-01-05"),
        ],
        "admissions": [
            dict(
                subject_id=1,
                hadm_id=10,
                admittime="2150-01-01 08:00:00",
                dischtime="2150-01-10 12:00:00",
                deathtime="",
                edregtime="2150-01-01 05:00:00",
                hospital_expire_flag=0,
            ),
            dict(
                subject_id=2,
                hadm_id=20,
                admittime="2161-01-01 00:00:00",
                dischtime="2161-01-05 10:00:00",
                deathtime="2161-01-05 10:00:00",
                edregtime="",
                hospital_expire_flag=1,
            ),
        ],
        "icustays": [
            dict(
                subject_id=1,
                hadm_id=10,
                stay_id=100,
                first_careunit="MICU",
                intime=f"{d1} 00:00:00",
                outtime="2150-01-05 00:00:00",
            ),
            dict(
                subject_id=2,
                hadm_id=20,
                stay_id=200,
                first_careunit="SICU",
                intime=f"{d2} 00:00:00",
                outtime="2161-01-04 00:00:00",
            ),
        ],
        "chartevents": [
            dict(
                stay_id=100,
                itemid=226531,
                charttime=f"{d1} 01:00:00",
                value="220.462",
                valuenum=220.462,
                valueuom="lbs",
            ),
            dict(
                stay_id=100,
                itemid=226512,
                charttime=f"{d1} 02:00:00",
                value="90",
                valuenum=90,
                valueuom="kg",
            ),
            dict(
                stay_id=100,
                itemid=220052,
                charttime=f"{d1} 03:00:00",
                value="80",
                valuenum=80,
                valueuom="mmHg",
            ),
            dict(stay_id=100, itemid=223835, charttime=f"{d1} 03:00:00", value="0", valuenum=0),
            dict(stay_id=100, itemid=223835, charttime=f"{d1} 04:00:00", value="50", valuenum=50),
            dict(
                stay_id=100,
                itemid=223900,
                charttime=f"{d1} 04:00:00",
                value="No Response-ETT",
                valuenum=1,
            ),
            dict(
                stay_id=100,
                itemid=223761,
                charttime=f"{d1} 05:00:00",
                value="98.6",
                valuenum=98.6,
                valueuom="°F",
            ),
            dict(stay_id=100, itemid=229314, charttime=f"{d1} 05:00:00", value="APV (cmv)"),
            dict(stay_id=100, itemid=226707, charttime=f"{d1} 05:00:00", value="60", valuenum=60),
            dict(stay_id=200, itemid=220045, charttime=f"{d2} 01:00:00", value="90", valuenum=90),
        ],
        "labevents": [
            # specimen 1: arterial; 2: venous; 3: untyped (no 52033 row)
            dict(
                subject_id=1,
                hadm_id=10,
                specimen_id=1,
                itemid=52033,
                charttime=f"{d1} 06:00:00",
                value="ART.",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                specimen_id=1,
                itemid=50821,
                charttime=f"{d1} 06:00:00",
                value="80",
                valuenum=80,
                valueuom="mm Hg",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                specimen_id=1,
                itemid=50816,
                charttime=f"{d1} 06:00:00",
                value="0",
                valuenum=0,
                valueuom="%",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                specimen_id=2,
                itemid=50821,
                charttime=f"{d1} 07:00:00",
                value="40",
                valuenum=40,
                valueuom="mm Hg",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                specimen_id=2,
                itemid=52033,
                charttime=f"{d1} 07:00:00",
                value="VEN.",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                specimen_id=3,
                itemid=50821,
                charttime=f"{d1} 08:00:00",
                value="90",
                valuenum=90,
            ),
            # creatinine without hadm_id, 10 h before ICU admission (lookback 48 h): stay 100
            dict(
                subject_id=1,
                hadm_id="",
                specimen_id=4,
                itemid=50912,
                charttime="2150-01-01 14:00:00",
                value="1.5",
                valuenum=1.5,
            ),
            # a week before: no stay
            dict(
                subject_id=1,
                hadm_id="",
                specimen_id=5,
                itemid=50912,
                charttime="2149-12-20 14:00:00",
                value="1.1",
                valuenum=1.1,
            ),
        ],
        "outputevents": [
            dict(stay_id=100, itemid=226559, charttime=f"{d1} 06:00:00", value=100),
            dict(stay_id=100, itemid=227489, charttime=f"{d1} 07:00:00", value=300),
            dict(stay_id=100, itemid=227488, charttime=f"{d1} 07:00:00", value=200),
            dict(stay_id=100, itemid=226566, charttime=f"{d1} 07:00:00", value=500),
        ],
        "inputevents": [
            dict(
                subject_id=1,
                hadm_id=10,
                stay_id=100,
                itemid=221906,
                starttime=f"{d1} 06:00:00",
                endtime=f"{d1} 07:00:00",
                rate=0.1,
                rateuom="mcg/kg/min",
                patientweight=100,
                statusdescription="ChangeDose/Rate",
            ),
            # mcg/min without patientweight: the stay's first charted weight (100 kg)
            dict(
                subject_id=1,
                hadm_id=10,
                stay_id=100,
                itemid=221906,
                starttime=f"{d1} 07:00:00",
                endtime=f"{d1} 08:00:00",
                rate=10,
                rateuom="mcg/min",
                patientweight="",
                statusdescription="FinishedRunning",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                stay_id=100,
                itemid=221662,
                starttime=f"{d1} 08:00:00",
                endtime=f"{d1} 09:00:00",
                rate=0.005,
                rateuom="mg/kg/min",
                patientweight=100,
                statusdescription="FinishedRunning",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                stay_id=100,
                itemid=221653,
                starttime=f"{d1} 09:00:00",
                endtime=f"{d1} 10:00:00",
                rate=300,
                rateuom="mcg/kg/hour",
                patientweight=100,
                statusdescription="Rewritten",
            ),
            dict(
                subject_id=2,
                hadm_id=20,
                stay_id=200,
                itemid=221289,
                starttime=f"{d2} 02:00:00",
                endtime=f"{d2} 03:00:00",
                rate=8,
                rateuom="mcg/min",
                patientweight=80,
                statusdescription="FinishedRunning",
            ),
            # no weight at all: dropped and counted
            dict(
                subject_id=2,
                hadm_id=20,
                stay_id=200,
                itemid=221289,
                starttime=f"{d2} 01:00:00",
                endtime=f"{d2} 02:00:00",
                rate=8,
                rateuom="mcg/min",
                patientweight="",
                statusdescription="FinishedRunning",
            ),
            # an antibiotic administration (MetaVision item): admission event
            dict(
                subject_id=2,
                hadm_id=20,
                stay_id=200,
                itemid=225798,
                starttime=f"{d2} 04:00:00",
                endtime=f"{d2} 04:01:00",
                rate="",
                rateuom="",
                patientweight=80,
                statusdescription="FinishedRunning",
            ),
        ],
        "procedureevents": [
            dict(
                stay_id=100,
                itemid=225792,
                starttime=f"{d1} 06:00:00",
                endtime="2150-01-03 02:00:00",
                statusdescription="FinishedRunning",
            ),
            dict(
                stay_id=200,
                itemid=225794,
                starttime=f"{d2} 01:00:00",
                endtime=f"{d2} 03:00:00",
                statusdescription="FinishedRunning",
            ),
            dict(
                stay_id=200,
                itemid=224263,
                starttime=f"{d2} 01:00:00",
                endtime=f"{d2} 03:00:00",
                statusdescription="FinishedRunning",
            ),
        ],
        "prescriptions": [
            dict(
                subject_id=1,
                hadm_id=10,
                pharmacy_id=501,
                starttime=f"{d1} 10:00:00",
                drug_type="MAIN",
                drug="Vancomycin",
                route="IV",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                pharmacy_id=502,
                starttime=f"{d1} 10:00:00",
                drug_type="MAIN",
                drug="Gentamicin",
                route="BOTH EYES",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                pharmacy_id=503,
                starttime=f"{d1} 10:00:00",
                drug_type="MAIN",
                drug="Mupirocin Cream 2%",
                route="NU",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                pharmacy_id=504,
                starttime=f"{d1} 10:00:00",
                drug_type="BASE",
                drug="Vancomycin",
                route="IV",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                pharmacy_id=505,
                starttime=f"{d1} 10:00:00",
                drug_type="MAIN",
                drug="Heparin",
                route="SC",
            ),
        ],
        "emar": [
            dict(
                subject_id=1,
                hadm_id=10,
                pharmacy_id=501,
                charttime=f"{d1} 10:30:00",
                medication="Vancomycin",
                event_txt="Administered",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                pharmacy_id=501,
                charttime=f"{d1} 22:30:00",
                medication="Vancomycin",
                event_txt="Not Given",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                pharmacy_id=502,
                charttime=f"{d1} 11:00:00",
                medication="Gentamicin",
                event_txt="Administered",
            ),
            dict(
                subject_id=1,
                hadm_id=10,
                pharmacy_id="",
                charttime=f"{d1} 12:00:00",
                medication="Ciprofloxacin 0.3% Ophth Soln",
                event_txt="Administered",
            ),
            # no hadm_id: the admission of subject 1 at that time (hadm 10)
            dict(
                subject_id=1,
                hadm_id="",
                pharmacy_id="",
                charttime="2150-01-03 09:15:00",
                medication="CefePIME",
                event_txt="Started",
            ),
        ],
        "microbiologyevents": [
            # one specimen, three organism rows: one culture
            *[
                dict(
                    subject_id=1,
                    hadm_id=10,
                    micro_specimen_id=7,
                    chartdate=f"{d1} 00:00:00",
                    charttime=f"{d1} 09:00:00",
                    spec_type_desc="BLOOD CULTURE",
                )
                for _ in range(3)
            ],
            dict(
                subject_id=1,
                hadm_id=10,
                micro_specimen_id=8,
                chartdate="2150-01-03 00:00:00",
                charttime="",
                spec_type_desc="URINE",
            ),
            # in the ED before admittime, no hadm_id: hadm 10 (edregtime 05:00)
            dict(
                subject_id=1,
                hadm_id="",
                micro_specimen_id=9,
                chartdate="2150-01-01 00:00:00",
                charttime="2150-01-01 06:00:00",
                spec_type_desc="SPUTUM",
            ),
            # long after discharge: stays without hadm_id
            dict(
                subject_id=1,
                hadm_id="",
                micro_specimen_id=10,
                chartdate="2150-03-01 00:00:00",
                charttime="2150-03-01 06:00:00",
                spec_type_desc="SWAB",
            ),
        ],
        "diagnoses_icd": [
            dict(subject_id=1, hadm_id=10, icd_code="R6521", icd_version=10),
            dict(subject_id=1, hadm_id=10, icd_code="A4151", icd_version=10),
            dict(subject_id=1, hadm_id=10, icd_code="J189", icd_version=10),
            dict(subject_id=2, hadm_id=20, icd_code="99592", icd_version=9),
            dict(subject_id=2, hadm_id=20, icd_code="0389", icd_version=9),
            dict(subject_id=2, hadm_id=20, icd_code="99591", icd_version=10),
        ],
    }


def write_tables(root: Path, tables: dict[str, list[dict]], skip: tuple[str, ...] = ()) -> Path:
    """Each table as <module>/<table>.csv.gz with every column the reader knows."""
    for table, rows in tables.items():
        if table in skip:
            continue
        module, cols, _ = T.TABLE_COLUMNS[table]
        df = pd.DataFrame(rows)
        df = df.reindex(columns=list(dict.fromkeys([*cols, *df.columns])))
        (root / module).mkdir(parents=True, exist_ok=True)
        df.to_csv(root / module / f"{table}.csv.gz", index=False, compression="gzip")
    return root


def run(root: Path, out: Path, on_bad_rows: str = "error") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    src = sources.get("mimic4")
    return src.extract(root, out, ReaderOptions(on_bad_rows=on_bad_rows), False)


def events(out: Path, part: str | None = None) -> pd.DataFrame:
    parts = sorted((out / "events").glob("*.parquet"))
    df = pd.concat([dio.read_parquet(p, dio.EVENTS).assign(part=p.stem) for p in parts])
    return df if part is None else df[df["part"] == part]


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> tuple[Path, dict]:
    root = write_tables(tmp_path_factory.mktemp("raw"), _tables())
    out = tmp_path_factory.mktemp("out") / "extracted"
    return out, run(root, out)


def test_registered_with_exact_inputs(tmp_path) -> None:
    src = sources.get("mimic4")
    assert "mimic4" in sources.names() and src.attributes == () and src.labels is None
    root = write_tables(tmp_path, _tables())
    files = {p.relative_to(root).as_posix() for p in src.inputs(root)}
    assert files == {f"{m}/{t}.csv.gz" for t, (m, _, _) in T.TABLE_COLUMNS.items()}


def test_stays(mini) -> None:
    out, counts = mini
    s = dio.read_parquet(out / "stays.parquet", dio.EXTRACTED_STAYS).set_index("stay_id")
    assert s.loc[100, "age"] == 60 and s.loc[200, "age"] == 71  # anchor_age + year - anchor_year
    assert list(s["died"]) == [False, True] and list(s["gender"]) == ["F", "M"]
    assert list(s["unit"]) == ["MICU", "SICU"] and s["dbsource"].isna().all()
    assert s["source"].eq("mimic4").all() and s["has_chart"].all()
    # first charted weight (226531 lb -> kg); stay 200 has none: inputevents patientweight
    assert s.loc[100, "weight_kg"] == pytest.approx(100.0, abs=1e-3)
    assert s.loc[200, "weight_kg"] == 80.0
    assert s.loc[100, "los_hours"] == 72.0
    assert json.loads((out / "extraction_report.json").read_text())["outputs"] == counts["outputs"]


def test_chart_timeline(mini) -> None:
    out, counts = mini
    ev = events(out, "chartevents").query("stay_id == 100").sort_values(["time", "concept"])
    got = [
        (str(t.time()), c, None if pd.isna(v) else round(v, 3), None if pd.isna(x) else x)
        for t, c, v, x in ev[["time", "concept", "value", "text"]].itertuples(index=False)
    ]
    assert got == [
        ("01:00:00", "weight", 100.0, None),  # 220.462 lb
        ("02:00:00", "weight", 90.0, None),
        ("03:00:00", "mbp", 80.0, None),  # the FiO2 of 0 % at 03:00 is dropped
        ("04:00:00", "fio2", 50.0, None),
        ("04:00:00", "gcs_verbal", 1.0, "No Response-ETT"),
        ("05:00:00", "temperature", 37.0, None),  # 98.6 F
        ("05:00:00", "ventilation", None, "APV (cmv)"),  # Ventilator Mode (Hamilton)
    ]  # 226707 (height) is not read
    assert counts["tables"]["chartevents"]["dropped"]["zero_value"] == 1


def test_arterial_po2_by_specimen_id(mini) -> None:
    """The specimen type of each pO2's specimen_id at the pO2's time: ART -> 1, VEN -> 2; the
    untyped draw gets no specimen event (the concept layer keeps and counts it)."""
    out, counts = mini
    ev = events(out, "labevents").sort_values(["time", "concept"])
    gas = ev[ev["concept"].isin(["po2", "blood_gas_specimen"])]
    got = [
        (str(t.time()), c, v)
        for t, c, v in gas[["time", "concept", "value"]].itertuples(index=False)
    ]
    assert got == [
        ("06:00:00", "blood_gas_specimen", 1.0),
        ("06:00:00", "po2", 80.0),
        ("07:00:00", "blood_gas_specimen", 2.0),
        ("07:00:00", "po2", 40.0),
        ("08:00:00", "po2", 90.0),
    ]
    assert "fio2_bloodgas" not in set(ev["concept"])  # 0 % dropped
    crea = ev[ev["concept"] == "creatinine"]
    assert list(crea["stay_id"]) == [100] and list(crea["value"]) == [1.5]
    units = counts["tables"]["labevents"]["units"]
    assert units["po2_with_specimen_type"] == 2 and units["po2_without_specimen_type"] == 1
    assert counts["tables"]["labevents"]["dropped"]["no_stay_for_subject_time"] == 1


def test_urine_with_irrigant_negated(mini) -> None:
    out, _ = mini
    ev = events(out, "outputevents").sort_values(["time", "value"])
    assert list(ev["value"]) == [100.0, -200.0, 300.0]  # 226566 is not urine


def test_vasopressor_rates_in_mcg_kg_min(mini) -> None:
    out, counts = mini
    ev = events(out, "inputevents").sort_values(["stay_id", "time"])
    got = [
        (s, str(t.time()), c, round(v, 6), str(e.time()))
        for s, t, c, v, e in ev[["stay_id", "time", "concept", "value", "end_time"]].itertuples(
            index=False
        )
    ]
    assert got == [
        (100, "06:00:00", "norepinephrine", 0.1, "07:00:00"),  # mcg/kg/min as charted
        (100, "07:00:00", "norepinephrine", 0.1, "08:00:00"),  # 10 mcg/min / 100 kg (chart)
        (100, "08:00:00", "dopamine", 5.0, "09:00:00"),  # 0.005 mg/kg/min * 1000
        (200, "02:00:00", "epinephrine", 0.1, "03:00:00"),  # 8 mcg/min / 80 kg (patientweight)
    ]
    dropped = counts["tables"]["inputevents"]["dropped"]
    assert dropped["no_weight_for_rate_unit"] == 1 and dropped["status_rewritten"] == 1


def test_unknown_rate_unit_is_an_error_or_a_counted_skip(tmp_path) -> None:
    t = _tables()
    t["inputevents"][0]["rateuom"] = "units/hour"
    root = write_tables(tmp_path / "raw", t)
    with pytest.raises(MalformedRowError, match=r"inputevents.*data row 1.*'units/hour'.*221906"):
        run(root, tmp_path / "a")
    counts = run(root, tmp_path / "b", on_bad_rows="skip-and-count")
    assert counts["tables"]["inputevents"]["dropped"]["unknown_rate_unit:units/hour"] == 1
    assert len(events(tmp_path / "b", "inputevents")) == 3


def test_ventilation_intervals_from_procedureevents(mini) -> None:
    """225792 over 20 h: events at +0, +8, +16 h (hold_hours 8), each ending at the next or at
    endtime; 225794 over 2 h: one event."""
    out, _ = mini
    ev = events(out, "procedureevents").sort_values(["stay_id", "time"])
    got = [
        (s, str(t), str(e), x)
        for s, t, e, x in ev[["stay_id", "time", "end_time", "text"]].itertuples(index=False)
    ]
    assert got == [
        (100, "2150-01-02 06:00:00", "2150-01-02 14:00:00", "Invasive Ventilation"),
        (100, "2150-01-02 14:00:00", "2150-01-02 22:00:00", "Invasive Ventilation"),
        (100, "2150-01-02 22:00:00", "2150-01-03 02:00:00", "Invasive Ventilation"),
        (200, "2161-01-02 01:00:00", "2161-01-02 03:00:00", "Non-invasive Ventilation"),
    ]
    assert ev["concept"].eq("ventilation").all()


def _admission(out: Path) -> pd.DataFrame:
    return dio.read_parquet(out / "admission_events.parquet", dio.ADMISSION_EVENTS)


def test_antibiotics_orders_emar_and_inputevents(mini) -> None:
    out, counts = mini
    a = _admission(out).query("concept == 'antibiotic'").sort_values("time")
    got = [
        (h, str(t), x, s)
        for h, t, x, s in a[["hadm_id", "time", "text", "time_source"]].itertuples(index=False)
    ]
    assert got == [
        (10, "2150-01-02 10:00:00", "Vancomycin", "order time"),
        (10, "2150-01-02 10:30:00", "Vancomycin", "administration"),  # emar Administered
        (10, "2150-01-03 09:15:00", "CefePIME", "administration"),  # hadm from subject + time
        (20, "2161-01-02 04:00:00", "Vancomycin", "administration"),  # inputevents 225798
    ]
    p = counts["tables"]["prescriptions"]["dropped"]
    assert p["antibiotic_route_excluded"] == 1 and p["antibiotic_name_excluded"] == 1
    e = counts["tables"]["emar"]["dropped"]
    assert e["antibiotic_not_administered"] == 1 and e["antibiotic_name_excluded"] == 1
    assert e["antibiotic_route_excluded_by_prescription"] == 1  # Gentamicin, BOTH EYES


def test_cultures_one_per_specimen(mini) -> None:
    out, _ = mini
    c = _admission(out).query("concept == 'culture'").sort_values("time")
    got = [
        (None if pd.isna(h) else int(h), str(t), x, s)
        for h, t, x, s in c[["hadm_id", "time", "text", "time_source"]].itertuples(index=False)
    ]
    assert got == [
        (10, "2150-01-01 06:00:00", "SPUTUM", "charted"),  # ED, before admittime
        (10, "2150-01-02 09:00:00", "BLOOD CULTURE", "charted"),
        (10, "2150-01-03 00:00:00", "URINE", "date only"),
        (None, "2150-03-01 06:00:00", "SWAB", "charted"),
    ]


def test_sepsis_codes_by_icd_version(mini) -> None:
    out, _ = mini
    d = _admission(out).query("concept == 'sepsis_diagnosis'").sort_values("text")
    assert list(zip(d["hadm_id"], d["text"], strict=True)) == [
        (20, "99592"),
        (10, "A4151"),
        (10, "R6521"),
    ]  # not J189, not ICD-9 0389, not "99591" labelled ICD-10
    assert d["time"].isna().all() and d["time_source"].isna().all()


# ------------------------------------------------------------------ layout errors


def test_missing_table_names_the_file(tmp_path) -> None:
    root = write_tables(tmp_path, _tables(), skip=("emar",))
    with pytest.raises(MissingTableError, match=r"emar.*not found in folder .*hosp.*emar\.csv\.gz"):
        run(root, tmp_path / "out")
    with pytest.raises(MissingTableError, match="emar"):
        sources.get("mimic4").inputs(root)


def test_v1_column_names_are_an_error(tmp_path) -> None:
    t = _tables()
    t["icustays"] = [
        {("icustay_id" if k == "stay_id" else k): v for k, v in r.items()} for r in t["icustays"]
    ]
    root = write_tables(tmp_path, t)
    (root / "icu" / "icustays.csv.gz").unlink()
    pd.DataFrame(t["icustays"]).to_csv(root / "icu" / "icustays.csv.gz", index=False)
    with pytest.raises(
        DataError, match=r"icustays\.csv\.gz.*stay_id.*icustay_id.*MIMIC-IV v2/v3 expected"
    ):
        run(root, tmp_path / "out")


def test_missing_charttime_is_an_error(tmp_path) -> None:
    root = write_tables(tmp_path, _tables())
    df = pd.read_csv(root / "icu" / "chartevents.csv.gz").drop(columns=["charttime"])
    df.to_csv(root / "icu" / "chartevents.csv.gz", index=False)
    with pytest.raises(
        DataError, match=r"chartevents\.csv\.gz.*charttime.*MIMIC-IV v2/v3 expected"
    ):
        run(root, tmp_path / "out")


def test_v1_core_module_is_an_error(tmp_path) -> None:
    root = write_tables(tmp_path, _tables())
    (root / "hosp").rename(root / "core")
    with pytest.raises(MissingTableError, match=r"core/.*v1\.0.*MIMIC-IV v2/v3 expected"):
        run(root, tmp_path / "out")


def test_chartevents_stand_in_and_preference(tmp_path) -> None:
    root = write_tables(tmp_path, _tables())
    real = root / "icu" / "chartevents.csv.gz"
    stand_in = root / "icu" / "chartevents_reconstructed_from_meds.csv.gz"
    real.rename(stand_in)
    assert stand_in in sources.get("mimic4").inputs(root)
    counts = run(root, tmp_path / "a")
    assert counts["tables"]["chartevents"]["file"] == str(stand_in)
    pd.read_csv(stand_in).iloc[:0].to_csv(real, index=False)  # both: the real one is read
    assert real in sources.get("mimic4").inputs(root)
    with pytest.raises(DataError, match=r"chartevents\.csv\.gz: has a header but no data rows"):
        run(root, tmp_path / "b")


# ------------------------------------------------------------------ dictionary vs the demo

EXPECTED_LABELS = {
    220045: "Heart Rate",
    220179: "Non Invasive Blood Pressure systolic",
    220050: "Arterial Blood Pressure systolic",
    225309: "ART BP Systolic",
    220180: "Non Invasive Blood Pressure diastolic",
    220051: "Arterial Blood Pressure diastolic",
    225310: "ART BP Diastolic",
    220052: "Arterial Blood Pressure mean",
    220181: "Non Invasive Blood Pressure mean",
    225312: "ART BP Mean",
    220210: "Respiratory Rate",
    224690: "Respiratory Rate (Total)",
    223762: "Temperature Celsius",
    223761: "Temperature Fahrenheit",
    220277: "O2 saturation pulseoxymetry",
    220088: "Cardiac Output (thermodilution)",
    224684: "Tidal Volume (set)",
    224685: "Tidal Volume (observed)",
    224686: "Tidal Volume (spontaneous)",
    224695: "Peak Insp. Pressure",
    220339: "PEEP set",
    223834: "O2 Flow",
    223835: "Inspired O2 Fraction",
    50862: "Albumin",
    50861: "Alanine Aminotransferase (ALT)",
    50868: "Anion Gap",
    50878: "Asparate Aminotransferase (AST)",
    51144: "Bands",
    50802: "Base Excess",
    50882: "Bicarbonate",
    50803: "Calculated Bicarbonate, Whole Blood",
    50885: "Bilirubin, Total",
    51006: "Urea Nitrogen",
    50893: "Calcium, Total",
    50808: "Free Calcium",
    50902: "Chloride",
    50806: "Chloride, Whole Blood",
    50910: "Creatine Kinase (CK)",
    50911: "Creatine Kinase, MB Isoenzyme",
    50912: "Creatinine",
    51214: "Fibrinogen, Functional",
    50931: "Glucose",
    50809: "Glucose",
    51221: "Hematocrit",
    50810: "Hematocrit, Calculated",
    51222: "Hemoglobin",
    50811: "Hemoglobin",
    51237: "INR(PT)",
    50813: "Lactate",
    50954: "Lactate Dehydrogenase (LD)",
    50960: "Magnesium",
    50818: "pCO2",
    50820: "pH",
    50970: "Phosphate",
    51265: "Platelet Count",
    50821: "pO2",
    50971: "Potassium",
    50822: "Potassium, Whole Blood",
    51274: "PT",
    51275: "PTT",
    50817: "Oxygen Saturation",
    50983: "Sodium",
    50824: "Sodium, Whole Blood",
    51003: "Troponin T",
    51301: "White Blood Cells",
    51300: "WBC Count",
    228640: "EtCO2",
    50863: "Alkaline Phosphatase",
    50883: "Bilirubin, Direct",
    50816: "Oxygen",
    52033: "Specimen Type",
    223849: "Ventilator Mode",
    223848: "Ventilator Type",
    229314: "Ventilator Mode (Hamilton)",
    224700: "Total PEEP Level",
    224696: "Plateau Pressure",
    224687: "Minute Volume",
    226873: "Inspiratory Ratio",
    224738: "Inspiratory Time",
    224419: "Negative Insp. Force",
    224750: "Nitric Oxide Tank Pressure",
    227187: "Pinsp (Draeger only)",
    225792: "Invasive Ventilation",
    225794: "Non-invasive Ventilation",
    220739: "GCS - Eye Opening",
    223900: "GCS - Verbal Response",
    223901: "GCS - Motor Response",
    226559: "Foley",
    226560: "Void",
    226561: "Condom Cath",
    226584: "Ileoconduit",
    226563: "Suprapubic",
    226564: "R Nephrostomy",
    226565: "L Nephrostomy",
    226567: "Straight Cath",
    226557: "R Ureteral Stent",
    226558: "L Ureteral Stent",
    227489: "GU Irrigant/Urine Volume Out",
    227488: "GU Irrigant Volume In",
    226512: "Admission Weight (Kg)",
    224639: "Daily Weight",
    226531: "Admission Weight (lbs.)",
    221906: "Norepinephrine",
    221289: "Epinephrine",
    221662: "Dopamine",
    221653: "Dobutamine",
}


def _mimic4_items() -> list[tuple[str, str, int]]:
    return [
        (c.name, m.table, i)
        for c in concepts().concepts.values()
        for m in c.mappings("mimic4")
        for i in m.all_ids
    ]


def test_every_mimic4_item_has_an_expected_label() -> None:
    assert sorted(i for _, _, i in _mimic4_items()) == sorted(EXPECTED_LABELS)


@needs_demo
def test_mimic4_items_exist_in_the_demo_dictionaries() -> None:
    d_items = pd.read_csv(DEMO / "icu" / "d_items.csv.gz").set_index("itemid")
    d_lab = pd.read_csv(DEMO / "hosp" / "d_labitems.csv.gz").set_index("itemid")
    for concept, table, item in _mimic4_items():
        if table == "labevents":
            assert item in d_lab.index, (concept, item)
            assert d_lab.loc[item, "label"] == EXPECTED_LABELS[item], (concept, item)
            assert d_lab.loc[item, "fluid"] == "Blood", (concept, item)
        else:
            assert item in d_items.index, (concept, item)
            assert d_items.loc[item, "label"] == EXPECTED_LABELS[item], (concept, item)
            assert d_items.loc[item, "linksto"] == table, (concept, item)
    labels = concepts()["ventilation"].mappings("mimic4", "procedureevents")[0].extra["labels"]
    assert all(d_items.loc[int(i), "label"] == v for i, v in labels.items())


@needs_demo
def test_inputevents_antibiotic_items_are_the_demo_antibiotics() -> None:
    """mv_antibiotics.csv (MIMIC-III MetaVision) + more_items = the d_items rows of category
    Antibiotics whose label matches antibiotics.txt, with the same labels."""
    d_items = pd.read_csv(DEMO / "icu" / "d_items.csv.gz")
    abx = d_items[d_items["category"] == "Antibiotics"]
    pattern = "|".join(re.escape(n) for n in antibiotic_names())
    match = abx[abx["label"].str.lower().str.contains(pattern)]
    assert dict(zip(match["itemid"], match["label"], strict=True)) == antibiotic_items()
    assert set(match["linksto"]) == {"inputevents"}


# ------------------------------------------------------------------ the real demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "extracted"
    return out, run(DEMO, out)


SOFA_INPUTS = (
    "po2", "fio2", "fio2_bloodgas", "blood_gas_specimen", "ventilation", "platelets",
    "bilirubin", "creatinine", "mbp", "norepinephrine", "epinephrine", "dopamine", "dobutamine",
    "gcs_eye", "gcs_verbal", "gcs_motor", "urine_output", "weight",
)  # fmt: skip


@needs_demo
def test_demo_extracts_the_contract(demo) -> None:
    out, counts = demo
    stays = dio.read_parquet(out / "stays.parquet", dio.EXTRACTED_STAYS)
    assert len(stays) == 140 and stays["stay_id"].is_unique and stays["has_chart"].all()
    assert stays["weight_kg"].notna().sum() >= 135 and stays["died"].sum() == 20
    assert stays["age"].between(18, 100).all()
    ev = events(out)
    n = ev["concept"].value_counts()
    for c in SOFA_INPUTS:
        assert n.get(c, 0) > 0, c
    assert set(ev["concept"]) <= set(concepts().concepts)
    assert ev["stay_id"].isin(stays["stay_id"]).all()
    per_var = ev[ev["concept"].isin([c.name for c in concepts().of_kind("variable")])]
    assert per_var["concept"].nunique() >= 45  # every learner variable MIMIC-IV has
    a = _admission(out)
    assert set(a["concept"]) == {"antibiotic", "culture", "sepsis_diagnosis"}
    assert a.groupby("concept").size().min() > 0
    assert set(a["time_source"].dropna()) == {
        "order time",
        "administration",
        "charted",
        "date only",
    }
    assert sorted(counts["outputs"]) == sorted(
        ["stays.parquet", "admission_events.parquet"]
        + [
            f"events/{t}.parquet"
            for t in ("chartevents", "labevents", "outputevents", "inputevents", "procedureevents")
        ]
    )


def test_malformed_value_is_an_error_or_a_counted_skip(tmp_path) -> None:
    """A value the CSV decoder cannot type: the table is re-read as strings (the handlers'
    state reset) and the row named, or skipped and counted; the rest is as without it."""
    t = _tables()
    t["labevents"][3]["valuenum"] = "forty"  # the venous pO2, data row 4
    root = write_tables(tmp_path / "raw", t)
    with pytest.raises(
        MalformedRowError, match=r"labevents\.csv\.gz: data row 4 .*'valuenum'.*'forty'"
    ):
        run(root, tmp_path / "a")
    counts = run(root, tmp_path / "b", on_bad_rows="skip-and-count")
    lab = counts["tables"]["labevents"]
    assert lab["passes"] == 2 and lab["dropped"]["malformed_valuenum"] == 1
    gas = events(tmp_path / "b", "labevents").query("concept in ('po2', 'blood_gas_specimen')")
    assert sorted(gas["value"]) == [1.0, 80.0, 90.0]  # the venous draw's pO2 is gone
