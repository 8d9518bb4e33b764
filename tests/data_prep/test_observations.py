"""Tests for data_prep.observations: item mapping, units, ranges, duplicates, hours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep import io
from data_prep.observations import (
    observations_from_extracted,
    observations_from_frames,
    variable_order,
)

T0 = pd.Timestamp("2150-01-01 10:00")


def _stays() -> pd.DataFrame:
    return pd.DataFrame({"stay_id": [1, 2], "intime": [T0, T0 + pd.Timedelta(hours=5)]})


def _chart() -> pd.DataFrame:
    rows = [
        (1, T0 + pd.Timedelta(minutes=30), 220045, 80.0),  # heart rate
        (1, T0 + pd.Timedelta(minutes=30), 211, 90.0),  # duplicate (CareVue id): averaged -> 85
        (1, T0 + pd.Timedelta(hours=2), 220045, 400.0),  # out of range [0, 300]
        (1, T0 + pd.Timedelta(hours=1), 223761, 98.6),  # degF -> 37 degC
        (1, T0 + pd.Timedelta(hours=1), 223835, 50.0),  # FiO2 50 % -> 0.5
        (1, T0 + pd.Timedelta(hours=3), 223835, 0.4),  # FiO2 already a fraction
        (2, T0 + pd.Timedelta(hours=6), 220045, np.nan),  # missing value
        (2, T0 + pd.Timedelta(hours=6), 999999, 1.0),  # not a variable item: ignored
        (3, T0, 220045, 70.0),  # unknown stay
    ]
    df = pd.DataFrame(rows, columns=["stay_id", "time", "itemid", "valuenum"])
    df["value"] = None
    return df


def _lab() -> pd.DataFrame:
    rows = [
        (2, T0 + pd.Timedelta(hours=4), 50912, 1.5),  # creatinine, 1 h before intime -> hour -1
        (2, T0 + pd.Timedelta(hours=7), 50912, 2.5),
    ]
    return pd.DataFrame(rows, columns=["stay_id", "time", "itemid", "valuenum"])


def _check(obs: pd.DataFrame, dropped: dict) -> None:
    got = {(r.stay_id, r.hour, r.variable): r.value for r in obs.itertuples()}
    assert got[(1, 0.5, "heart_rate")] == pytest.approx(85.0)
    assert got[(1, 1.0, "temperature")] == pytest.approx(37.0)
    assert got[(1, 1.0, "fio2")] == pytest.approx(0.5)
    assert got[(1, 3.0, "fio2")] == pytest.approx(0.4)
    assert got[(2, -1.0, "creatinine")] == pytest.approx(1.5)
    assert got[(2, 2.0, "creatinine")] == pytest.approx(2.5)
    assert len(got) == 6
    assert dropped["out_of_range"] == {"heart_rate": 1}
    assert dropped["missing_value"] == {"heart_rate": 1}
    assert dropped["unknown_stay"] == 1
    assert dropped["duplicates_averaged"] == {"heart_rate": 1}
    assert obs["hour"].dtype == np.float64


def test_observations_from_frames():
    _check(*observations_from_frames(_chart(), _lab(), _stays()))


def test_observations_from_extracted_files_and_schema(tmp_path):
    io.write_parquet(_chart(), tmp_path / "chart.parquet", io.CHART)
    io.write_parquet(_lab(), tmp_path / "lab.parquet", io.LAB)
    obs, dropped = observations_from_extracted(tmp_path, _stays(), progress=False)
    _check(obs, dropped)
    io.write_parquet(obs, tmp_path / "observations.parquet", io.OBSERVATIONS)  # fits the contract


def test_observations_missing_column_is_named(tmp_path):
    io.write_parquet(_chart(), tmp_path / "chart.parquet", io.CHART)
    _lab().drop(columns="valuenum").astype({"itemid": "int32"}).to_parquet(tmp_path / "lab.parquet")
    with pytest.raises(io.SchemaError, match=r"lab\.parquet: missing column 'valuenum'"):
        observations_from_extracted(tmp_path, _stays(), progress=False)


def test_variable_order_puts_dictionary_first():
    assert variable_order(["zzz", "sbp", "heart_rate"]) == ("heart_rate", "sbp", "zzz")


def test_anion_gap_is_matched_and_item_ids_are_unambiguous():
    """The reference code never matched anion gap (wrong ITEMID); LABEVENTS 50868 is it."""
    from data_prep.concepts.variables import VARIABLES

    lab = pd.DataFrame(
        {
            "stay_id": [1],
            "time": [T0 + pd.Timedelta(hours=2)],
            "itemid": [50868],
            "valuenum": [14.0],
        }
    )
    obs, _ = observations_from_frames(_chart().iloc[:0], lab, _stays())
    assert obs[["variable", "value"]].values.tolist() == [["anion_gap", 14.0]]
    for table in ("chartevents", "labevents"):
        ids = [i for v in VARIABLES if v.table == table for i in v.itemids]
        assert len(ids) == len(set(ids)), f"an ITEMID of {table} maps to two variables"
