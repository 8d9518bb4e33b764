"""Units of MIMIC-III values: concepts/units.csv and its use by the reader (issue 17 item 6)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.concepts import units as U
from data_prep.concepts import variables as V
from data_prep.errors import DataError
from data_prep.sources.mimic3 import MalformedRowError, ReaderParams, extract

FIXTURE = Path(__file__).parent / "fixtures" / "mimic3_mini"
SHARED = Path(
    os.environ.get(
        "SEPSIS_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)
DEMO = SHARED / "mimic3-demo"
SKIP = ReaderParams(on_bad_rows="skip-and-count")


def _raw(tmp_path: Path) -> Path:
    dst = tmp_path / "raw"
    shutil.copytree(FIXTURE, dst)
    return dst


def _edit(raw: Path, table: str, old: str, new: str) -> None:
    path = raw / f"{table}.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _lab(out: Path) -> pd.DataFrame:
    lab = pq.read_table(out / "events" / "labevents.parquet").to_pandas()
    return lab.sort_values(["stay_id", "time"])


def test_rules_cover_every_group_and_parse_fractions() -> None:
    rules = U.load_rules()
    groups = set(V.unit_groups("chartevents").values()) | set(V.unit_groups("labevents").values())
    assert {r.group for r in rules} == groups
    creat = {r.unit: r for r in rules if r.group == "creatinine"}
    assert creat["mg/dL"].identity
    assert creat["umol/L"].factor == pytest.approx(1 / 88.42)
    temp = {r.unit: r for r in rules if r.group == "temperature"}
    assert temp["Deg. F"].factor * 98.6 + temp["Deg. F"].offset == pytest.approx(37.0)


@pytest.mark.parametrize(
    "row,match",
    [
        ("creatinine,umol/L,1/0,0,", r"line 3, column 'factor': '1/0' is not a number"),
        ("kreatinine,mg/dL,1,0,", r"line 3: unknown group 'kreatinine'"),
        ("creatinine,MG/DL,1,0,", r"line 3: creatinine 'MG/DL' repeats line 2"),
        ("creatinine,umol/L,1/88.42,0", r"line 3: 4 fields, expected 5"),
    ],
)
def test_bad_rules_file_names_line(tmp_path, row, match) -> None:
    good = [ln for ln in U.UNITS_CSV.read_text().splitlines() if not ln.startswith("#")]
    path = tmp_path / "units.csv"
    # header, creatinine mg/dL, the bad row, then the rest
    rest = [ln for ln in good[1:] if not ln.startswith("creatinine,")]
    path.write_text("\n".join([good[0], "creatinine,mg/dL,1,0,", row, *rest]) + "\n")
    with pytest.raises(DataError, match=match):
        U.load_rules(path)


def test_rules_file_without_expected_unit(tmp_path) -> None:
    lines = U.UNITS_CSV.read_text().splitlines()
    path = tmp_path / "units.csv"
    path.write_text("\n".join(ln for ln in lines if not ln.startswith("lactate,mmol/L")) + "\n")
    with pytest.raises(DataError, match=r"no expected unit .*'lactate'"):
        U.load_rules(path)


def test_checker_converts_accepts_and_flags() -> None:
    c = U.UnitChecker("labevents")
    item = np.array([50912, 50912, 50912, 50912, 50813, 51237, 50912], np.int32)
    val = pa.array([1.5, 132.63, 2.0, 3.0, 18.02, 1.1, None], pa.float64())
    uom = pa.array(["mg/dL", "umol/L", "MG / DL", "mmol/mol", "mg/dL", None, "bogus"])
    r = c.apply(item, val, uom)
    np.testing.assert_allclose(
        r.valuenum.to_numpy(zero_copy_only=False)[:6], [1.5, 1.5, 2.0, 3.0, 2.0, 1.1]
    )
    assert r.valuenum[6].as_py() is None  # no value: not checked, still null
    assert r.unknown.tolist() == [False, False, False, True, False, False, False]
    assert r.converted == {("creatinine", "umol/L"): 1, ("lactate", "mg/dL"): 1}
    assert r.no_unit == {"inr": 1}
    assert r.unknown_counts == {("creatinine", "mmol/mol"): 1}
    assert "'mg/dL' or an empty unit" not in c.describe("creatinine")
    assert c.describe("creatinine").startswith("'mg/dL' (converted from 'umol/L'")


def test_umol_creatinine_is_converted_and_counted(tmp_path) -> None:
    raw = _raw(tmp_path)
    # subject 1's creatinine of 1.5 mg/dL, reported in umol/L (1.5 * 88.42)
    _edit(raw, "LABEVENTS", "1.5,1.5,mg/dL", "132.63,132.63,umol/L")
    rep = extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    lab = _lab(tmp_path / "o")
    assert lab["value"].tolist() == pytest.approx([1.0, 1.5, 120.0, 2.0])
    assert rep.tables["LABEVENTS"].units == {"converted:creatinine:umol/L": 1}


def test_unknown_lab_unit_stops_or_is_counted(tmp_path) -> None:
    raw = _raw(tmp_path)
    _edit(raw, "LABEVENTS", "1.5,1.5,mg/dL", "1.5,1.5,mmol/mol")
    with pytest.raises(MalformedRowError) as err:
        extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    msg = str(err.value)
    assert "LABEVENTS.csv: data row 2 (line 3), column 'VALUEUOM'" in msg
    assert "unit 'mmol/mol' of ITEMID 50912 (creatinine) is not known; expected 'mg/dL'" in msg
    rep = extract(raw, tmp_path / "o", SKIP, progress=False)
    tr = rep.tables["LABEVENTS"]
    assert tr.dropped["unknown_unit:creatinine:mmol/mol"] == 1
    assert tr.rows_read == tr.rows_kept + sum(tr.dropped.values())
    assert 1.5 not in _lab(tmp_path / "o")["value"].tolist()


def test_chart_units(tmp_path) -> None:
    raw = _raw(tmp_path)
    # MetaVision heart rate with an unknown unit; CareVue heart rate (row 7) with none
    _edit(raw, "CHARTEVENTS", ",85,85,bpm,", ",85,85,mmHg,")
    _edit(raw, "CHARTEVENTS", ",90,90,BPM,", ",90,90,,")
    with pytest.raises(MalformedRowError, match=r"CHARTEVENTS\.csv: data row 2 .*'mmHg' of ITEMID"):
        extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    rep = extract(raw, tmp_path / "o", SKIP, progress=False)
    tr = rep.tables["CHARTEVENTS"]
    assert tr.dropped["unknown_unit:heart_rate:mmHg"] == 1
    assert tr.units["no_unit:heart_rate"] == 1
    c = pq.read_table(tmp_path / "o" / "events" / "chartevents.parquet").to_pandas()
    assert 85.0 not in c["value"].tolist() and 90.0 in c["value"].tolist()


def test_no_unit_column_is_a_warning(tmp_path) -> None:
    raw = _raw(tmp_path)
    path = raw / "LABEVENTS.csv"
    pd.read_csv(path, dtype=str).drop(columns="VALUEUOM").to_csv(path, index=False)
    rep = extract(raw, tmp_path / "o", ReaderParams(), progress=False)
    assert any("no VALUEUOM column" in w for w in rep.warnings)
    assert rep.tables["LABEVENTS"].units == {"no_unit:creatinine": 5, "no_unit:platelets": 1}


@pytest.mark.realdata
@pytest.mark.skipif(not DEMO.is_dir(), reason=f"MIMIC-III demo not found at {DEMO}")
def test_every_demo_unit_is_known() -> None:
    """Every VALUEUOM the demo has for the items we read is expected or converted."""
    for table, needed in (
        ("LABEVENTS", V.lab_itemids_needed()),
        ("CHARTEVENTS", V.chart_itemids_needed()),
    ):
        df = pd.read_csv(
            DEMO / f"{table}.csv.gz",
            usecols=["itemid", "valuenum", "valueuom"],
            dtype={"valueuom": str},
        )
        df = df[df["itemid"].isin(needed)]
        r = U.UnitChecker(table.lower()).apply(
            df["itemid"].to_numpy(np.int32),
            pa.array(df["valuenum"], pa.float64(), from_pandas=True),
            pa.array(df["valueuom"], pa.string(), from_pandas=True),
        )
        assert r.unknown_counts == {}, table
        assert not r.converted, table  # the demo is in the expected units throughout


def _apply_per_row(c: U.UnitChecker, itemid, valuenum, valueuom):
    """The rules applied row by row (the reference for the vectorised per-cell `apply`)."""
    vals = valuenum.to_pylist()
    units = [None] * len(vals) if valueuom is None else valueuom.to_pylist()
    out, unknown = [], []
    no_unit, converted, unknown_counts = {}, {}, {}
    for item, v, unit in zip(itemid.tolist(), vals, units, strict=True):
        group = c.groups[c.item_group[item]]
        key = U.normalise(unit) if unit is not None else ""
        if v is None:
            out.append(None)
            unknown.append(False)
            continue
        if not key:
            no_unit[group] = no_unit.get(group, 0) + 1
            out.append(v)
            unknown.append(False)
            continue
        rule = next(
            (r for r in c.rules[group] if r.unit != U.ANY_UNIT and U.normalise(r.unit) == key), None
        )
        if rule is None and not c.any_unit[c.groups.index(group)]:
            unknown_counts[(group, unit)] = unknown_counts.get((group, unit), 0) + 1
            out.append(v)
            unknown.append(True)
            continue
        if rule is not None and not rule.identity:
            converted[(group, unit)] = converted.get((group, unit), 0) + 1
            v = v * rule.factor + rule.offset
        out.append(v)
        unknown.append(False)
    return out, np.array(unknown, bool), no_unit, converted, unknown_counts


@pytest.mark.parametrize("table", ["chartevents", "labevents"])
def test_vectorised_apply_equals_the_rules_row_by_row(table) -> None:
    c = U.UnitChecker(table)
    items = np.array(sorted(V.unit_groups(table)))
    spellings = [
        None,
        "",
        "mg/dL",
        " MG/DL ",
        "mmHg",
        "%",
        "Deg. F",
        "?C",
        "kg",
        "lbs",
        "K/uL",
        "umol/L",
        "bpm",
        "not-a-unit",
    ]
    rng = np.random.default_rng(7)
    seen = {"converted": 0, "unknown": 0, "no_unit": 0}
    for trial in range(25):
        n = int(rng.integers(1, 400))
        item = rng.choice(items, n)
        vn = pa.array(rng.normal(50, 20, n), mask=rng.random(n) < 0.1)
        uom = (
            None
            if trial % 6 == 0
            else pa.array([spellings[i] for i in rng.integers(0, len(spellings), n)], pa.string())
        )
        res = c.apply(item, vn, uom)
        vals, unknown, no_unit, converted, unknown_counts = _apply_per_row(c, item, vn, uom)
        np.testing.assert_allclose(
            np.array(res.valuenum.to_pylist(), float), np.array(vals, float), rtol=1e-12
        )
        assert (res.unknown == unknown).all()
        assert (res.no_unit, res.converted, res.unknown_counts) == (
            no_unit,
            converted,
            unknown_counts,
        )
        seen["converted"] += len(converted)
        seen["unknown"] += len(unknown_counts)
        seen["no_unit"] += len(no_unit)
    assert all(seen.values()), seen  # every kind of cell was exercised
