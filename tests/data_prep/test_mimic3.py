"""Tests of the streaming MIMIC-III reader (data_prep.sources.mimic3).

Most tests run on `fixtures/mimic3_mini`, hand-written MIMIC-format tables (3 ICU stays) whose
expected outputs are worked out in the comments; the demo tests use the real MIMIC-III demo in
the shared data folder and skip when it is absent.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.concepts.dictionary import concepts
from data_prep.sources import mimic3
from data_prep.sources.mimic3 import SCHEMAS, MalformedRowError, ReaderParams, cv_intervals, extract

FIXTURE = Path(__file__).parent / "fixtures" / "mimic3_mini"
SHARED = Path(
    os.environ.get(
        "SEPSIS_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)
DEMO = SHARED / "mimic3-demo"
H = pd.Timedelta(hours=1)


def _copy(
    tmp_path: Path, lower_files: bool = False, lower_cols: bool = False, gz: bool = False
) -> Path:
    """Copy the fixture, optionally with lower-case names/columns and gzip compression."""
    dst = tmp_path / "raw"
    dst.mkdir()
    for src in FIXTURE.glob("*.csv"):
        text = src.read_text()
        if lower_cols:
            head, rest = text.split("\n", 1)
            text = head.lower() + "\n" + rest
        name = src.name.lower() if lower_files else src.name
        if gz:
            with gzip.open(dst / (name + ".gz"), "wt") as fh:
                fh.write(text)
        else:
            (dst / name).write_text(text)
    return dst


def _edit(folder: Path, table: str, old: str, new: str) -> None:
    path = folder / f"{table}.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _read(out: Path, name: str) -> pd.DataFrame:
    return pq.read_table(out / f"{name}.parquet").to_pandas()


def _events(out: Path, part: str) -> pd.DataFrame:
    """One events part (chartevents, labevents, outputevents, inputevents)."""
    return _read(out, f"events/{part}")


CHART_CONCEPTS = {c for c, _, _ in concepts().items("mimic3", "chartevents").values()}
VASOPRESSORS = {c.name for c in concepts().of_kind("vasopressor")}


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> tuple[Path, mimic3.ExtractionReport]:
    out = tmp_path_factory.mktemp("mini") / "extracted"
    rep = extract(FIXTURE, out, ReaderParams(), progress=False)
    return out, rep


def test_params_validate() -> None:
    ReaderParams().validate()
    for bad, key in [
        (ReaderParams(on_bad_rows="ignore"), "on_bad_rows"),
        (ReaderParams(batch_rows=0), "batch_rows"),
        (ReaderParams(lab_lookback_hours=-1.0), "lab_lookback_hours"),
        (ReaderParams(lab_lookback_hours=float("nan")), "lab_lookback_hours"),
    ]:
        with pytest.raises(ValueError, match=key):
            bad.validate()


def test_schemas_and_report(mini) -> None:
    out, rep = mini
    for name, schema in SCHEMAS.items():
        table = mimic3.read_extracted(out, name)  # checks the declared schema
        assert table.schema.equals(schema, check_metadata=False)
    assert rep.outputs == {
        "events/chartevents.parquet": 8,
        "events/inputevents.parquet": 7,
        "events/labevents.parquet": 4,
        "events/outputevents.parquet": 2,
        # 2 antibiotic orders + 2 cultures + 1 sepsis code (0389 is not one)
        "admission_events.parquet": 5,
        "stays.parquet": 3,
    }
    assert sorted(p.name for p in (out / "events").iterdir()) == sorted(
        f"{p}.parquet" for p in mimic3.EVENT_PARTS
    )
    ce = rep.tables["CHARTEVENTS"]
    assert (ce.rows_read, ce.rows_kept) == (12, 8)
    assert ce.dropped == {
        "itemid_not_needed": 1,
        "unknown_stay": 1,
        "error_flag": 1,
        "outside_stay": 1,
    }
    assert ce.rows_read == ce.rows_kept + sum(ce.dropped.values())
    for t in (
        "LABEVENTS",
        "OUTPUTEVENTS",
        "INPUTEVENTS_MV",
        "INPUTEVENTS_CV",
        "PRESCRIPTIONS",
        "MICROBIOLOGYEVENTS",
        "DIAGNOSES_ICD",
    ):
        tr = rep.tables[t]
        assert tr.rows_read == tr.rows_kept + sum(tr.dropped.values()), t
    assert rep.tables["OUTPUTEVENTS"].dropped["negative_value"] == 1
    assert rep.tables["DIAGNOSES_ICD"].dropped == {"not_sepsis_code": 1}
    js = (out / "extraction_report.json").read_text()
    assert '"rows_per_s"' in js and '"peak_rss_mb"' in js


def test_stays(mini) -> None:
    out, _ = mini
    s = _read(out, "stays").set_index("stay_id")
    assert list(s.index) == [300001, 300002, 300003]
    assert s.loc[300001, "age"] == pytest.approx(
        (pd.Timestamp("2150-01-01 08:00") - pd.Timestamp("2100-01-01")) / pd.Timedelta(days=365.25)
    )
    assert s.loc[300002, "age"] == 91.4  # DOB shifted ~300 years -> capped
    assert s["gender"].tolist() == ["F", "M", "F"]
    assert s["dbsource"].tolist() == ["metavision", "carevue", "metavision"]
    assert s["unit"].tolist() == ["MICU", "SICU", "CCU"]
    assert s["died"].tolist() == [False, True, False]
    assert s["has_chart"].tolist() == [True, True, False]
    assert s.loc[300001, "weight_kg"] == 80.0
    assert s.loc[300002, "weight_kg"] == pytest.approx(176 * 0.45359237)  # item 3581 is in lb
    assert np.isnan(s.loc[300003, "weight_kg"])
    assert s["los_hours"].tolist() == [48.0, 24.0, 24.0]
    assert (s["source"] == "mimic3").all()


def test_chart_itemid_filter_window_and_value(mini) -> None:
    out, rep = mini
    c = _events(out, "chartevents")
    assert set(c["concept"]) <= CHART_CONCEPTS
    assert rep.tables["CHARTEVENTS"].dropped["itemid_not_needed"] == 1  # ITEMID 999999
    assert "xyz" not in set(c["text"])
    # 300002's row 23 h before intime is kept; 300001's row 2 days after outtime is not
    assert pd.Timestamp("2150-01-31 01:00") in set(c.loc[c.stay_id == 300002, "time"])
    assert pd.Timestamp("2150-01-05 12:00") not in set(c["time"])
    assert 300.0 not in set(c["value"])  # ERROR = 1 row
    # text kept for GCS verbal only (not for numeric items)
    assert c.loc[c.concept == "gcs_verbal", "text"].tolist() == ["No Response-ETT"]
    assert c.loc[c.concept != "gcs_verbal", "text"].isna().all()
    assert c["end_time"].isna().all()
    # in the concept's unit: item 3581 is charted in lb
    w = c.loc[c.concept == "weight"].set_index("stay_id")["value"]
    assert w.to_dict() == {300001: 80.0, 300002: pytest.approx(176 * 0.45359237)}
    hr = c.loc[(c.stay_id == 300002) & (c.concept == "heart_rate"), "value"]
    assert hr.tolist() == [90.0, 95.0]  # CareVue 211 and MetaVision 220045 are one concept


def test_chart_rows_keep_file_order(mini) -> None:
    c = _events(mini[0], "chartevents")
    # fixture rows 1, 2, 3, 6, 7, 8, 11, 12 (the others dropped), in file order
    assert c["concept"].tolist() == [
        "heart_rate",
        "heart_rate",
        "weight",
        "gcs_verbal",
        "heart_rate",
        "weight",
        "heart_rate",
        "resp_rate",
    ]


def test_fahrenheit_items_are_converted(tmp_path) -> None:
    raw = _copy(tmp_path)
    with open(raw / "CHARTEVENTS.csv", "a") as fh:  # 678: CareVue temperature in degF
        fh.write("13,2,102,300002,678,2150-02-01 03:00:00,,11,98.6,98.6,Deg. F,,,,NotStopd\n")
        fh.write("14,2,102,300002,676,2150-02-01 04:00:00,,11,37.5,37.5,Deg. C,,,,NotStopd\n")
    extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    c = _events(tmp_path / "o", "chartevents")
    t = c.loc[c.concept == "temperature", "value"].tolist()
    assert t == [pytest.approx(37.0), 37.5]


def test_lab_assignment_by_subject_and_time(mini) -> None:
    out, rep = mini
    lab = _events(out, "labevents").sort_values(["stay_id", "time"])
    assert lab["concept"].tolist() == ["creatinine", "creatinine", "platelets", "creatinine"]
    got = list(zip(lab.stay_id, lab.time.astype(str), lab.value, strict=True))
    assert got == [
        (300001, "2150-01-01 00:00:00", 1.0),  # 10 h before intime: within the 24 h look-back
        (300001, "2150-01-02 12:00:00", 1.5),
        (300002, "2150-02-01 05:00:00", 120.0),
        (300003, "2150-02-28 12:00:00", 2.0),  # subject 1's second stay, 12 h before its intime
    ]
    assert (
        rep.tables["LABEVENTS"].dropped["no_stay_for_subject_time"] == 2
    )  # between stays; no stay at all


def test_lab_lookback_param(tmp_path) -> None:
    rep = extract(FIXTURE, tmp_path / "o", ReaderParams(lab_lookback_hours=6.0), progress=False)
    lab = _events(tmp_path / "o", "labevents")
    assert rep.tables["LABEVENTS"].dropped["no_stay_for_subject_time"] == 4
    assert sorted(lab.value) == [1.5, 120.0]


def test_vasopressors_metavision_units_and_weight(mini) -> None:
    out, rep = mini
    v = _events(out, "inputevents")
    mv = v[v.stay_id == 300001].sort_values("time")
    assert mv["concept"].tolist() == ["norepinephrine", "norepinephrine", "epinephrine"]
    # 0.1 mcg/kg/min as is; 16 mcg/min / 80 kg = 0.2; 0.002 mg/kg/min = 2 mcg/kg/min
    assert mv["value"].tolist() == pytest.approx([0.1, 0.2, 2.0])
    assert (mv["end_time"] - mv["time"]).tolist() == [2 * H, 2 * H, 1 * H]
    assert v["text"].isna().all()
    assert v[["stay_id", "time"]].equals(v[["stay_id", "time"]].sort_values(["stay_id", "time"]))
    assert rep.tables["INPUTEVENTS_MV"].dropped["status_rewritten"] == 1


def test_vasopressors_carevue_intervals(mini) -> None:
    out, rep = mini
    v = _events(out, "inputevents")
    cv = v[v.stay_id == 300002].sort_values(["concept", "time"])
    w = 176 * 0.45359237
    t0 = pd.Timestamp("2150-02-01")
    got = [
        (d, s - t0, e - t0, r)
        for d, s, e, r in zip(cv.concept, cv.time, cv.end_time, cv.value, strict=True)
    ]
    expected = [
        ("dopamine", 3 * H, 7 * H, 5.0),  # no later dopamine rate: 4 h cap
        ("norepinephrine", 1 * H, 2 * H, 8 / w),  # 30047 mcg/min / weight, until 30120 at 02:00
        ("norepinephrine", 2 * H, 6 * H, 0.05),  # next charting 08:00 is 6 h later: capped at 4 h
        ("norepinephrine", 8 * H, 12 * H, 4 / w),  # empty rateuom: 30047 defaults to mcg/min
    ]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert [g[3] for g in got] == pytest.approx([e[3] for e in expected])
    assert rep.tables["INPUTEVENTS_CV"].dropped["missing_rate"] == 1


def test_urine(mini) -> None:
    out, _ = mini
    u = _events(out, "outputevents").sort_values("stay_id")
    assert u["value"].tolist() == [200.0, 150.0]  # negative and non-urine rows dropped
    assert set(u["concept"]) == {"urine_output"}


def _admission(out: Path, concept: str) -> pd.DataFrame:
    a = _read(out, "admission_events")
    return a[a["concept"] == concept].reset_index(drop=True)


def test_admission_events(mini) -> None:
    out, _ = mini
    a = _read(out, "admission_events")
    assert a["concept"].tolist() == ["antibiotic"] * 2 + ["culture"] * 2 + ["sepsis_diagnosis"]
    p = _admission(out, "antibiotic")
    assert p["time"].tolist() == [
        pd.Timestamp("2150-01-01"),
        pd.Timestamp("2150-02-01"),
    ]  # date-only + full
    assert p["time_source"].tolist() == ["order date"] * 2
    assert p["text"].tolist()[1] == "Piperacillin-Tazobactam, 4.5 g"
    assert p[["patient_id", "hadm_id"]].values.tolist() == [[1, 101], [2, 102]]
    m = _admission(out, "culture")
    assert m["time"].tolist() == [pd.Timestamp("2150-01-01 09:30"), pd.Timestamp("2150-02-01")]
    assert m["time_source"].tolist() == ["charted", "date only"]
    assert m["text"].tolist() == ["BLOOD CULTURE", "URINE"]
    d = _admission(out, "sepsis_diagnosis")
    assert d[["patient_id", "hadm_id", "text"]].values.tolist() == [[1, 101, "99591"]]
    assert d["time"].isna().all() and d["time_source"].isna().all()


def test_diagnosis_codes_are_matched_without_dots_and_spaces(tmp_path) -> None:
    raw = _copy(tmp_path)
    _edit(raw, "DIAGNOSES_ICD", "2,2,102,1,0389", "2,2,102,1, 995.92 ")
    rep = extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    d = _admission(tmp_path / "o", "sepsis_diagnosis")
    assert d["text"].tolist() == ["99591", "99592"]
    assert rep.tables["DIAGNOSES_ICD"].dropped == {}


def test_antibiotic_conventions_drop_and_count(tmp_path) -> None:
    raw = _copy(tmp_path)
    with open(raw / "PRESCRIPTIONS.csv", "a") as fh:
        fh.write("3,1,101,,2150-01-02,,BASE,Vancomycin,x,IV\n")  # not MAIN/ADDITIVE
        fh.write("4,1,101,,2150-01-02,,MAIN,Heparin,x,IV\n")  # not an antibiotic
        fh.write("5,1,101,,2150-01-02,,MAIN,Gentamicin,x,OU\n")  # an eye route
        fh.write("6,1,101,,2150-01-02,,MAIN,Gentamicin,x,LEFT EAR\n")  # route substring
        fh.write("7,1,101,,2150-01-02,,ADDITIVE,Cefepime Ointment,x,IV\n")  # kept
        fh.write("8,1,101,,2150-01-02,,MAIN,Erythromycin Ophth Oint,x,IV\n")  # name substring
        fh.write("9,1,,,,,MAIN,Cefazolin,x,IV\n")  # kept: no admission, no date
    rep = extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    tr = rep.tables["PRESCRIPTIONS"]
    assert tr.dropped == {
        "not_main_or_additive": 1,
        "not_antibiotic": 1,
        "antibiotic_route_excluded": 2,
        "antibiotic_name_excluded": 1,
    }
    assert tr.rows_read == tr.rows_kept + sum(tr.dropped.values()) == 9
    p = _admission(tmp_path / "o", "antibiotic")
    assert p["text"].tolist() == [
        "Vancomycin",
        "Piperacillin-Tazobactam, 4.5 g",
        "Cefepime Ointment",
        "Cefazolin",
    ]
    assert p["hadm_id"].isna().tolist() == [False, False, False, True]
    assert p["time"].isna().tolist() == [False, False, False, True]


@pytest.mark.parametrize(
    "lower_files,lower_cols,gz", [(True, True, False), (False, False, True), (True, True, True)]
)
def test_case_and_compression_variants(tmp_path, mini, lower_files, lower_cols, gz) -> None:
    raw = _copy(tmp_path, lower_files, lower_cols, gz)
    extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    for name in SCHEMAS:
        pd.testing.assert_frame_equal(_read(tmp_path / "o", name), _read(mini[0], name), obj=name)


def test_missing_table(tmp_path) -> None:
    raw = _copy(tmp_path)
    (raw / "LABEVENTS.csv").unlink()
    with pytest.raises(FileNotFoundError, match="LABEVENTS") as err:
        extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    assert str(raw) in str(err.value)
    assert not (tmp_path / "o").exists()


def test_missing_column(tmp_path) -> None:
    raw = _copy(tmp_path, lower_files=True, lower_cols=True)
    path = raw / "chartevents.csv"
    df = pd.read_csv(path, dtype=str).drop(columns="valuenum")
    df.to_csv(path, index=False)
    with pytest.raises(ValueError, match="CHARTEVENTS") as err:
        extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    assert "VALUENUM" in str(err.value) and str(raw) in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_malformed_itemid_error_and_skip(tmp_path, gz) -> None:
    raw = _copy(tmp_path)
    # data row 2 of CHARTEVENTS (heart rate 85) gets a non-numeric ITEMID
    _edit(raw, "CHARTEVENTS", "2,1,101,300001,220045,", "2,1,101,300001,22O045,")
    if gz:
        src = raw / "CHARTEVENTS.csv"
        with gzip.open(raw / "CHARTEVENTS.csv.gz", "wb") as fh:
            fh.write(src.read_bytes())
        src.unlink()
    with pytest.raises(MalformedRowError) as err:
        extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    msg = str(err.value)
    assert (
        "CHARTEVENTS.csv" in msg and "data row 2" in msg and "'ITEMID'" in msg and "'22O045'" in msg
    )
    assert not (tmp_path / "o").exists()
    rep = extract(raw, tmp_path / "o", ReaderParams(on_bad_rows="skip-and-count"), progress=False)
    ce = rep.tables["CHARTEVENTS"]
    assert ce.dropped["malformed_itemid"] == 1 and ce.rows_kept == 7 and ce.passes == 2
    assert 85.0 not in set(_events(tmp_path / "o", "chartevents")["value"])


def test_malformed_time_error_and_skip(tmp_path) -> None:
    raw = _copy(tmp_path)
    _edit(
        raw,
        "CHARTEVENTS",
        "2150-01-01 12:00:00,2150-01-01 12:05:00",
        "2150-01-01 25:00:00,2150-01-01 12:05:00",
    )
    with pytest.raises(MalformedRowError, match=r"data row 2 .*'CHARTTIME'.*'2150-01-01 25:00:00'"):
        extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    rep = extract(raw, tmp_path / "o", ReaderParams(on_bad_rows="skip-and-count"), progress=False)
    assert rep.tables["CHARTEVENTS"].dropped["malformed_charttime"] == 1
    assert rep.tables["CHARTEVENTS"].rows_kept == 7


def test_malformed_time_in_unneeded_row_is_not_an_error(tmp_path) -> None:
    raw = _copy(tmp_path)  # row 4 has ITEMID 999999, never parsed beyond the ITEMID
    _edit(
        raw,
        "CHARTEVENTS",
        "4,1,101,300001,999999,2150-01-01 11:00:00",
        "4,1,101,300001,999999,garbage",
    )
    rep = extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    assert rep.tables["CHARTEVENTS"].rows_kept == 8


def test_wrong_field_count(tmp_path) -> None:
    raw = _copy(tmp_path)
    _edit(
        raw,
        "OUTPUTEVENTS",
        "3,2,102,300002,2150-02-01 02:00:00,40055,150,ml,",
        "3,2,102,300002,2150-02-01 02:00:00,",
    )
    with pytest.raises(
        MalformedRowError,
        match=r"OUTPUTEVENTS.csv: data row 3 \(line 4\) has 10 fields, expected 13",
    ):
        extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    rep = extract(raw, tmp_path / "o", ReaderParams(on_bad_rows="skip-and-count"), progress=False)
    assert rep.tables["OUTPUTEVENTS"].dropped["malformed_row"] == 1
    assert _events(tmp_path / "o", "outputevents")["value"].tolist() == [200.0]


def test_unknown_rate_unit(tmp_path) -> None:
    raw = _copy(tmp_path)
    _edit(raw, "INPUTEVENTS_MV", "16,mcg/min,80", "16,units/hour,80")
    with pytest.raises(
        MalformedRowError, match=r"INPUTEVENTS_MV.csv: data row 2 .*'RATEUOM'.*units/hour"
    ):
        extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    rep = extract(raw, tmp_path / "o", ReaderParams(on_bad_rows="skip-and-count"), progress=False)
    assert rep.tables["INPUTEVENTS_MV"].dropped["unknown_rate_unit"] == 1
    assert len(_events(tmp_path / "o", "inputevents")) == 6


def test_row_numbers_across_batches(tmp_path) -> None:
    """A bad value deep in a multi-batch file is reported at its data row number."""
    raw = _copy(tmp_path)
    head, first = (raw / "CHARTEVENTS.csv").read_text().split("\n")[:2]
    rows = [first] * 30_000
    rows[23_456] = first.replace(",220045,", ",x1,")
    (raw / "CHARTEVENTS.csv").write_text(head + "\n" + "\n".join(rows) + "\n")
    params = ReaderParams(batch_rows=500)  # 64 KiB blocks: many batches
    with pytest.raises(MalformedRowError, match=r"data row 23457 \(line 23458\)"):
        extract(raw, tmp_path / "o", params, progress=False)
    rep = extract(
        raw,
        tmp_path / "o",
        ReaderParams(batch_rows=500, on_bad_rows="skip-and-count"),
        progress=False,
    )
    assert rep.tables["CHARTEVENTS"].rows_kept == 29_999
    assert (
        pq.ParquetFile(tmp_path / "o" / "events" / "chartevents.parquet").metadata.num_rows
        == 29_999
    )


def test_atomic_write(tmp_path, monkeypatch) -> None:
    out = tmp_path / "extracted"
    extract(FIXTURE, out, ReaderParams(), progress=False)
    before = sorted(p.name for p in out.iterdir())
    (out / "marker").write_text("old")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(
        mimic3, "_labevents", boom
    )  # fails after the chart/input events parts are written
    with pytest.raises(RuntimeError, match="disk full"):
        extract(FIXTURE, out, ReaderParams(), progress=False)
    assert (out / "marker").read_text() == "old"  # the previous output is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["extracted"]  # no temporary folder left
    with pytest.raises(RuntimeError):
        extract(FIXTURE, tmp_path / "fresh", ReaderParams(), progress=False)
    assert not (tmp_path / "fresh").exists()
    monkeypatch.undo()
    extract(FIXTURE, out, ReaderParams(), progress=False)  # success replaces the folder
    assert sorted(p.name for p in out.iterdir()) == before


def test_inputs_not_modified(tmp_path) -> None:
    raw = _copy(tmp_path, gz=True)
    stamp = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in raw.iterdir()}
    extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in raw.iterdir()} == stamp


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([30047, 30120, 30043]), st.integers(0, 20 * 60)),
        min_size=1,
        max_size=25,
    )
)
def test_cv_interval_properties(rows) -> None:
    us_min = 60_000_000
    df = pd.DataFrame(
        {
            "stay_id": 1,
            "itemid": [r[0] for r in rows],
            "starttime": [r[1] * us_min for r in rows],
            "rate": 1.0,
        }
    )
    out = cv_intervals(df)
    assert len(out) == len(df)
    dur = out["endtime"] - out["starttime"]
    assert (dur > 0).all() and (dur <= 4 * 60 * us_min).all()
    drug = out["itemid"].map(
        {i: c for i, (c, _, _) in concepts().items("mimic3", "inputevents_cv").items()}
    )
    for _drug, g in out.groupby(drug):
        times = np.sort(g["starttime"].unique())
        for s, e in zip(g["starttime"], g["endtime"], strict=True):
            later = times[times > s]
            assert e == (min(later[0], s + 4 * 60 * us_min) if len(later) else s + 4 * 60 * us_min)


# ------------------------------------------------------------------ real MIMIC-III demo

needs_demo = pytest.mark.skipif(
    not (DEMO / "CHARTEVENTS.csv.gz").exists(),
    reason=f"MIMIC-III demo not found at {DEMO} (set SEPSIS_SHARED_DATA)",
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, mimic3.ExtractionReport]:
    out = tmp_path_factory.mktemp("demo") / "extracted"
    return out, extract(DEMO, out, ReaderParams(), progress=False)


@needs_demo
def test_demo_extracts(demo) -> None:
    out, rep = demo
    stays = _read(out, "stays")
    assert len(stays) == 136 and stays["stay_id"].is_unique
    for part in mimic3.EVENT_PARTS:
        assert len(_events(out, part)) > 0, part
    a = _read(out, "admission_events")
    assert set(a["concept"]) == {"antibiotic", "culture", "sepsis_diagnosis"}
    assert set(a["time_source"].dropna()) == {
        "order date",
        "administration",
        "charted",
        "date only",
    }
    assert set(stays["dbsource"]) == {"carevue", "metavision"}
    assert stays["age"].max() <= 91.4 and stays["age"].min() > 15
    assert stays["has_chart"].sum() > 100
    v = _events(out, "inputevents")
    assert set(v["concept"]) <= VASOPRESSORS and (v["end_time"] >= v["time"]).all()
    assert (v["value"] >= 0).all() and v.loc[
        v.concept == "norepinephrine", "value"
    ].median() < 2  # mcg/kg/min scale
    for t, tr in rep.tables.items():
        if t != "stays":
            assert tr.rows_read == tr.rows_kept + sum(tr.dropped.values()), t


@needs_demo
def test_demo_chart_rows_match_raw_csv(demo) -> None:
    out, _ = demo
    raw = pd.read_csv(
        DEMO / "CHARTEVENTS.csv.gz",
        usecols=["icustay_id", "itemid", "charttime", "valuenum", "error"],
    )
    stays = pd.read_csv(DEMO / "ICUSTAYS.csv.gz", parse_dates=["intime", "outtime"]).set_index(
        "icustay_id"
    )
    hr_items = [
        i for i, (c, _, _) in concepts().items("mimic3", "chartevents").items() if c == "heart_rate"
    ]
    hr = raw[raw.itemid.isin(hr_items)]
    stay = int(hr["icustay_id"].value_counts().index[0])
    r = raw[
        (raw.icustay_id == stay) & raw.itemid.isin(hr_items) & (raw.error.fillna(0) != 1)
    ].copy()
    r["charttime"] = pd.to_datetime(r["charttime"])
    lo, hi = stays.loc[stay, "intime"] - 24 * H, stays.loc[stay, "outtime"] + H
    r = r[(r.charttime >= lo) & (r.charttime <= hi)]
    c = _events(out, "chartevents")
    c = c[(c.stay_id == stay) & (c.concept == "heart_rate")]
    assert len(c) > 20
    key = ["time", "value"]
    got = c[key].sort_values(key).reset_index(drop=True)
    want = r.rename(columns={"charttime": "time", "valuenum": "value"})[key]
    want = want.sort_values(key).reset_index(drop=True)
    want["time"] = want["time"].astype("datetime64[us]")
    pd.testing.assert_frame_equal(got, want)


def test_no_stray_temp_folders(tmp_path) -> None:
    extract(FIXTURE, tmp_path / "a" / "extracted", ReaderParams(), progress=False)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["extracted"]
    shutil.rmtree(tmp_path / "a")
