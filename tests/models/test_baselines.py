"""Tests for models.baselines: summary features by hand, learners above chance, SOFA increase."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import average_precision_score

from data_prep.views import GridView, random_grid_view, random_irregular_view
from models.baselines import (
    GradientBoostingBaseline,
    LogisticRegressionBaseline,
    SofaIncreaseBaseline,
    observation_counts_from_grid,
    sofa_increase_scores,
    summary_feature_names,
    summary_features,
)


def tiny_view() -> GridView:
    X = np.full((3, 4, 2), np.nan)
    X[0, :4, 0] = [0.0, 1.0, 1.0, 3.0]
    X[0, :4, 1] = [2.0, 2.0, 2.0, 2.0]
    X[1, :1, 0] = [5.0]
    X[1, :1, 1] = [0.0]
    X[2, :2, 0] = [1.0, -1.0]
    X[2, :2, 1] = [0.0, 4.0]
    return GridView(X.astype(np.float32), np.array([4, 1, 2]), np.array([10, 11, 12]), ("a", "b"))


def test_summary_features_by_hand():
    F = summary_features(tiny_view())
    assert F.shape == (3, 12)
    names = summary_feature_names(("a", "b"))
    col = {n: i for i, n in enumerate(names)}
    # stay 0, variable a = [0, 1, 1, 3]: sum((t-1.5)(x-1.25)) = 1.875+0.125-0.125+2.625 = 4.5, sum((t-1.5)^2) = 5
    assert F[0, col["a__last"]] == 3 and F[0, col["a__mean"]] == pytest.approx(1.25)
    assert F[0, col["a__min"]] == 0 and F[0, col["a__max"]] == 3
    assert F[0, col["a__slope"]] == pytest.approx(0.9)
    assert F[0, col["a__count"]] == 2  # changes at t=1 and t=3 (first hour is 0 = fill)
    assert F[0, col["b__slope"]] == 0 and F[0, col["b__count"]] == 1  # constant 2 from the start
    # stay 1, length 1: slope 0, padding ignored
    assert F[1, col["a__slope"]] == 0 and F[1, col["a__last"]] == 5 and F[1, col["a__mean"]] == 5
    assert F[1, col["b__count"]] == 0
    # stay 2: two points, slope = difference
    assert F[2, col["a__slope"]] == pytest.approx(-2.0) and F[2, col["b__slope"]] == pytest.approx(
        4.0
    )
    assert F[2, col["b__min"]] == 0 and F[2, col["b__max"]] == 4 and F[2, col["a__count"]] == 2


def test_slope_matches_polyfit_on_random_views():
    view, _ = random_grid_view(n=30, n_variables=3, max_len=10, seed=3)
    F = summary_features(view)
    V = 3
    for i in range(30):
        L = view.lengths[i]
        for v in range(V):
            x = view.X[i, :L, v].astype(float)
            want = np.polyfit(np.arange(L), x, 1)[0] if L > 1 else 0.0
            assert F[i, 4 * V + v] == pytest.approx(want, abs=1e-5)
            assert F[i, 1 * V + v] == pytest.approx(x.mean(), abs=1e-5)


def test_obs_count_override_and_shape_check():
    view = tiny_view()
    counts = np.array([[7, 1], [0, 2], [3, 3]])
    F = summary_features(view, obs_count=counts)
    assert (F[:, 10:] == counts).all()
    with pytest.raises(ValueError, match="obs_count has shape"):
        summary_features(view, obs_count=np.zeros((3, 3)))
    assert observation_counts_from_grid(view).shape == (3, 2)


@pytest.mark.parametrize("cls", [LogisticRegressionBaseline, GradientBoostingBaseline])
def test_learns_signal_and_round_trips(cls, tmp_path):
    train, y = random_grid_view(n=200, n_variables=3, max_len=12, seed=0, signal=1.0)
    test, yt = random_grid_view(n=200, n_variables=3, max_len=12, seed=1, signal=1.0)
    est = cls(seed=0) if cls is LogisticRegressionBaseline else cls(max_iter=50, seed=0)
    params = est.get_params()
    with pytest.raises(NotFittedError):
        est.predict_proba(test)
    est.fit(train, y, X_val=test, y_val=yt)
    assert est.get_params() == params  # fit never mutates parameters
    proba = est.predict_proba(test)
    assert proba.shape == (200, 2) and np.allclose(proba.sum(axis=1), 1)
    ap = average_precision_score(yt, proba[:, 1])
    assert ap > yt.mean() + 0.2
    assert est.val_auprc_ == pytest.approx(ap)
    est.save(tmp_path / "m")
    back = cls.load(tmp_path / "m")
    assert np.array_equal(back.predict_proba(test), proba)
    assert back.get_params() == params
    assert clone(est).get_params() == params


def test_rejects_wrong_view_and_variables():
    train, y = random_grid_view(n=40, seed=0, signal=1.0)
    est = LogisticRegressionBaseline().fit(train, y)
    irr, _ = random_irregular_view(n=5)
    with pytest.raises(TypeError, match="grid"):
        est.predict_proba(irr)
    other, _ = random_grid_view(n=5, n_variables=4)
    with pytest.raises(ValueError, match="variables"):
        est.predict_proba(other)


def _labels_hourly():
    # stay 1: SOFA 1,1,2,4,5 at hours 0..4; stay 2: constant 3 at hours 0..9
    return pd.DataFrame(
        {
            "stay_id": [1] * 5 + [2] * 10,
            "hour": list(range(5)) + list(range(10)),
            "sofa": [1, 1, 2, 4, 5] + [3] * 10,
        }
    )


def test_sofa_increase_scores_by_hand():
    lh = _labels_hourly()
    s = sofa_increase_scores(
        lh, np.array([1, 1, 1, 2, 1, 99]), np.array([4.0, 3.5, 0.5, 9.0, 5.0, 3.0])
    )
    # p=4 -> last complete hour 3: SOFA 4 - min(1,1,2,4) = 3; p=3.5 -> hour 2: 2 - 1 = 1
    assert s[0] == 3 and s[1] == 1
    assert s[2] == 0  # no completed hour yet
    assert s[3] == 0  # constant SOFA
    assert s[4] == 4  # hour 4: 5 - 1
    assert np.isnan(s[5])  # stay absent: NaN, not dropped
    # a short window forgets the early minimum
    assert sofa_increase_scores(lh, np.array([1]), np.array([5.0]), window_hours=1)[0] == 5 - 4


def test_sofa_increase_is_nan_without_sofa_columns():
    lh = pd.DataFrame({"stay_id": [1, 1], "hour": [0, 1], "sepsis": [False, True]})
    assert np.isnan(sofa_increase_scores(lh, np.array([1]), np.array([2.0]))).all()


def test_sofa_baseline_is_monotone_and_round_trips(tmp_path):
    inc = np.array([0.0, 1.0, 2.0, 5.0, np.nan])
    est = SofaIncreaseBaseline().fit(inc, np.array([0, 0, 1, 1, 0]))
    p = est.predict_proba(inc)[:, 1]
    assert np.all(np.diff(p[:4]) > 0) and p[2] == pytest.approx(0.5) and np.isnan(p[4])
    est.save(tmp_path)
    assert np.array_equal(
        SofaIncreaseBaseline.load(tmp_path).predict_proba(inc[:4]), est.predict_proba(inc[:4])
    )


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(lambda: LogisticRegressionBaseline(), id="logreg"),
        pytest.param(lambda: GradientBoostingBaseline(max_iter=30, min_samples_leaf=3), id="hgb"),
    ],
)
def test_shared_learner_contract(factory, tmp_path):
    # the contract test shared by every learner, run on the baselines
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "_contract", Path(__file__).with_name("test_contract.py")
    )
    contract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(contract)
    contract.test_learner_contract(factory, tmp_path)


def test_qsofa_scores_by_hand():
    from models.baselines import qsofa_scores

    X = np.full((3, 2, 2), np.nan, np.float32)
    # z-scores with mean/std resp 18/4, sbp 120/20: last hour decides
    X[0, :2] = [[0, 0], [1.0, -1.0]]  # RR 22 (>= 22), SBP 100 (<= 100) -> 2
    X[1, :1] = [[0.9, -0.9]]  # RR 21.6, SBP 102 -> 0
    X[2, :2] = [[5, -5], [1.5, 0.0]]  # RR 24, SBP 120 -> 1 (earlier hour ignored)
    view = GridView(X, np.array([2, 1, 2]), np.array([1, 2, 3]), ("resp_rate", "sbp"))
    s = qsofa_scores(view, {"resp_rate": 18, "sbp": 120}, {"resp_rate": 4, "sbp": 20})
    assert s.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="no training mean"):
        qsofa_scores(view, {"resp_rate": 18}, {"resp_rate": 4})


def test_summary_features_blocked_equals_unblocked(monkeypatch):
    import models.baselines as mb

    view, _ = random_grid_view(n=37, n_variables=3, max_len=9, seed=5)
    counts = np.arange(37 * 3).reshape(37, 3)
    whole = summary_features(view, obs_count=counts)
    monkeypatch.setattr(mb, "_FEATURE_BLOCK_CELLS", 9 * 3 * 4)  # blocks of 4 stays
    np.testing.assert_array_equal(summary_features(view, obs_count=counts), whole)
