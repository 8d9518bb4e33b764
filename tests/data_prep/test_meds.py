"""Tests of the MEDS source (data_prep.sources.meds) and its mapping files.

Tiny MEDS datasets are written by the tests with pyarrow (the MIMIC-IV MEDS ETL's coding,
read with the shipped mimic_iv_meds.yaml mapping); the demo tests read the MIMIC-IV demo in MEDS
format from the shared data folder and skip when it is absent.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep import io as dio
from data_prep.io import SchemaError
from data_prep.sources import ReaderOptions, get
from data_prep.sources import meds_mapping as mm
from data_prep.sources.meds import extract, inputs
from data_prep.sources.meds_read import MedsDataError

SHARED = Path(
    os.environ.get(
        "SEPSIS_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)
DEMO = SHARED / "mimic4-demo-meds"
MIMIC_MAPPING = mm.MAPPINGS_DIR / "mimic_iv_meds.yaml"
T0 = pd.Timestamp("2150-01-02 00:00")  # ICU admission of the golden stay
H = pd.Timedelta(hours=1)

EXTRA = {  # the ETL's extra columns and their types
    "hadm_id": pa.int64(),
    "icustay_id": pa.int64(),
    "order_id": pa.int64(),
    "unit": pa.large_string(),
    "route": pa.large_string(),
    "drug_type": pa.large_string(),
    "statusdescription": pa.large_string(),
    "emar_id": pa.large_string(),
}


def _row(code, time=None, value=None, text=None, **extra):
    return {
        "subject_id": extra.pop("subject_id", 1),
        "time": time,
        "code": code,
        "numeric_value": value,
        "text_value": text,
        **extra,
    }


def write_meds(
    root: Path,
    shards: dict[str, list[dict]],
    dataset_name="MIMIC-IV",
    codes: list[str] | None = None,
    schema: pa.Schema | None = None,
    shards_json: bool = True,
) -> Path:
    """A MEDS root: data/<shard>.parquet, metadata/dataset.json, codes.parquet, .shards.json."""
    fields = [
        ("subject_id", pa.int64()),
        ("time", pa.timestamp("us")),
        ("code", pa.string()),
        ("numeric_value", pa.float32()),
        ("text_value", pa.large_string()),
        *EXTRA.items(),
    ]
    schema = schema or pa.schema(fields)
    all_codes = set()
    for name, rows in shards.items():
        df = pd.DataFrame(rows)
        cols = {}
        for f in schema:
            vals = df[f.name].tolist() if f.name in df else [None] * len(df)
            vals = [
                None if v is None or v is pd.NaT or (isinstance(v, float) and np.isnan(v)) else v
                for v in vals
            ]
            if pa.types.is_timestamp(f.type):
                vals = [None if v is None else pd.Timestamp(v).to_pydatetime() for v in vals]
            cols[f.name] = pa.array(vals, f.type)
        p = root / "data" / f"{name}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols, schema=schema), p)
        if "code" in df:
            all_codes |= set(df["code"].astype(str))
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "dataset.json").write_text(
        json.dumps({"dataset_name": dataset_name, "meds_version": "0.4.1", "etl_name": "test"})
    )
    codes = sorted(all_codes) if codes is None else codes
    pq.write_table(
        pa.table(
            {
                "code": pa.array(codes, pa.string()),
                "description": pa.array([None] * len(codes), pa.string()),
            }
        ),
        meta / "codes.parquet",
    )
    if shards_json:
        (meta / ".shards.json").write_text(json.dumps({n: [1] for n in shards}))
    return root


def golden_rows() -> list[dict]:
    """One patient, one hospital admission (10), one ICU stay (100) with every kind of row."""
    d = dict(hadm_id=10, icustay_id=100)
    return [
        _row("GENDER//F"),
        _row("MEDS_BIRTH", "2100-01-01"),
        _row("HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM", "2150-01-01", hadm_id=10),
        _row("HOSPITAL_DISCHARGE//HOME", "2150-01-10", hadm_id=10),
        _row("ICU_ADMISSION//Medical Intensive Care Unit (MICU)", T0, **d),
        _row("ICU_DISCHARGE//Medical Intensive Care Unit (MICU)", T0 + 72 * H, **d),
        _row("LAB//220045//bpm", T0 + 1 * H, 80.0, **d),
        _row("LAB//223761//°F", T0 + 1 * H, 98.6, **d),
        _row("LAB//223900//UNK", T0 + 1 * H, 1.0, "No Response-ETT", **d),
        _row("LAB//220739//UNK", T0 + 1 * H, 4.0, "Spontaneously", **d),
        # lab drawn at 02:00, result stored at 03:17 (the time MEDS gives it), no stay id
        _row("LAB//SPECIMEN_COLLECTED//50912//STAT", T0 + 2 * H, hadm_id=10),
        _row("LAB//RESULT//50912//mg/dL", T0 + pd.Timedelta("3h17min"), 1.5, "1.5", hadm_id=10),
        _row("LAB//RESULT//50912//mg/dL", T0 + 150 * H, 1.1, "1.1", hadm_id=10),  # after the stay
        _row("LAB//RESULT//50912//umol/L", T0 + 4 * H, 130.0, hadm_id=10),  # unit not listed
        # norepinephrine 8 mcg/min for an 80 kg patient = 0.1 mcg/kg/min, 04:00-06:00
        _row("SUBJECT_WEIGHT_AT_INFUSION//KG", T0 + 4 * H, 80.0),
        _row("INFUSION_START//221906", T0 + 4 * H, 8.0, unit="mcg/min", order_id=555, **d),
        _row(
            "INFUSION_END//221906",
            T0 + 6 * H,
            0.96,
            unit="mg",
            order_id=555,
            statusdescription="FinishedRunning",
            **d,
        ),
        # blood gas: specimen type stored a minute before its pO2
        _row("LAB//RESULT//52033//UNK", T0 + pd.Timedelta("5h01min"), None, "VEN.", hadm_id=10),
        _row("LAB//RESULT//50821//mm Hg", T0 + pd.Timedelta("5h02min"), 80.0, "80", hadm_id=10),
        _row("SUBJECT_FLUID_OUTPUT//226559//ml", T0 + 7 * H, 50.0, **d),
        _row("SUBJECT_FLUID_OUTPUT//227488//ml", T0 + 7 * H, 30.0, **d),
        _row(
            "PRESCRIPTION//START//Vancomycin", T0 + 8 * H, hadm_id=10, route="IV", drug_type="MAIN"
        ),
        _row("PRESCRIPTION//START//Aspirin", T0 + 8 * H, hadm_id=10, route="PO", drug_type="MAIN"),
        _row(
            "PRESCRIPTION//START//Vancomycin", T0 + 8 * H, hadm_id=10, route="OU", drug_type="MAIN"
        ),
        _row("MEDICATION//CefePIME//Administered//123", T0 + 9 * H, hadm_id=10, emar_id="e1"),
        _row("MEDICATION//CefePIME//Not Given//123", T0 + 10 * H, hadm_id=10, emar_id="e2"),
        _row("MICRO//SPECIMEN//BLOOD CULTURE", T0 + 7 * H),  # no hadm_id: taken from the admission
        _row("MICRO//SPECIMEN//URINE", T0 + 24 * H, hadm_id=10),  # 00:00: date only
        _row("DIAGNOSIS//ICD//10//A419", "2150-01-10", hadm_id=10),
        _row("DIAGNOSIS//ICD//10//I10", "2150-01-10", hadm_id=10),
        _row("FOO//BAR", T0 + 1 * H),  # not in codes.parquet (see golden)
    ]


def _extract(root: Path, tmp_path: Path, **opts) -> tuple[dict, Path]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return extract(root, out, ReaderOptions(**opts), progress=False), out


def _events(out: Path) -> pd.DataFrame:
    parts = sorted((out / "events").glob("*.parquet"))
    return pd.concat([dio.read_parquet(p, dio.EVENTS) for p in parts], ignore_index=True)


@pytest.fixture
def golden(tmp_path):
    rows = golden_rows()
    codes = sorted({r["code"] for r in rows} - {"FOO//BAR"})
    root = write_meds(tmp_path / "meds", {"train/0": rows}, codes=codes)
    report, out = _extract(root, tmp_path)
    return report, out


# ------------------------------------------------------------------ golden events
def test_registered():
    assert get("meds").name == "meds" and get("meds").attributes == ()


def test_golden_stays(golden):
    report, out = golden
    st = dio.read_parquet(out / "stays.parquet", dio.EXTRACTED_STAYS)
    assert len(st) == 1 and report["stays"] == 1
    s = st.iloc[0]
    assert (s.stay_id, s.patient_id, s.hadm_id, s.source) == (100, 1, 10, "meds")
    assert s.intime == T0 and s.outtime == T0 + 72 * H and s.los_hours == 72
    assert s.unit == "Medical Intensive Care Unit (MICU)" and s.gender == "F"
    assert s.age == pytest.approx(
        (pd.Timestamp("2150-01-01") - pd.Timestamp("2100-01-01")).days / 365.25
    )
    assert not s.died and s.has_chart and s.weight_kg == 80.0  # infusion weight (no charted one)


def test_golden_events(golden):
    report, out = golden
    ev = _events(out)
    one = lambda c: ev[ev.concept == c]  # noqa: E731
    assert one("heart_rate")[["time", "value"]].values.tolist() == [[T0 + H, 80.0]]
    assert one("temperature").value.iloc[0] == pytest.approx(37.0, abs=1e-4)  # °F -> °C
    v = one("gcs_verbal").iloc[0]
    assert v.value == 1.0 and v.text == "No Response-ETT"  # intubated verbal keeps its text
    assert pd.isna(one("gcs_eye").text.iloc[0])  # text kept only where the mapping says so
    # the lab result at its storetime, on the stay found by subject and time
    cr = one("creatinine")
    assert cr[["stay_id", "time", "value"]].values.tolist() == [
        [100, T0 + pd.Timedelta("3h17min"), 1.5]
    ]
    drops = report["dropped"]
    key = next(k for k in drops if k.endswith("(creatinine)"))
    assert drops[key] == {"no_stay_for_subject_time": 1, "unit_not_listed:umol/L": 1}
    # 8 mcg/min / 80 kg = 0.1 mcg/kg/min from START to the END of the same order
    ne = one("norepinephrine").iloc[0]
    assert ne.value == pytest.approx(0.1) and ne.time == T0 + 4 * H and ne.end_time == T0 + 6 * H
    # specimen type coded (VEN. -> 2) and moved to its pO2's time
    spec = one("blood_gas_specimen").iloc[0]
    assert spec.value == 2.0 and spec.time == T0 + pd.Timedelta("5h02min")
    assert one("po2").time.iloc[0] == spec.time
    assert sorted(one("urine_output").value) == [-30.0, 50.0]  # GU irrigant in negated
    assert report["concepts"]["heart_rate"] == 1


def test_golden_admission_events(golden):
    report, out = golden
    ad = dio.read_parquet(out / "admission_events.parquet", dio.ADMISSION_EVENTS)
    abx = ad[ad.concept == "antibiotic"].sort_values("time")
    assert abx[["text", "time_source"]].values.tolist() == [
        ["Vancomycin", "order time"],
        ["CefePIME", "administration"],
    ]
    cul = ad[ad.concept == "culture"].sort_values("time")
    assert cul[["text", "time_source", "hadm_id"]].values.tolist() == [
        ["BLOOD CULTURE", "charted", 10],
        ["URINE", "date only", 10],
    ]
    dx = ad[ad.concept == "sepsis_diagnosis"]
    assert dx.text.tolist() == ["A419"] and dx.time.isna().all()
    assert report["cultures"] == 2 and report["antibiotics"] == 2
    rx = next(v for k, v in report["dropped"].items() if "(prescriptions)" in k)
    assert rx == {"not_antibiotic": 1, "excluded_route": 1}
    assert report["admission_events"]["hadm_id_filled_from_admission_time"] == 1


def test_golden_unknown_codes_counted(golden):
    report, _ = golden
    assert report["codes_not_in_metadata"] == {"codes": 1, "rows": 1, "examples": ["FOO//BAR"]}
    assert report["rows_unmapped"] >= 2  # FOO//BAR, the specimen-collected row, ...


def test_inputs_lists_shards_and_metadata(tmp_path):
    root = write_meds(
        tmp_path / "m", {"train/0": golden_rows(), "held_out/0": [_row("GENDER//M", subject_id=2)]}
    )
    names = sorted(p.relative_to(root).as_posix() for p in inputs(root))
    assert names == [
        "data/held_out/0.parquet",
        "data/train/0.parquet",
        "metadata/.shards.json",
        "metadata/codes.parquet",
        "metadata/dataset.json",
    ]


# ------------------------------------------------------------------ ICU stays without a stay id column
NO_STAY_ID_MAPPING = """
version: 1
name: test_no_stay_id
columns: {hadm_id: hadm_id}
stays:
  admission: {prefix: "ICU_ADMISSION//"}
  discharge: {prefix: "ICU_DISCHARGE//"}
events:
  chart:
    - {concept: heart_rate, match: {regex: '^HR$'}}
"""


def test_stays_delimited_by_codes_without_stay_id(tmp_path):
    rows = [
        _row("ICU_ADMISSION//A", T0),
        _row("ICU_DISCHARGE//A", T0 + 10 * H),
        _row("ICU_ADMISSION//B", T0 + 48 * H),
        _row("ICU_DISCHARGE//B", T0 + 60 * H),
        _row("HR", T0 + 1 * H, 70.0),
        _row("HR", T0 + 50 * H, 90.0),
        _row("HR", T0 + 30 * H, 60.0),
        _row("ICU_ADMISSION//A", T0 + 5 * H, subject_id=2),
        _row("ICU_DISCHARGE//A", T0 + 6 * H, subject_id=2),
    ]
    root = write_meds(tmp_path / "m", {"train/0": rows}, dataset_name="OTHER")
    (root / "meds_mapping.yaml").write_text(NO_STAY_ID_MAPPING)
    # rows without a stay id: the stay of the subject with intime - lookback <= t <= outtime
    report, out = _extract(root, tmp_path, lookback_hours=12)
    st = pd.read_parquet(out / "stays.parquet")
    assert st[["stay_id", "patient_id", "intime", "outtime"]].values.tolist() == [
        [1, 1, T0, T0 + 10 * H],
        [2, 1, T0 + 48 * H, T0 + 60 * H],
        [3, 2, T0 + 5 * H, T0 + 6 * H],
    ]
    ev = _events(out)
    assert ev[["stay_id", "value"]].values.tolist() == [[1, 70.0], [2, 90.0]]
    assert report["dropped"]["events.chart[0] (heart_rate)"] == {"no_stay_for_subject_time": 1}
    assert report["mapping"]["name"] == "test_no_stay_id"
    assert report["cultures"] == 0 and any("no culture events" in w for w in report["warnings"])


# ------------------------------------------------------------------ bad input
def test_missing_code_column(tmp_path):
    schema = pa.schema(
        [("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("numeric_value", pa.float32())]
    )
    root = write_meds(
        tmp_path / "m", {"train/0": [{"subject_id": 1, "time": T0}]}, schema=schema, codes=[]
    )
    with pytest.raises(SchemaError, match=r"train/0\.parquet: missing column 'code'"):
        _extract(root, tmp_path)


def test_code_column_wrong_type(tmp_path):
    schema = pa.schema(
        [
            ("subject_id", pa.int64()),
            ("time", pa.timestamp("us")),
            ("code", pa.int64()),
            ("numeric_value", pa.float32()),
        ]
    )
    root = write_meds(
        tmp_path / "m",
        {"train/0": [{"subject_id": 1, "time": T0, "code": 5}]},
        schema=schema,
        codes=[],
    )
    with pytest.raises(
        SchemaError, match=r"0\.parquet: column 'code' has type int64, expected string"
    ):
        _extract(root, tmp_path)


def test_extra_column_wrong_type(tmp_path):
    fields = [
        ("subject_id", pa.int64()),
        ("time", pa.timestamp("us")),
        ("code", pa.string()),
        ("numeric_value", pa.float32()),
        ("icustay_id", pa.string()),
    ]
    root = write_meds(
        tmp_path / "m", {"train/0": [_row("GENDER//F", icustay_id="x")]}, schema=pa.schema(fields)
    )
    with pytest.raises(
        SchemaError, match=r"column 'icustay_id' has type string, expected an integer"
    ):
        _extract(root, tmp_path)


def test_shard_listed_in_metadata_missing(tmp_path):
    root = write_meds(
        tmp_path / "m", {"train/0": golden_rows(), "tuning/0": [_row("GENDER//M", subject_id=2)]}
    )
    (root / "data" / "tuning" / "0.parquet").unlink()
    with pytest.raises(MedsDataError, match=r"\.shards\.json: lists shard\(s\) \['tuning/0'\]"):
        _extract(root, tmp_path)


def test_empty_data_folder(tmp_path):
    root = write_meds(tmp_path / "m", {"train/0": golden_rows()})
    (root / "data" / "train" / "0.parquet").unlink()
    with pytest.raises(MedsDataError, match=r"data: no parquet shards"):
        _extract(root, tmp_path)
    with pytest.raises(MedsDataError, match="no parquet shards"):
        inputs(root)


def test_not_a_meds_folder(tmp_path):
    with pytest.raises(MedsDataError, match="does not exist"):
        _extract(tmp_path / "nothing", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsDataError, match="no data/ folder"):
        _extract(tmp_path / "empty", tmp_path)


def test_missing_dataset_json(tmp_path):
    root = write_meds(tmp_path / "m", {"train/0": golden_rows()})
    (root / "metadata" / "dataset.json").unlink()
    with pytest.raises(MedsDataError, match=r"dataset\.json: missing"):
        _extract(root, tmp_path)


def test_null_time_of_a_measurement(tmp_path):
    rows = golden_rows() + [_row("LAB//220045//bpm", None, 70.0, hadm_id=10, icustay_id=100)]
    root = write_meds(tmp_path / "m", {"train/0": rows})
    with pytest.raises(
        MedsDataError, match=r"0\.parquet: column 'time' is null in 1 row\(s\).*'LAB//220045//bpm'"
    ):
        _extract(root, tmp_path)
    report, out = _extract(root, tmp_path, on_bad_rows="skip-and-count")
    assert report["dropped"]["events.chartevents[0] (heart_rate)"] == {"null_time": 1}
    assert report["concepts"]["heart_rate"] == 1


def test_no_icu_stays(tmp_path):
    root = write_meds(
        tmp_path / "m", {"train/0": [_row("GENDER//F"), _row("LAB//220045//bpm", T0, 1.0)]}
    )
    with pytest.raises(MedsDataError, match=r"no ICU stays.*mimic_iv_meds\.yaml stays\.admission"):
        _extract(root, tmp_path)


def test_unknown_dataset_name(tmp_path):
    root = write_meds(tmp_path / "m", {"train/0": golden_rows()}, dataset_name="eICU")
    with pytest.raises(
        mm.MappingError, match=r"no MEDS mapping for dataset_name 'eICU'.*meds_mapping\.yaml"
    ):
        _extract(root, tmp_path)


def test_subject_in_two_shards_warns(tmp_path):
    root = write_meds(
        tmp_path / "m",
        {"train/0": golden_rows(), "tuning/0": [_row("LAB//220045//bpm", T0 + 2 * H, 1.0)]},
    )
    report, _ = _extract(root, tmp_path)
    assert any("more than one shard" in w for w in report["warnings"])


# ------------------------------------------------------------------ mapping files
def _mapping(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


BASE = NO_STAY_ID_MAPPING


@pytest.mark.parametrize(
    "edit, message",
    [
        (("heart_rate", "heart_rat"), r"events\.chart\[0\]\.concept: unknown concept 'heart_rat'"),
        (
            ("regex: '^HR$'", "regex: '^HR('"),
            r"events\.chart\[0\]\.match\.regex: not a valid regular expression",
        ),
        (("version: 1", "version: 2"), r"version: expected 1, got 2"),
        (("name: test_no_stay_id", "name: t\nfoo: 1"), r"<top level>: unknown key\(s\) \['foo'\]"),
        (
            ("match: {regex: '^HR$'}}", "match: {regex: '^HR$'}, units: {bpm: degK}}"),
            r"events\.chart\[0\]\.units\.bpm: unknown conversion 'degK'",
        ),
        (
            (
                "match: {regex: '^HR$'}}",
                "match: {regex: '^HR$'}, units: {bpm: 1}, convert: lb_to_kg}",
            ),
            r"events\.chart\[0\]: give units or convert, not both",
        ),
        (
            (
                "match: {regex: '^HR$'}}",
                "match: {regex: '^HR$'}, pair_with: {concept: po2, within_minutes: 5}}",
            ),
            r"pair_with\.concept: no rule of `events` gives 'po2'",
        ),
        (("heart_rate", "norepinephrine"), r"concept 'norepinephrine' is of kind 'vasopressor'"),
        (
            ("match: {regex: '^HR$'}}", "match: {regex: '^(?P<x>HR)$'}}"),
            r"unknown named group\(s\) \['x'\]",
        ),
        (
            ('  discharge: {prefix: "ICU_DISCHARGE//"}\n', ""),
            r"stays: missing key\(s\) \['discharge'\]",
        ),
        (
            ("columns: {hadm_id: hadm_id}", "columns: {icu: icustay_id}"),
            r"columns: unknown key\(s\) \['icu'\]",
        ),
    ],
)
def test_mapping_validation(tmp_path, edit, message):
    old, new = edit
    assert old in BASE
    with pytest.raises(mm.MappingError, match=message) as err:
        mm.load(_mapping(tmp_path, BASE.replace(old, new)))
    assert "bad.yaml" in str(err.value)


def test_mapping_not_yaml(tmp_path):
    with pytest.raises(mm.MappingError, match=r"bad\.yaml: not valid YAML"):
        mm.load(_mapping(tmp_path, "a: [1, 2"))


def test_code_matching_two_rules_is_an_error(tmp_path):
    text = BASE + "    - {concept: sbp, match: {prefix: 'H'}}\n"
    m = mm.load(_mapping(tmp_path, text))
    assert m.classify("XYZ") is None
    with pytest.raises(
        mm.MappingError,
        match=r"code 'HR' matches both events\.chart\[0\] \(heart_rate\) and events\.chart\[1\] \(sbp\)",
    ):
        m.classify("HR")


def test_shipped_mapping_loads_and_agrees_with_the_dictionary():
    """Every MetaVision item of the mapping that the dictionary lists for MIMIC-III feeds the
    same concept (the MIMIC-IV ETL keeps the MIMIC-III MetaVision and lab item IDs)."""
    from data_prep.concepts.dictionary import concepts

    m = mm.load(MIMIC_MAPPING)
    d = concepts()
    by_table = {t: d.items("mimic3", t) for t in ("chartevents", "labevents", "outputevents")}
    checked = 0
    for r in m.events:
        table = {
            "chartevents": "chartevents",
            "labevents": "labevents",
            "outputevents": "outputevents",
        }[r.part]
        for item in re.findall(r"\d{5,6}", r.match.regex.pattern):
            known = by_table[table].get(int(item))
            if known is not None:
                assert known[0] == r.concept, (r.key, item, known)
                checked += 1
    assert checked > 60


# ------------------------------------------------------------------ the MIMIC-IV demo in MEDS format
needs_demo = pytest.mark.skipif(
    not (DEMO / "with-microbiology" / "data").is_dir(),
    reason=f"MIMIC-IV MEDS demo not found at {DEMO} (set SEPSIS_SHARED_DATA)",
)


@needs_demo
def test_demo_with_microbiology(tmp_path):
    report, out = _extract(DEMO / "with-microbiology", tmp_path)
    st = dio.read_parquet(out / "stays.parquet", dio.EXTRACTED_STAYS)
    assert len(st) == 140 and st["stay_id"].is_unique and st["has_chart"].all()
    assert report["cultures"] > 1000 and report["antibiotics"] > 0
    c = report["concepts"]
    for concept in (
        "heart_rate",
        "mbp",
        "po2",
        "fio2",
        "fio2_bloodgas",
        "platelets",
        "bilirubin",
        "creatinine",
        "gcs_verbal",
        "urine_output",
        "weight",
        "norepinephrine",
        "blood_gas_specimen",
        "ventilation",
        "sepsis_diagnosis",
    ):
        assert c.get(concept, 0) > 0, concept
    ev = _events(out)
    assert ev["stay_id"].isin(st["stay_id"]).all()
    ne = ev[ev.concept == "norepinephrine"]
    assert ne["end_time"].notna().all() and ne["value"].between(0, 10).all()
    ad = dio.read_parquet(out / "admission_events.parquet", dio.ADMISSION_EVENTS)
    assert set(ad.time_source.dropna()) == {"order time", "administration", "charted", "date only"}
    assert report["codes_not_in_metadata"]["codes"] == 0
    # the raw tables' 73 procedureevents ventilation intervals; ED registrations linked
    assert report["pairing"]["intervals[0] (ventilation)"]["intervals"] == 73
    assert report["stays_detail"]["admissions_with_ed_registration"] == 180
    assert report["admission_events"]["culture_without_hadm_id"] == 190  # as the raw tables


@needs_demo
def test_demo_official_has_no_cultures(tmp_path):
    report, out = _extract(DEMO / "official", tmp_path)
    assert report["cultures"] == 0 and report["stays"] == 140
    assert any("no culture events" in w for w in report["warnings"])
    ad = dio.read_parquet(out / "admission_events.parquet", dio.ADMISSION_EVENTS)
    assert (ad.concept == "culture").sum() == 0 and (ad.concept == "antibiotic").sum() > 0


def test_documented_skeleton_is_a_valid_mapping(tmp_path):
    """The eICU-style skeleton of docs/MEDS_MAPPING.md passes the validator."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "MEDS_MAPPING.md").read_text()
    block = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)[-1]
    m = mm.load(_mapping(tmp_path, block))
    assert m.name == "eicu_meds" and m.classify("VITALS//heartrate").concept == "heart_rate"


def test_pre_0_3_patient_id_named(tmp_path):
    schema = pa.schema(
        [
            ("patient_id", pa.int64()),
            ("time", pa.timestamp("us")),
            ("code", pa.string()),
            ("numeric_value", pa.float32()),
        ]
    )
    root = write_meds(
        tmp_path / "m", {"train/0": [{"patient_id": 1, "time": T0, "code": "X"}]}, schema=schema
    )
    with pytest.raises(
        SchemaError, match=r"missing column 'subject_id' \(patient_id is MEDS < 0\.3"
    ):
        _extract(root, tmp_path)


# ------------------------------------------------------------------ ED registrations, intervals
def test_ed_registration_starts_the_admission_for_events_without_hadm_id(tmp_path):
    """An event without hadm_id drawn in the ED before admittime joins the admission whose
    ED registration precedes it (MIMIC-IV: a third of the cultures; ED_REGISTRATION has no
    hadm_id in MEDS), as the MIMIC-IV reader's [min(edregtime, admittime), dischtime]; a
    date-only culture joins when its day overlaps the admission. An admission without an ED
    registration of its own does not take the previous admission's."""
    adm = pd.Timestamp("2150-01-01")  # the golden admission 10
    rows = [r for r in golden_rows() if not r["code"].startswith("MICRO//")]
    rows += [
        _row("ED_REGISTRATION", adm - 5 * H),
        _row("ED_OUT", adm + H),
        _row("MICRO//SPECIMEN//BLOOD CULTURE", adm - 4 * H),  # in the ED: admission 10
        _row("MICRO//SPECIMEN//URINE", adm - 6 * H),  # before the ED registration: none
        _row("MEDICATION//CefePIME//Administered//123", adm - 3 * H, emar_id="e9"),  # ED dose
        # a second admission (no ED registration) on 2150-02-01 12:00
        _row("HOSPITAL_ADMISSION//ELECTIVE", "2150-02-01 12:00", hadm_id=11),
        _row("HOSPITAL_DISCHARGE//HOME", "2150-02-05", hadm_id=11),
        _row("MICRO//SPECIMEN//SPUTUM", "2150-02-01 10:00"),  # before its admittime: none
        _row("MICRO//SPECIMEN//STOOL", "2150-02-01 00:00"),  # date only, same day: 11
    ]
    root = write_meds(tmp_path / "meds", {"train/0": rows})
    report, out = _extract(root, tmp_path)
    ad = dio.read_parquet(out / "admission_events.parquet", dio.ADMISSION_EVENTS)
    c = ad[ad.concept == "culture"]
    cul = dict(zip(c.text, c.hadm_id, strict=True))
    assert cul["BLOOD CULTURE"] == 10 and pd.isna(cul["URINE"])
    assert pd.isna(cul["SPUTUM"]) and cul["STOOL"] == 11
    ed_dose = ad[(ad.concept == "antibiotic") & (ad.time == adm - 3 * H)]
    assert ed_dose.hadm_id.tolist() == [10]
    assert report["stays_detail"]["admissions_with_ed_registration"] == 1
    assert report["admission_events"]["hadm_id_filled_from_admission_time"] == 3


def test_intervals_written_as_hold_covering_events(tmp_path):
    """PROCEDURE//START and //END rows of a stay pair in time order into ventilation events
    every hold_hours (8 h) with end_time, as the MIMIC-IV reader writes procedureevents; a
    START without END gives one event without end_time; an END without START is counted."""
    d = dict(hadm_id=10, icustay_id=100)
    rows = golden_rows() + [
        _row("PROCEDURE//START//225792", T0 + 2 * H, **d),
        _row("PROCEDURE//END//225792", T0 + 12 * H, **d),
        _row("PROCEDURE//START//225794", T0 + 20 * H, **d),  # never ended
        _row("PROCEDURE//END//225794", T0 + 10 * H, icustay_id=999),  # unknown stay, no start
        _row("PROCEDURE//START//225400", T0 + 2 * H, **d),  # another procedure: not mapped
    ]
    root = write_meds(tmp_path / "meds", {"train/0": rows})
    report, out = _extract(root, tmp_path)
    pe = dio.read_parquet(out / "events" / "procedureevents.parquet", dio.EVENTS)
    got = pe.sort_values("time")[["stay_id", "time", "concept", "end_time", "text"]]
    assert got.values.tolist() == [
        [100, T0 + 2 * H, "ventilation", T0 + 10 * H, "Invasive Ventilation"],
        [100, T0 + 10 * H, "ventilation", T0 + 12 * H, "Invasive Ventilation"],
        [100, T0 + 20 * H, "ventilation", pd.NaT, "Non-invasive Ventilation"],
    ]
    assert pe.value.isna().all()
    assert report["pairing"]["intervals[0] (ventilation)"] == {"intervals": 2, "events_written": 3}
    assert report["dropped"]["intervals[0] (ventilation).end"] == {"end_without_start": 1}


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            "admissions: {ed_registration: {code: ED}}\n",
            r"admissions\.ed_registration: needs admissions\.start",
        ),
        (
            "intervals:\n  - {concept: ventilation, start: {code: S}}\n",
            r"intervals\[0\]: missing key\(s\) \['end'\]",
        ),
        (
            "intervals:\n  - {concept: ventilation, start: {code: S}, end: {code: E}, part: 'a b'}\n",
            r"intervals\[0\]\.part: part names are",
        ),
    ],
)
def test_mapping_validation_ed_and_intervals(tmp_path, extra, message):
    with pytest.raises(mm.MappingError, match=message):
        mm.load(_mapping(tmp_path, BASE + extra))
