"""The antibiotic-only suspected-infection rule for data without cultures (issue 13)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep import io as dio
from data_prep.concepts.infection import InfectionParams, antibiotic_only_candidates
from data_prep.errors import DataError
from data_prep.sepsis3 import LabelParams, derive_labels

T0 = pd.Timestamp("2150-01-01 08:00")


def test_an_antibiotic_needs_another_within_the_window():
    h = pd.Timedelta(hours=1)
    abx = pd.DataFrame(
        {
            "hadm_id": [1, 1, 1, 2, 3, 3],
            "time": [T0, T0 + 10 * h, T0 + 48 * h, T0, T0, T0 + 24 * h],
            "drug": list("abcdef"),
            "source": "administration",
        }
    )
    got = antibiotic_only_candidates(abx, InfectionParams(rule="antibiotics_only"))
    # hadm 1: a has b 10 h later (b and c alone do not); hadm 2: a single dose; hadm 3: the
    # window [t, t + 24 h] is closed
    assert got[["hadm_id", "antibiotic"]].values.tolist() == [[1, "a"], [3, "e"]]
    assert got["si_time"].tolist() == [T0, T0]
    assert got["culture_time"].isna().all() and (got["si_order"] == "antibiotics_only").all()
    one = antibiotic_only_candidates(abx, InfectionParams(rule="antibiotics_only", abx_min_count=1))
    assert len(one) == 6


def _extracted(tmp_path):
    d = tmp_path / "extracted"
    stays = pd.DataFrame(
        {
            "stay_id": [1],
            "patient_id": [11],
            "hadm_id": [21],
            "source": "toy",
            "intime": T0,
            "outtime": T0 + pd.Timedelta(hours=30),
            "los_hours": [30.0],
            "age": [60.0],
            "gender": ["F"],
            "dbsource": [None],
            "unit": [None],
            "died": [False],
            "has_chart": [True],
            "weight_kg": [np.nan],
        }
    )
    dio.write_parquet(stays, d / "stays.parquet", dio.EXTRACTED_STAYS)
    h = pd.Timedelta(hours=1)
    ev = pd.DataFrame(
        {
            "stay_id": [1, 1],
            "time": [T0 + h, T0 + 10.5 * h],
            "concept": "platelets",
            "value": [200.0, 40.0],
            "end_time": pd.NaT,
            "text": None,
        }
    )
    dio.write_parquet(ev, d / "events" / "labevents.parquet", dio.EVENTS)
    adm = pd.DataFrame(
        {
            "patient_id": [11, 11],
            "hadm_id": [21, 21],
            "time": [T0 + 9 * h, T0 + 15 * h],
            "concept": "antibiotic",
            "text": ["vancomycin", "vancomycin"],
            "time_source": "administration",
        }
    )
    dio.write_parquet(adm, d / "admission_events.parquet", dio.ADMISSION_EVENTS)
    return d


def test_no_cultures_stops_the_paired_rule_and_says_how(tmp_path):
    d = _extracted(tmp_path)
    with pytest.raises(DataError, match="no culture events.*suspected_infection=antibiotics_only"):
        derive_labels(d, LabelParams(), progress=False)
    _, onsets, counts = derive_labels(
        d, LabelParams(suspected_infection="antibiotics_only"), progress=False
    )
    assert counts["suspected_infection_rule"] == "antibiotics_only"
    # SI at 9 h (another dose 6 h later); platelets 40 at 10.5 h: coagulation 3 -> onset 10
    assert onsets.set_index("stay_id").loc[1, "onset_hour"] == 10


def test_the_rule_is_validated():
    with pytest.raises(ValueError, match="labels.suspected_infection"):
        LabelParams(suspected_infection="abx").validate()
    with pytest.raises(ValueError, match="labels.abx_min_count"):
        LabelParams(abx_min_count=0).validate()


def test_reports_say_whose_labels_they_show(tmp_path):
    from sepsis.config import load_config
    from sepsis.pipeline import labels_note

    base = [f"data_dir={tmp_path / 'db'}", f"output_dir={tmp_path / 'run'}"]
    note, warn = labels_note(load_config(None, base))
    assert not warn and "Seymour 2016" in note
    note, warn = labels_note(
        load_config(None, [*base, "labels.suspected_infection=antibiotics_only"])
    )
    assert warn and "ANTIBIOTIC-ONLY" in note and "NOT the Seymour 2016 definition" in note
