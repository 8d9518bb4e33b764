"""Tests for data_prep.dataset: windows, grid imputation rules, irregular view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.dataset import CohortDataset


def _ds(obs_rows, onset=10.0, window=48):
    cohort = pd.DataFrame(
        {
            "stay_id": [1],
            "patient_id": [1],
            "label": np.int8([1]),
            "onset_hour": [onset],
            "matched_case": [1],
        }
    )
    splits = pd.DataFrame({"stay_id": [1], "seed": np.int32([0]), "split": ["train"]})
    norm = pd.DataFrame(
        {
            "seed": np.int32([0, 0]),
            "variable": ["heart_rate", "sbp"],
            "mean": [0.0, 100.0],
            "std": [1.0, 10.0],
            "n": [1, 1],
        }
    )
    obs = pd.DataFrame(obs_rows, columns=["stay_id", "hour", "variable", "value"])
    return CohortDataset(cohort, splits, norm, obs, window_hours=window)


def test_grid_hand_made_example():
    # onset 10, h = 2 -> window [0, 8], G = 9 grid points, times -8..0
    ds = _ds(
        [
            (1, 0.5, "heart_rate", 4.0),  # rel -7.5 -> cell (-8, -7] -> g=-7 -> index 1
            (1, 0.0, "heart_rate", 2.0),  # rel -8 -> g=-8 -> index 0
            (1, 3.0, "heart_rate", 6.0),  # rel -5 -> (-6, -5] -> index 3
            (1, 2.5, "heart_rate", 8.0),  # rel -5.5 -> index 3 too: mean 7
            (1, 8.0, "heart_rate", 1.0),  # rel 0 -> index 8
            (1, 9.0, "heart_rate", 99.0),  # after onset - h: excluded
            (1, 5.0, "sbp", 120.0),
        ]
    )  # z = 2 at rel -3 -> index 5; leading 0 before
    view, y = ds.grid(2, "train", 0)
    assert view.lengths.tolist() == [9] and y.tolist() == [1]
    hr = view.X[0, :9, 0]
    np.testing.assert_allclose(hr, [2, 4, 4, 7, 7, 7, 7, 7, 1])
    np.testing.assert_allclose(view.X[0, :9, 1], [0, 0, 0, 0, 0, 2, 2, 2, 2])
    view.validate()


def test_grid_never_observed_and_early_observations_go_to_first_cell():
    # onset 60, window 48 -> start 12; h=0 -> G = 49; an observation at 12.0 is in cell 0
    ds = _ds([(1, 12.0, "heart_rate", 3.0), (1, 11.0, "heart_rate", 50.0)], onset=60.0)
    view, _ = ds.grid(0, None, 0)
    assert view.lengths.tolist() == [49]
    assert np.all(view.X[0, :, 0] == 3.0)  # forward filled from the first cell
    assert np.all(view.X[0, :, 1] == 0.0)  # sbp never observed -> 0
    # fractional window: onset 10.5, h = 0 -> floor(10.5) + 1 = 11 points; 0.2 -> first cell
    ds2 = _ds([(1, 0.2, "heart_rate", 5.0)], onset=10.5)
    v2, _ = ds2.grid(0, "all", 0)
    assert v2.lengths.tolist() == [11] and v2.X[0, 0, 0] == 5.0


def test_irregular_view_times_and_zscores():
    ds = _ds([(1, 1.0, "sbp", 110.0), (1, 8.0, "heart_rate", 2.0), (1, 8.5, "heart_rate", 5.0)])
    view, _ = ds.irregular(2, "train", 0)
    view.validate()
    m = view.mask[0]
    assert m.sum() == 2
    np.testing.assert_allclose(view.times[0, m], [-7.0, 0.0])
    np.testing.assert_allclose(view.values[0, m], [1.0, 2.0])
    assert view.var_idx[0, m].tolist() == [1, 0]
    assert view.grid_len.tolist() == [9]


def test_normalisation_override_and_bad_split():
    ds = _ds([(1, 5.0, "sbp", 120.0)])
    ov = pd.DataFrame(
        {"seed": np.int32([7]), "variable": ["sbp"], "mean": [120.0], "std": [5.0], "n": [3]}
    )
    ds2 = CohortDataset(
        ds.cohort,
        ds.splits,
        ds.normalisation,
        pd.DataFrame({"stay_id": [1], "hour": [5.0], "variable": ["sbp"], "value": [130.0]}),
        normalisation_override=ov,
    )
    v, _ = ds2.grid(0, "train", 0)
    assert ds2.variables == ("sbp",) and v.X[0, -1, 0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="split"):
        ds.grid(0, "bogus", 0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), h=st.integers(0, 7))
def test_windows_never_contain_observations_after_prediction_time(seed, h):
    rng = np.random.default_rng(seed)
    n = 30
    onset = rng.integers(7, 100, n).astype(float)
    cohort = pd.DataFrame(
        {
            "stay_id": np.arange(n),
            "patient_id": np.arange(n),
            "label": np.int8(rng.integers(0, 2, n)),
            "onset_hour": onset,
            "matched_case": np.arange(n),
        }
    )
    splits = pd.DataFrame(
        {"stay_id": np.arange(n), "seed": np.int32(0), "split": rng.choice(["train", "test"], n)}
    )
    norm = pd.DataFrame(
        {"seed": np.int32([0]), "variable": ["heart_rate"], "mean": [0.0], "std": [1.0], "n": [1]}
    )
    k = 400
    s = rng.integers(0, n, k)
    # the value encodes the hour, so leaks are visible in the grid too
    hours = rng.uniform(-5, 120, k)
    obs = pd.DataFrame({"stay_id": s, "hour": hours, "variable": "heart_rate", "value": hours})
    ds = CohortDataset(cohort, splits, norm, obs)
    iv, _ = ds.irregular(h, "all", 0)
    gv, _ = ds.grid(h, "all", 0)
    iv.validate()
    gv.validate()
    end = onset - h
    start = np.maximum(0, onset - 48)
    for i in range(n):
        vals = iv.values[i, iv.mask[i]]
        assert np.all(vals <= end[i] + 1e-4) and np.all(vals >= start[i] - 1e-4)
        np.testing.assert_allclose(iv.times[i, iv.mask[i]], vals - end[i], atol=1e-3)
        expect = ((hours >= start[i]) & (hours <= end[i]) & (s == i)).sum()
        assert iv.mask[i].sum() == expect
        g = gv.X[i, : gv.lengths[i], 0]
        assert np.all(g <= end[i] + 1e-4)
        assert gv.lengths[i] == min(48, np.floor(end[i] - start[i])) + 1


def test_load_from_prepared_dir(tmp_path):
    from data_prep import io
    from data_prep.cohort import CohortParams, prepare_from_tables

    rng = np.random.default_rng(0)
    n = 200
    sid = np.arange(n, dtype=np.int64)
    los = rng.uniform(10, 100, n)
    t0 = pd.Timestamp("2150-01-01")
    stays = pd.DataFrame(
        {
            "stay_id": sid,
            "patient_id": sid // 2,
            "hadm_id": sid,
            "source": "mimic3",
            "intime": t0,
            "outtime": t0 + pd.to_timedelta(los, unit="h"),
            "los_hours": los,
            "age": 50.0,
            "gender": "F",
            "dbsource": "metavision",
            "unit": None,
            "died": None,
        }
    )
    onsets = pd.DataFrame({c: None for c in io.ONSETS.names}, index=range(n))
    onsets["stay_id"] = sid
    onsets["onset_hour"] = np.where(sid % 8 == 0, np.floor(los * 0.9), np.nan)
    labels = pd.DataFrame(
        {
            "stay_id": sid,
            "hour": 0,
            "sofa": 0,
            "sofa_resp": 0,
            "sofa_coag": 0,
            "sofa_liver": 0,
            "sofa_cardio": 0,
            "sofa_cns": 0,
            "sofa_renal": 0,
            "si_window": False,
            "sepsis": False,
        }
    )
    k = 5000
    obs = pd.DataFrame(
        {
            "stay_id": rng.integers(0, n, k),
            "hour": rng.uniform(0, 100, k),
            "variable": rng.choice(["heart_rate", "sbp"], k),
            "value": rng.normal(80, 5, k),
        }
    )
    prepare_from_tables(
        stays,
        onsets,
        labels,
        None,
        obs,
        CohortParams(min_variable_observations=10, split_seeds=(0,)),
        tmp_path / "prep",
    )
    ds = CohortDataset.load(tmp_path / "prep")
    assert ds.variables == ("heart_rate", "sbp") and ds.window_hours == 48
    views = [ds.grid(3, sp, 0)[0] for sp in ("train", "val", "test")]
    assert sum(len(v) for v in views) == len(ds.cohort)
    assert not set(views[0].stay_id) & set(views[2].stay_id)
    xs = np.concatenate([v.X[i, : v.lengths[i]] for v in views for i in range(len(v))])
    assert abs(np.mean(xs)) < 1.0  # z-scored
