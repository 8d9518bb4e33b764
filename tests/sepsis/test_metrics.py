"""Tests for sepsis.evaluation.metrics: sklearn agreement, bootstrap behaviour, tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from sepsis.evaluation import metrics as M


@st.composite
def labelled_scores(draw, max_n: int = 40):
    n = draw(st.integers(2, max_n))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    y[0], y[1] = 1, 0  # both classes
    # few distinct values so ties are common
    s = np.array(
        draw(
            st.lists(
                st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0, 3.0]), min_size=n, max_size=n
            )
        )
    )
    return y, s


@settings(max_examples=150, deadline=None)
@given(labelled_scores())
def test_point_metrics_equal_sklearn(ys):
    y, s = ys
    assert M.auprc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert M.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(labelled_scores(), st.integers(0, 2**31 - 1), st.booleans())
def test_batched_resample_values_equal_sklearn_on_resampled_arrays(ys, seed, stratified):
    y, s = ys
    rng = np.random.default_rng(seed)
    idx = M._resample_indices(y, 8, rng, stratified)
    w = M._multiplicities(idx, len(y))
    ranked = M._Ranked(y, s)
    ap = M._batched("auprc", ranked, w)
    auc = M._batched("auroc", ranked, w)
    for j in range(len(idx)):
        yy, ss = y[idx[j]], s[idx[j]]
        if yy.sum() == 0:
            assert np.isnan(ap[j])
            continue
        assert ap[j] == pytest.approx(average_precision_score(yy, ss), abs=1e-12)
        if yy.sum() < len(yy):
            assert auc[j] == pytest.approx(roc_auc_score(yy, ss), abs=1e-12)
        else:
            assert np.isnan(auc[j])


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 50), st.integers(0, 2**31 - 1))
def test_batched_values_without_ties_equal_sklearn(n, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    y[:2] = [1, 0]
    s = rng.random(n)  # continuous: no ties, the path that skips the tie grouping
    idx = M._resample_indices(y, 6, rng, True)
    w = M._multiplicities(idx, n)
    ranked = M._Ranked(y, s)
    assert len(ranked.starts) == n
    ap, auc = M._batched("auprc", ranked, w), M._batched("auroc", ranked, w)
    for j in range(6):
        yy, ss = y[idx[j]], s[idx[j]]
        assert ap[j] == pytest.approx(average_precision_score(yy, ss), abs=1e-12)
        assert auc[j] == pytest.approx(roc_auc_score(yy, ss), abs=1e-12)


def test_bootstrap_cis_equals_separate_bootstrap_ci():
    y, s = _data(400, seed=9)
    both = M.bootstrap_cis(y, s, ("auprc", "auroc"), n_resamples=300, seed=3)
    assert both["auprc"] == M.bootstrap_ci(y, s, "auprc", n_resamples=300, seed=3)
    assert both["auroc"] == M.bootstrap_ci(y, s, "auroc", n_resamples=300, seed=3)


def _data(n: int, seed: int = 0, prev: float = 0.1, signal: float = 0.8):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prev).astype(int)
    y[:2] = [1, 0]
    return y, rng.normal(0, 1, n) + signal * y


@pytest.mark.parametrize("metric", ["auprc", "auroc"])
def test_bootstrap_interval_covers_point_and_shrinks_with_more_data(metric):
    y_small, s_small = _data(200, seed=1)
    y_big, s_big = _data(5000, seed=2)
    p1, lo1, hi1 = M.bootstrap_ci(y_small, s_small, metric, n_resamples=500, seed=0)
    p2, lo2, hi2 = M.bootstrap_ci(y_big, s_big, metric, n_resamples=500, seed=0)
    assert lo1 <= p1 <= hi1 and lo2 <= p2 <= hi2
    assert (hi2 - lo2) < 0.6 * (hi1 - lo1)


def test_bootstrap_is_seeded_and_callable_path_agrees_with_fast_path():
    y, s = _data(300, seed=3)
    a = M.bootstrap_ci(y, s, "auprc", n_resamples=200, seed=7)
    assert a == M.bootstrap_ci(y, s, "auprc", n_resamples=200, seed=7)
    b = M.bootstrap_ci(y, s, average_precision_score, n_resamples=200, seed=7)
    # same resamples drawn from the same generator -> identical quantiles
    assert a[1] == pytest.approx(b[1], abs=1e-12) and a[2] == pytest.approx(b[2], abs=1e-12)


def test_vectorised_bootstrap_is_much_faster_than_a_python_loop():
    import time

    y, s = _data(600, seed=4)
    t0 = time.perf_counter()
    M.bootstrap_ci(y, s, "auprc", n_resamples=1000, seed=0)
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    M.bootstrap_ci(y, s, average_precision_score, n_resamples=200, seed=0)
    slow = (time.perf_counter() - t0) * 5  # per 1000 resamples
    assert fast * 3 < slow


def test_paired_bootstrap_against_itself_is_zero():
    y, s = _data(300, seed=5)
    diff, lo, hi, p = M.paired_bootstrap_diff(y, s, s, "auprc", n_resamples=300)
    assert diff == 0 and lo == 0 and hi == 0 and p == 1.0


def test_paired_bootstrap_detects_a_better_learner():
    y, s = _data(1000, seed=6, signal=1.5)
    noise = np.random.default_rng(0).normal(0, 3, len(y))
    diff, lo, hi, p = M.paired_bootstrap_diff(y, s, s + noise, "auroc", n_resamples=500)
    assert diff > 0 and lo > 0 and p < 0.01


def test_single_class_gives_nan_not_an_error():
    assert np.isnan(M.auprc(np.zeros(5, int), np.arange(5.0)))
    assert np.isnan(M.auroc(np.ones(5, int), np.arange(5.0)))
    assert all(np.isnan(v) for v in M.bootstrap_ci(np.zeros(5, int), np.arange(5.0), "auroc"))


def fake_predictions(
    seed: int = 0, n: int = 120, learners=("a", "b"), horizons=(0, 3, 7), seeds=(0, 1)
):
    rng = np.random.default_rng(seed)
    rows = []
    for sd in seeds:
        y = (rng.random(n) < 0.15).astype(int)
        y[:2] = [1, 0]
        for lrn_i, lrn in enumerate(learners):
            for h in horizons:
                score = rng.normal(0, 1, n) + (1.5 - 0.1 * h - 0.5 * lrn_i) * y
                rows.append(
                    pd.DataFrame(
                        {
                            "learner": lrn,
                            "horizon": np.int32(h),
                            "seed": np.int32(sd),
                            "stay_id": np.arange(n, dtype=np.int64) + 1000 * sd,
                            "y_true": y.astype(np.int8),
                            "score": score,
                            "regime": "per_horizon",
                            "external": False,
                        }
                    )
                )
    return pd.concat(rows, ignore_index=True)


def test_metrics_table_rows_match_direct_computation():
    pred = fake_predictions()
    tab = M.metrics_table(pred, n_resamples=100, seed=0)
    assert len(tab) == 2 * 3 * 2
    row = tab[(tab.learner == "b") & (tab.horizon == 3) & (tab.seed == 1)].iloc[0]
    g = pred[(pred.learner == "b") & (pred.horizon == 3) & (pred.seed == 1)]
    assert row["auprc"] == pytest.approx(average_precision_score(g.y_true, g.score))
    assert row["auroc"] == pytest.approx(roc_auc_score(g.y_true, g.score))
    assert row["n"] == len(g) and row["n_pos"] == g.y_true.sum()
    assert row["prevalence"] == pytest.approx(g.y_true.mean())
    assert (tab.auprc_low <= tab.auprc).all() and (tab.auprc <= tab.auprc_high).all()


def test_metrics_table_counts_nan_scores_and_all_nan_is_nan():
    pred = fake_predictions(learners=("a",), horizons=(0,), seeds=(0,))
    pred.loc[pred.index[:5], "score"] = np.nan
    sofa = pred.assign(learner="sofa", score=np.nan)
    tab = M.metrics_table(pd.concat([pred, sofa]), n_resamples=50)
    a = tab[tab.learner == "a"].iloc[0]
    assert a["n_missing_score"] == 5 and np.isfinite(a["auprc"])
    s = tab[tab.learner == "sofa"].iloc[0]
    assert s["n_missing_score"] == s["n"] and np.isnan(s["auprc"])


def test_metrics_table_rejects_bad_rows():
    pred = fake_predictions(learners=("a",), horizons=(0,), seeds=(0,))
    bad = pred.copy()
    bad.loc[3, "y_true"] = 2
    with pytest.raises(ValueError, match="y_true row 3"):
        M.metrics_table(bad, n_resamples=10)
    with pytest.raises(ValueError, match="repeats stay_id"):
        M.metrics_table(pd.concat([pred, pred.iloc[:1]]), n_resamples=10)
    with pytest.raises(ValueError, match="missing columns"):
        M.metrics_table(pred.drop(columns="regime"), n_resamples=10)


def test_summarise_over_seeds():
    tab = M.metrics_table(fake_predictions(), n_resamples=50)
    summ = M.summarise_over_seeds(tab)
    assert len(summ) == 2 * 3
    r = summ[(summ.learner == "a") & (summ.horizon == 0)].iloc[0]
    vals = tab[(tab.learner == "a") & (tab.horizon == 0)]["auprc"]
    assert r["auprc_mean"] == pytest.approx(vals.mean())
    assert r["auprc_std"] == pytest.approx(vals.std(ddof=1))
    assert r["auprc_min"] == vals.min() and r["auprc_max"] == vals.max() and r["n_seeds"] == 2


def test_paired_differences_table():
    d = M.paired_differences(fake_predictions(), horizons=(0, 7), n_resamples=100)
    assert set(d.horizon) == {0, 7} and len(d) == 2 * 2
    row = d[(d.horizon == 0) & (d.seed == 0)].iloc[0]
    pred = fake_predictions()
    g = pred[(pred.horizon == 0) & (pred.seed == 0)]
    ga, gb = g[g.learner == "a"], g[g.learner == "b"]
    assert row["diff"] == pytest.approx(
        average_precision_score(ga.y_true, ga.score) - average_precision_score(gb.y_true, gb.score)
    )
