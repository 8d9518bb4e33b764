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

from data_prep.concepts import variables as V
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
        "chart.parquet": 8,
        "vasopressors.parquet": 7,
        "lab.parquet": 4,
        "urine.parquet": 2,
        "prescriptions.parquet": 2,
        "microbiology.parquet": 2,
        "diagnoses.parquet": 2,
        "stays.parquet": 3,
        "antibiotics_mv.parquet": 0,
    }
    ce = rep.tables["CHARTEVENTS"]
    assert (ce.rows_read, ce.rows_kept) == (12, 8)
    assert ce.dropped == {
        "itemid_not_needed": 1,
        "unknown_stay": 1,
        "error_flag": 1,
        "outside_stay": 1,
    }
    assert ce.rows_read == ce.rows_kept + sum(ce.dropped.values())
    for t in ("LABEVENTS", "OUTPUTEVENTS", "INPUTEVENTS_MV", "INPUTEVENTS_CV"):
        tr = rep.tables[t]
        assert tr.rows_read == tr.rows_kept + sum(tr.dropped.values()), t
    assert rep.tables["OUTPUTEVENTS"].dropped["negative_value"] == 1
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
    out, _ = mini
    c = _read(out, "chart")
    assert set(c["itemid"]) <= V.chart_itemids_needed()
    assert 999999 not in set(c["itemid"])
    # 300002's row 23 h before intime is kept; 300001's row 2 days after outtime is not
    assert pd.Timestamp("2150-01-31 01:00") in set(c.loc[c.stay_id == 300002, "time"])
    assert pd.Timestamp("2150-01-05 12:00") not in set(c["time"])
    assert 300.0 not in set(c["valuenum"])  # ERROR = 1 row
    # text kept for GCS verbal only (not for numeric items)
    assert c.loc[c.itemid == 223900, "value"].tolist() == ["No Response-ETT"]
    assert c.loc[c.itemid != 223900, "value"].isna().all()


def test_lab_assignment_by_subject_and_time(mini) -> None:
    out, rep = mini
    lab = _read(out, "lab").sort_values(["stay_id", "time"])
    got = list(zip(lab.stay_id, lab.time.astype(str), lab.valuenum, strict=True))
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
    lab = _read(tmp_path / "o", "lab")
    assert rep.tables["LABEVENTS"].dropped["no_stay_for_subject_time"] == 4
    assert sorted(lab.valuenum) == [1.5, 120.0]


def test_vasopressors_metavision_units_and_weight(mini) -> None:
    out, rep = mini
    v = _read(out, "vasopressors")
    mv = v[v.stay_id == 300001].sort_values("starttime")
    assert mv["drug"].tolist() == ["norepinephrine", "norepinephrine", "epinephrine"]
    # 0.1 mcg/kg/min as is; 16 mcg/min / 80 kg = 0.2; 0.002 mg/kg/min = 2 mcg/kg/min
    assert mv["rate"].tolist() == pytest.approx([0.1, 0.2, 2.0])
    assert (mv["endtime"] - mv["starttime"]).tolist() == [2 * H, 2 * H, 1 * H]
    assert rep.tables["INPUTEVENTS_MV"].dropped["status_rewritten"] == 1


def test_vasopressors_carevue_intervals(mini) -> None:
    out, rep = mini
    v = _read(out, "vasopressors")
    cv = v[v.stay_id == 300002].sort_values(["drug", "starttime"])
    w = 176 * 0.45359237
    t0 = pd.Timestamp("2150-02-01")
    got = [
        (d, s - t0, e - t0, r)
        for d, s, e, r in zip(cv.drug, cv.starttime, cv.endtime, cv.rate, strict=True)
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
    u = _read(out, "urine").sort_values("stay_id")
    assert u["value"].tolist() == [200.0, 150.0]  # negative and non-urine rows dropped


def test_passthrough_tables(mini) -> None:
    out, _ = mini
    p = _read(out, "prescriptions")
    assert p["startdate"].tolist() == [
        pd.Timestamp("2150-01-01"),
        pd.Timestamp("2150-02-01"),
    ]  # date-only + full
    assert p["enddate"].isna().tolist() == [False, True]
    assert p["drug"].tolist()[1] == "Piperacillin-Tazobactam, 4.5 g"
    m = _read(out, "microbiology")
    assert m["charttime"].isna().tolist() == [False, True]
    assert _read(out, "diagnoses")["icd9_code"].tolist() == ["99591", "0389"]  # leading zero kept


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
    assert 85.0 not in set(_read(tmp_path / "o", "chart")["valuenum"])


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
    assert _read(tmp_path / "o", "urine")["value"].tolist() == [200.0]


def test_unknown_rate_unit(tmp_path) -> None:
    raw = _copy(tmp_path)
    _edit(raw, "INPUTEVENTS_MV", "16,mcg/min,80", "16,units/hour,80")
    with pytest.raises(
        MalformedRowError, match=r"INPUTEVENTS_MV.csv: data row 2 .*'RATEUOM'.*units/hour"
    ):
        extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    rep = extract(raw, tmp_path / "o", ReaderParams(on_bad_rows="skip-and-count"), progress=False)
    assert rep.tables["INPUTEVENTS_MV"].dropped["unknown_rate_unit"] == 1
    assert len(_read(tmp_path / "o", "vasopressors")) == 6


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
    assert pq.ParquetFile(tmp_path / "o" / "chart.parquet").metadata.num_rows == 29_999


def test_atomic_write(tmp_path, monkeypatch) -> None:
    out = tmp_path / "extracted"
    extract(FIXTURE, out, ReaderParams(), progress=False)
    before = sorted(p.name for p in out.iterdir())
    (out / "marker").write_text("old")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(
        mimic3, "_labevents", boom
    )  # fails after chart/vasopressor files are written
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
    drug = out["itemid"].map(V.VASOPRESSOR_BY_ITEMID)
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
    for name in (
        "chart",
        "lab",
        "urine",
        "vasopressors",
        "prescriptions",
        "microbiology",
        "diagnoses",
    ):
        assert len(_read(out, name)) > 0, name
    assert set(stays["dbsource"]) == {"carevue", "metavision"}
    assert stays["age"].max() <= 91.4 and stays["age"].min() > 15
    assert stays["has_chart"].sum() > 100
    v = _read(out, "vasopressors")
    assert set(v["drug"]) <= set(V.VASOPRESSORS) and (v["endtime"] >= v["starttime"]).all()
    assert (v["rate"] >= 0).all() and v.loc[
        v.drug == "norepinephrine", "rate"
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
    hr = raw[raw.itemid.isin([211, 220045])]
    stay = int(hr["icustay_id"].value_counts().index[0])
    item = int(hr.loc[hr.icustay_id == stay, "itemid"].iloc[0])
    r = raw[(raw.icustay_id == stay) & (raw.itemid == item) & (raw.error.fillna(0) != 1)].copy()
    r["charttime"] = pd.to_datetime(r["charttime"])
    lo, hi = stays.loc[stay, "intime"] - 24 * H, stays.loc[stay, "outtime"] + H
    r = r[(r.charttime >= lo) & (r.charttime <= hi)]
    c = _read(out, "chart")
    c = c[(c.stay_id == stay) & (c.itemid == item)]
    assert len(c) > 20
    key = ["time", "valuenum"]
    got = c[key].sort_values(key).reset_index(drop=True)
    want = r.rename(columns={"charttime": "time"})[key].sort_values(key).reset_index(drop=True)
    want["time"] = want["time"].astype("datetime64[us]")
    pd.testing.assert_frame_equal(got, want)


def test_no_stray_temp_folders(tmp_path) -> None:
    extract(FIXTURE, tmp_path / "a" / "extracted", ReaderParams(), progress=False)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["extracted"]
    shutil.rmtree(tmp_path / "a")
