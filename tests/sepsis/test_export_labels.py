"""`sepsis export-labels --format meds`: hourly Sepsis-3 labels as MEDS task labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from data_prep import io as dio
from data_prep.errors import DataError
from sepsis.cli import main
from sepsis.export_labels import EVENTS_SCHEMA, LABEL_SCHEMA, export_meds

T0 = pd.Timestamp("2150-01-02 00:00")
H = pd.Timedelta(hours=1)


def _prepared(folder: Path) -> Path:
    """Two stays of two patients; stay 11 turns septic at hour 2 (onset 2.5 h)."""
    stays = pd.DataFrame(
        {
            "stay_id": [11, 12],
            "patient_id": [1, 2],
            "hadm_id": pd.array([100, 200], dtype="Int64"),
            "source": "meds",
            "intime": [T0, T0 + 24 * H],
            "outtime": [T0 + 4 * H, T0 + 27 * H],
            "los_hours": [4.0, 3.0],
            "age": [60.0, 70.0],
            "gender": pd.array(["F", "M"], dtype="string"),
            "dbsource": pd.array([None, None], dtype="string"),
            "unit": pd.array(["MICU", "SICU"], dtype="string"),
            "died": pd.array([False, True], dtype="boolean"),
        }
    )
    dio.write_parquet(stays, folder / "stays.parquet", dio.STAYS)
    hours = [(11, h, h >= 2) for h in range(4)] + [(12, h, False) for h in range(3)]
    lab = pd.DataFrame(hours, columns=["stay_id", "hour", "sepsis"])
    for c in (
        "sofa",
        "sofa_resp",
        "sofa_coag",
        "sofa_liver",
        "sofa_cardio",
        "sofa_cns",
        "sofa_renal",
    ):
        lab[c] = np.int8(0)
    lab["si_window"] = lab["sepsis"]
    dio.write_parquet(
        lab[[f.name for f in dio.LABELS_HOURLY]],
        folder / "labels_hourly.parquet",
        dio.LABELS_HOURLY,
    )
    on = pd.DataFrame({f.name: pd.Series([None, None], dtype=object) for f in dio.ONSETS})
    on["stay_id"] = [11, 12]
    for c in ("si_time", "antibiotic_time", "culture_time", "onset_time"):
        on[c] = pd.Series([pd.NaT, pd.NaT], dtype="datetime64[us]")
    on.loc[0, "si_time"] = T0 + 1 * H
    on.loc[0, "onset_time"] = T0 + 2.5 * H
    for c in ("si_hour", "onset_hour", "sofa_baseline_hour"):
        on[c] = np.nan
    on["sofa_baseline"] = pd.array([0, None], dtype="Int8")
    on["sofa_at_onset"] = pd.array([3, None], dtype="Int8")
    for c in (
        "antibiotic",
        "antibiotic_time_source",
        "culture_time_source",
        "culture_specimen",
        "components_rose",
        "components_baseline_to_onset",
        "sofa_inputs_at_onset",
    ):
        on[c] = pd.array([None, None], dtype="string")
    dio.write_parquet(on, folder / "onsets.parquet", dio.ONSETS)
    return folder


def test_round_trip(tmp_path):
    prepared = _prepared(tmp_path / "prepared")
    counts = export_meds(prepared, tmp_path / "tasks")
    assert counts["labels"] == 7 and counts["positive"] == 2 and counts["subjects"] == 2
    path = tmp_path / "tasks" / "sepsis3_hourly" / "labels.parquet"
    assert pq.read_schema(path).equals(LABEL_SCHEMA, check_metadata=False)
    t = pq.read_table(path).to_pandas()
    # hour k of stay 11 is predicted at its end, intime + k + 1 h
    s11 = t[t.subject_id == 1]
    assert s11.prediction_time.tolist() == [T0 + (k + 1) * H for k in range(4)]
    assert s11.boolean_value.tolist() == [False, False, True, True]
    assert t[t.subject_id == 2].prediction_time.iloc[0] == T0 + 25 * H
    assert t[["integer_value", "float_value", "categorical_value"]].isna().all().all()
    ev = pq.read_table(tmp_path / "tasks" / "sepsis3_events" / "events.parquet")
    assert ev.schema.equals(EVENTS_SCHEMA, check_metadata=False)
    e = ev.to_pandas()
    assert e[["subject_id", "code", "stay_id"]].values.tolist() == [
        [1, "SEPSIS3//SUSPECTED_INFECTION", 11],
        [1, "SEPSIS3//ONSET", 11],
    ]
    assert e.time.tolist() == [T0 + H, T0 + 2.5 * H] and e.numeric_value.iloc[1] == 3.0
    assert counts["onsets"] == 1
    # a second export replaces the first (atomic folder swap, no leftovers)
    export_meds(prepared, tmp_path / "tasks")
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir()) == [
        "sepsis3_events",
        "sepsis3_hourly",
    ]


def test_not_prepared(tmp_path):
    with pytest.raises(DataError, match="run `sepsis prepare` first"):
        export_meds(tmp_path / "prepared", tmp_path / "tasks")


def test_cli(tmp_path, capsys):
    run = tmp_path / "runs" / "x"
    _prepared(run / "prepared")
    (tmp_path / "db").mkdir()
    cfg = tmp_path / "x.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "source": "synthetic",
                "data_dir": str(tmp_path / "db"),
                "output_dir": str(run),
            }
        )
    )
    rc = main(
        ["export-labels", "--format", "meds", "--config", str(cfg), "--out", str(tmp_path / "t")]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "7 hourly labels (2 positive, 2 subjects)" in out
    assert (tmp_path / "t" / "sepsis3_hourly" / "labels.parquet").is_file()
