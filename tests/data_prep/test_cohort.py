"""Tests for data_prep.cohort: exclusions, matching, splits, normalisation, prepare artifacts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data_prep import io
from data_prep.cohort import CohortParams, build_cohort, match_controls, prepare_from_tables

T0 = pd.Timestamp("2150-01-01")
VARS = ("heart_rate", "sbp", "lactate")


def make_tables(n: int = 400, seed: int = 0, case_frac: float = 0.15):
    """Random stays/onsets/diagnoses/observations in the prepared schemas."""
    rng = np.random.default_rng(seed)
    stay_id = np.arange(1, n + 1, dtype=np.int64) * 10
    patient_id = rng.integers(0, int(n * 0.8), n).astype(np.int64)
    los = rng.uniform(2, 150, n).round(2)
    intime = T0 + pd.to_timedelta(rng.integers(0, 10_000, n), unit="h")
    stays = pd.DataFrame(
        {
            "stay_id": stay_id,
            "patient_id": patient_id,
            "hadm_id": stay_id + 1,
            "source": "mimic3",
            "intime": intime,
            "outtime": intime + pd.to_timedelta(los, unit="h"),
            "los_hours": los,
            "age": rng.uniform(10, 90, n).round(1),
            "gender": rng.choice(["M", "F"], n),
            "dbsource": rng.choice(["metavision", "carevue"], n, p=[0.8, 0.2]),
            "unit": "MICU",
            "died": False,
        }
    )
    onset = np.where(rng.random(n) < case_frac, np.floor(rng.uniform(0, 1, n) * los), np.nan)
    onsets = pd.DataFrame({"stay_id": stay_id, "onset_hour": onset})
    diag = pd.DataFrame({"hadm_id": stay_id[::17] + 1, "icd9_code": "99592"})
    k = rng.integers(0, 60, n)
    s = np.repeat(np.arange(n), k)
    obs = pd.DataFrame(
        {
            "stay_id": stay_id[s],
            "hour": rng.uniform(-3, 1, len(s)) * los[s],
            "variable": rng.choice(VARS, len(s)),
            "value": rng.normal(100, 10, len(s)),
        }
    )
    return stays, onsets, diag, obs


PARAMS = CohortParams(min_variable_observations=5, split_seeds=(0, 1))


def _steps(att):
    return {s["step"]: s for s in att["steps"]}


def test_params_validate_messages():
    with pytest.raises(ValueError, match="cohort.dbsource"):
        CohortParams(dbsource="x").validate()
    with pytest.raises(ValueError, match="cohort.control_ratio"):
        CohortParams(control_ratio=0).validate()
    with pytest.raises(ValueError, match="cohort.split_fractions"):
        CohortParams(split_fractions=(0.5, 0.1, 0.1)).validate()
    with pytest.raises(ValueError, match="cohort.min_onset_hour"):
        CohortParams(min_onset_hour=3).validate()
    CohortParams().validate()


def test_exclusions_and_attrition_add_up():
    stays, onsets, diag, obs = make_tables()
    cohort, splits, norm, att = build_cohort(stays, onsets, diag, obs, PARAMS)
    steps = att["steps"]
    assert steps[0]["remaining"] == len(stays)
    for prev, cur in zip(steps, steps[1:], strict=False):
        assert cur["removed"] == cur["removed_cases"] + cur["removed_controls"]
        assert prev["remaining"] - cur["removed"] == cur["remaining"]
        assert prev["cases"] - cur["removed_cases"] == cur["cases"]
        assert cur["cases"] + cur["controls"] == cur["remaining"]
    assert steps[-1]["cases"] == (cohort["label"] == 1).sum()
    assert steps[-1]["controls"] == (cohort["label"] == 0).sum()
    c = cohort.merge(stays, on="stay_id", suffixes=("", "_s"))
    assert (c["age"] >= 15).all() and (c["dbsource"] == "metavision").all()
    cases = cohort[cohort["label"] == 1].merge(onsets, on="stay_id", suffixes=("", "_o"))
    assert (cases["onset_hour"] >= 7).all() and (cases["onset_hour"] == cases["onset_hour_o"]).all()
    ctrl = cohort[cohort["label"] == 0].merge(onsets, on="stay_id")
    assert ctrl["onset_hour_y"].isna().all()  # controls: no onset anywhere
    assert not set(ctrl["stay_id"] + 1) & set(diag["hadm_id"])  # no sepsis ICD-9 controls
    assert _steps(att)["sepsis ICD-9"]["removed_cases"] == 0
    assert att["prevalence"] == pytest.approx((cohort["label"] == 1).mean())


def test_matching_no_reuse_in_icu_and_ratio():
    stays, onsets, diag, obs = make_tables(n=600, seed=3)
    cohort, *_, att = build_cohort(stays, onsets, diag, obs, PARAMS)
    ctrl = cohort[cohort["label"] == 0]
    assert ctrl["stay_id"].is_unique
    los = stays.set_index("stay_id")["los_hours"]
    assert (
        los.loc[ctrl["stay_id"]].to_numpy() >= ctrl["onset_hour"].to_numpy()
    ).all()  # in ICU at pseudo-onset
    case_on = cohort[cohort["label"] == 1].set_index("stay_id")["onset_hour"]
    assert (case_on.loc[ctrl["matched_case"]].to_numpy() == ctrl["onset_hour"].to_numpy()).all()
    per_case = ctrl.groupby("matched_case").size().reindex(case_on.index, fill_value=0)
    m = att["matching"]
    assert per_case.max() <= m["ratio"]
    assert (per_case < m["ratio"]).sum() == m["cases_short"]
    assert m["controls_missing"] == (m["ratio"] - per_case).sum()
    assert m["final_ratio"] == pytest.approx(len(ctrl) / len(case_on))


def test_matching_unit_short_cases_and_determinism():
    cases = pd.DataFrame({"stay_id": [1, 2, 3], "onset": [10.0, 50.0, 8.0]})
    controls = pd.DataFrame(
        {"stay_id": np.arange(100, 110), "los_hours": [5, 9, 12, 60, 70, 20, 30, 8, 7, 100.0]}
    )
    m1, info = match_controls(cases, controls, ratio=3, seed=1)
    m2, _ = match_controls(cases, controls, ratio=3, seed=1)
    pd.testing.assert_frame_equal(m1, m2)
    assert m1["stay_id"].is_unique
    # only 3 controls have los >= 50: case 2 gets exactly those (served first)
    assert set(m1.loc[m1["matched_case"] == 2, "stay_id"]) == {103, 104, 109}
    los = controls.set_index("stay_id")["los_hours"]
    assert (los.loc[m1["stay_id"]].to_numpy() >= m1["onset_hour"].to_numpy()).all()
    # eligible for onset 10: 102, 105, 106 -> case 1 full; onset 8: 101, 107 (+ none left) -> short
    assert info["cases_short"] == 1 and info["controls_missing"] == 1
    m3, _ = match_controls(cases, controls, ratio=1, seed=2)
    m4, _ = match_controls(cases, controls, ratio=1, seed=5)
    seeds_differ = any(
        not match_controls(cases, controls, 1, s)[0].equals(m3) for s in range(6, 12)
    )
    assert seeds_differ or m3.equals(m4)


def test_cohort_deterministic_per_seed():
    t = make_tables(seed=4)
    a = build_cohort(*t, PARAMS)
    b = build_cohort(*t, PARAMS)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    c = build_cohort(
        *t, CohortParams(min_variable_observations=5, split_seeds=(0, 1), matching_seed=9)
    )
    assert not a[0]["stay_id"].equals(c[0]["stay_id"]) or len(a[0]) == len(t[0])


def test_splits_disjoint_by_patient_and_stratified():
    stays, onsets, diag, obs = make_tables(n=1500, seed=5, case_frac=0.2)
    cohort, splits, _, _ = build_cohort(stays, onsets, diag, obs, PARAMS)
    for seed in (0, 1):
        sp = splits[splits["seed"] == seed].merge(cohort, on="stay_id")
        assert len(sp) == len(cohort)
        assert (sp.groupby("patient_id")["split"].nunique() == 1).all()
        has_case = sp.groupby("patient_id")["label"].max()
        psplit = sp.groupby("patient_id")["split"].first()
        for flag in (0, 1):
            frac = psplit[has_case == flag].value_counts(normalize=True)
            assert frac["train"] == pytest.approx(0.8, abs=0.03)
            assert frac.get("test", 0) == pytest.approx(0.1, abs=0.03)
    s0 = splits[splits["seed"] == 0].set_index("stay_id")["split"]
    s1 = splits[splits["seed"] == 1].set_index("stay_id")["split"]
    assert (s0 != s1.loc[s0.index]).any()


def test_normalisation_uses_training_windows_only():
    stays, onsets, diag, obs = make_tables(seed=6)
    cohort, splits, norm, att = build_cohort(stays, onsets, diag, obs, PARAMS)
    sp = splits[splits["seed"] == 0].set_index("stay_id")["split"]
    on = cohort.set_index("stay_id")["onset_hour"]
    o = obs["stay_id"].map(on)
    inwin = (obs["hour"] >= np.maximum(0, o - 48)) & (obs["hour"] <= o)
    tr = obs[inwin & obs["stay_id"].map(sp).eq("train")]
    expect = tr.groupby("variable")["value"].agg(["mean", "count"])
    n0 = norm[norm["seed"] == 0].set_index("variable")
    for v in att["variables"]["kept"]:
        assert n0.loc[v, "mean"] == pytest.approx(expect.loc[v, "mean"])
        assert n0.loc[v, "n"] == expect.loc[v, "count"]
    # change a test-split value and an out-of-window training value: stats unchanged
    obs2 = obs.copy()
    test_rows = obs2["stay_id"].map(sp).eq("test")
    obs2.loc[test_rows, "value"] += 1e6
    obs2.loc[~inwin & obs2["stay_id"].map(sp).eq("train"), "value"] -= 1e6
    norm2 = build_cohort(stays, onsets, diag, obs2, PARAMS)[2]
    pd.testing.assert_frame_equal(norm[norm["seed"] == 0], norm2[norm2["seed"] == 0])
    # changing a training value inside a window does change them
    obs3 = obs.copy()
    obs3.loc[tr.index[:5], "value"] += 1e3
    assert not build_cohort(stays, onsets, diag, obs3, PARAMS)[2].equals(norm)


def test_variable_selection_drops_rare_variables():
    stays, onsets, diag, obs = make_tables(seed=7)
    obs = pd.concat(
        [
            obs,
            pd.DataFrame(
                {
                    "stay_id": obs["stay_id"].iloc[:2],
                    "hour": 0.0,
                    "variable": "albumin",
                    "value": 3.0,
                }
            ),
        ],
        ignore_index=True,
    )
    p = CohortParams(
        min_variable_observations=5, split_seeds=(0,), horizons=(0, 1), min_onset_hour=1
    )
    _, _, norm, att = build_cohort(stays, onsets, diag, obs, p)
    assert "albumin" not in att["variables"]["kept"]
    assert set(norm["variable"]) == set(att["variables"]["kept"])


def test_no_cases_is_a_clear_error():
    stays, onsets, diag, obs = make_tables(n=50)
    onsets["onset_hour"] = np.nan
    with pytest.raises(ValueError, match="no cases remain"):
        build_cohort(stays, onsets, diag, obs, PARAMS)


def test_prepare_from_tables_writes_every_artifact(tmp_path):
    stays, onsets, diag, obs = make_tables(seed=8)
    labels = pd.DataFrame(
        {"stay_id": np.repeat(stays["stay_id"].to_numpy(), 2), "hour": np.tile([0, 1], len(stays))}
    )
    for c in (
        "sofa",
        "sofa_resp",
        "sofa_coag",
        "sofa_liver",
        "sofa_cardio",
        "sofa_cns",
        "sofa_renal",
    ):
        labels[c] = 0
    labels["si_window"] = False
    labels["sepsis"] = False
    for c in io.ONSETS.names:
        if c not in onsets:
            onsets[c] = None
    out = tmp_path / "prepared"
    att = prepare_from_tables(
        stays, onsets, labels, diag, obs, PARAMS, out, dropped_values={"out_of_range": {"x": 1}}
    )
    for name, schema in io.PREPARED_FILES.items():
        io.read_parquet(out / name, schema)
    saved = json.loads((out / "attrition.json").read_text())
    assert saved["steps"] == att["steps"] and saved["dropped_values"] == {"out_of_range": {"x": 1}}
    o = io.read_parquet(out / "observations.parquet", io.OBSERVATIONS)
    c = io.read_parquet(out / "cohort.parquet", io.COHORT).set_index("stay_id")["onset_hour"]
    assert set(o["stay_id"]) <= set(c.index)
    on = o["stay_id"].map(c)
    assert ((o["hour"] >= np.maximum(0, on - 48)) & (o["hour"] <= on)).all()
