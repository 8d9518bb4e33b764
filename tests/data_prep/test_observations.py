"""Tests for data_prep.observations: concept selection, FiO2 units, ranges, duplicates, hours,
streaming events/ parts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep import io
from data_prep.concepts.dictionary import concepts
from data_prep.observations import (
    VARIABLE_NAMES,
    observations_from_events,
    observations_from_extracted,
    variable_order,
)

T0 = pd.Timestamp("2150-01-01 10:00")


def _stays() -> pd.DataFrame:
    return pd.DataFrame({"stay_id": [1, 2], "intime": [T0, T0 + pd.Timedelta(hours=5)]})


def _events(rows) -> pd.DataFrame:
    """rows: (stay_id, time, concept, value) -> io.EVENTS frame."""
    return pd.DataFrame(
        {
            "stay_id": np.array([r[0] for r in rows], np.int64),
            "time": pd.Series([r[1] for r in rows], dtype="datetime64[us]"),
            "concept": pd.array([r[2] for r in rows], dtype="string"),
            "value": np.array([r[3] for r in rows], float),
            "end_time": pd.Series([pd.NaT] * len(rows), dtype="datetime64[us]"),
            "text": pd.array([None] * len(rows), dtype="string"),
        }
    )


def _chart() -> pd.DataFrame:
    return _events(
        [
            (1, T0 + pd.Timedelta(minutes=30), "heart_rate", 80.0),
            (1, T0 + pd.Timedelta(minutes=30), "heart_rate", 90.0),  # duplicate: averaged -> 85
            (1, T0 + pd.Timedelta(hours=2), "heart_rate", 400.0),  # out of range [0, 300]
            (1, T0 + pd.Timedelta(hours=1), "temperature", 37.0),  # degC (the reader converts)
            (1, T0 + pd.Timedelta(hours=1), "fio2", 50.0),  # FiO2 50 % -> 0.5
            (1, T0 + pd.Timedelta(hours=3), "fio2", 0.4),  # FiO2 already a fraction
            (2, T0 + pd.Timedelta(hours=6), "heart_rate", np.nan),  # missing value
            (2, T0 + pd.Timedelta(hours=6), "gcs_total", 15.0),  # not a variable: ignored
            (2, T0 + pd.Timedelta(hours=6), "urine_output", 100.0),  # not a variable: ignored
            (3, T0, "heart_rate", 70.0),  # unknown stay
        ]
    )


def _lab() -> pd.DataFrame:
    return _events(
        [
            (2, T0 + pd.Timedelta(hours=4), "creatinine", 1.5),  # 1 h before intime -> hour -1
            (2, T0 + pd.Timedelta(hours=7), "creatinine", 2.5),
        ]
    )


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


def test_observations_from_events():
    _check(*observations_from_events(pd.concat([_chart(), _lab()], ignore_index=True), _stays()))


def _write_parts(d, parts: dict[str, pd.DataFrame]) -> None:
    (d / "events").mkdir(exist_ok=True)
    for name, df in parts.items():
        io.write_parquet(df, d / "events" / f"{name}.parquet", io.EVENTS)


def test_observations_from_extracted_parts_and_schema(tmp_path):
    _write_parts(tmp_path, {"chartevents": _chart(), "labevents": _lab()})
    obs, dropped = observations_from_extracted(tmp_path, _stays(), progress=False)
    _check(obs, dropped)
    io.write_parquet(obs, tmp_path / "observations.parquet", io.OBSERVATIONS)  # fits the contract


def test_observations_are_streamed_in_batches_with_the_same_result(tmp_path, monkeypatch):
    import data_prep.observations as O

    _write_parts(tmp_path, {"chartevents": _chart(), "labevents": _lab()})
    one = observations_from_extracted(tmp_path, _stays(), progress=False)
    monkeypatch.setattr(O, "_BATCH_ROWS", 2)
    many = observations_from_extracted(tmp_path, _stays(), progress=False)
    pd.testing.assert_frame_equal(one[0], many[0])
    assert one[1] == many[1]


def test_observations_missing_column_is_named(tmp_path):
    _write_parts(tmp_path, {"chartevents": _chart()})
    _lab().drop(columns="value").to_parquet(tmp_path / "events" / "labevents.parquet")
    with pytest.raises(io.SchemaError, match=r"labevents\.parquet: missing column 'value'"):
        observations_from_extracted(tmp_path, _stays(), progress=False)


def test_observations_without_events_folder_name_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"events: missing extracted events"):
        observations_from_extracted(tmp_path, _stays(), progress=False)


def test_variable_order_puts_dictionary_first():
    assert variable_order(["zzz", "sbp", "heart_rate"]) == ("heart_rate", "sbp", "zzz")


def test_every_dictionary_variable_is_an_observation_variable():
    """The variables are the dictionary's (kind variable), in its order; anion gap (the
    reference code never matched it: wrong ITEMID) is one of them."""
    assert VARIABLE_NAMES == tuple(c.name for c in concepts().of_kind("variable"))
    ev = _events([(1, T0 + pd.Timedelta(hours=2), "anion_gap", 14.0)])
    obs, _ = observations_from_events(ev, _stays())
    assert obs[["variable", "value"]].values.tolist() == [["anion_gap", 14.0]]


def test_variable_item_ids_are_unambiguous():
    """Each MIMIC-III item feeds one variable (the reader maps items onto concepts)."""
    from data_prep.concepts.variables import VARIABLES

    for table in ("chartevents", "labevents"):
        ids = [i for v in VARIABLES if v.table == table for i in v.itemids]
        assert len(ids) == len(set(ids)), f"an ITEMID of {table} maps to two variables"
    assert 50868 in next(v for v in VARIABLES if v.name == "anion_gap").itemids
