"""Tests for data_prep.io: schema casting, atomic writes, checks on read."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep import io


def _obs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "stay_id": [1, 1, 2],
            "hour": [0.5, 1.0, 2.0],
            "variable": ["heart_rate", "sbp", "heart_rate"],
            "value": [80.0, 120.0, 90.0],
        }
    )


def test_round_trip_keeps_values_and_types(tmp_path):
    p = io.write_parquet(_obs(), tmp_path / "observations.parquet", io.OBSERVATIONS)
    assert pq.read_schema(p).field("stay_id").type == pa.int64()
    back = io.read_parquet(p, io.OBSERVATIONS)
    pd.testing.assert_frame_equal(
        back.astype({"variable": object}), _obs().astype({"variable": object})
    )
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_write_missing_column_names_file_and_column(tmp_path):
    with pytest.raises(io.SchemaError, match=r"observations\.parquet.*missing column.*value"):
        io.write_parquet(
            _obs().drop(columns="value"), tmp_path / "observations.parquet", io.OBSERVATIONS
        )
    assert not (tmp_path / "observations.parquet").exists()


def test_write_uncastable_column_is_named(tmp_path):
    df = _obs().assign(hour=["a", "b", "c"])
    with pytest.raises(io.SchemaError, match="column 'hour'"):
        io.write_parquet(df, tmp_path / "o.parquet", io.OBSERVATIONS)


def test_write_null_in_non_nullable_column(tmp_path):
    df = _obs().assign(value=[1.0, None, 2.0])
    with pytest.raises(io.SchemaError, match=r"column 'value' must not be null.*row 1"):
        io.write_parquet(df, tmp_path / "o.parquet", io.OBSERVATIONS)


def test_failed_write_keeps_previous_file(tmp_path):
    p = io.write_parquet(_obs(), tmp_path / "o.parquet", io.OBSERVATIONS)
    with pytest.raises(io.SchemaError):
        io.write_parquet(_obs().drop(columns="hour"), p, io.OBSERVATIONS)
    assert len(io.read_parquet(p, io.OBSERVATIONS)) == 3


def test_read_wrong_type_names_file_and_column(tmp_path):
    p = tmp_path / "o.parquet"
    pq.write_table(
        pa.table({"stay_id": ["x"], "hour": [1.0], "variable": ["a"], "value": [1.0]}), p
    )
    with pytest.raises(
        io.SchemaError, match=r"o\.parquet: column 'stay_id' has type string, expected int64"
    ):
        io.read_parquet(p, io.OBSERVATIONS)


def test_read_missing_column(tmp_path):
    p = tmp_path / "o.parquet"
    pq.write_table(pa.table({"stay_id": [1], "hour": [1.0], "variable": ["a"]}), p)
    with pytest.raises(io.SchemaError, match="missing column 'value'"):
        io.read_parquet(p, io.OBSERVATIONS)


def test_read_accepts_timestamp_unit_and_large_string(tmp_path):
    p = tmp_path / "events.parquet"
    t = pa.table(
        {
            "stay_id": pa.array([1], pa.int64()),
            "time": pa.array([0], pa.timestamp("ns")),
            "concept": pa.array(["creatinine"], pa.large_string()),
            "value": [1.0],
            "end_time": pa.array([None], pa.timestamp("us")),
            "text": pa.array([None], pa.large_string()),
        }
    )
    pq.write_table(t, p)
    df = io.read_parquet(p, io.EVENTS)
    assert str(df["time"].dtype) == "datetime64[us]" and df["concept"].tolist() == ["creatinine"]


def test_read_corrupt_file(tmp_path):
    p = tmp_path / "o.parquet"
    p.write_bytes(b"not parquet")
    with pytest.raises(io.SchemaError, match="not a readable parquet"):
        io.read_parquet(p, io.OBSERVATIONS)


def test_atomic_dir_success_and_failure(tmp_path):
    final = tmp_path / "prepared"
    with io.atomic_dir(final) as d:
        (d / "a.txt").write_text("1")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), io.atomic_dir(final) as d:
        (d / "a.txt").write_text("2")
        raise RuntimeError("boom")
    assert (final / "a.txt").read_text() == "1"  # untouched on failure
    with io.atomic_dir(final) as d:
        (d / "b.txt").write_text("3")
    assert sorted(x.name for x in final.iterdir()) == ["b.txt"]  # replaced on success
    assert [x.name for x in tmp_path.iterdir()] == ["prepared"]  # no temp dirs left


def test_every_contract_schema_has_stay_or_key_column():
    for name, schema in {**io.PREPARED_FILES, **io.EXTRACTED_FILES}.items():
        assert len(schema) >= 2, name
    assert io.EXTRACTED_STAYS.names[: len(io.STAYS)] == io.STAYS.names
