"""The Optuna search of MGP-TCN: budgets, resume from the study file, pruning, refit."""

from __future__ import annotations

import time

import numpy as np
import optuna
import pytest
from sklearn.metrics import average_precision_score

import models.mgp_tcn.classifier as clf_mod
from data_prep.views import random_irregular_view
from models.mgp_tcn import MGPTCNClassifier, SearchParams, search_hyperparameters
from models.mgp_tcn.search import STUDY_FILE, resolve_space

BASE = dict(epochs=2, n_mc_samples=2, progress=False)
SPACE = {"hidden": [4, 12], "levels": [1, 2], "n_mc_samples": [2, 3], "batch_size": [16, 32]}


@pytest.fixture(scope="module")
def data():
    X, y = random_irregular_view(n=60, signal=1.5, seed=0)
    Xv, yv = random_irregular_view(n=50, signal=1.5, seed=1)
    return X, y, Xv, yv


@pytest.fixture
def fits(monkeypatch):
    """Count MGPTCNClassifier fits (and the training-set sizes they saw)."""
    seen: list[int] = []
    orig = MGPTCNClassifier.fit

    def spy(self, X, *a, **k):
        seen.append(len(X))
        return orig(self, X, *a, **k)

    monkeypatch.setattr(MGPTCNClassifier, "fit", spy)
    return seen


def _search(data, tmp_path, base=BASE, **settings):
    X, y, Xv, yv = data
    s = SearchParams(**{"pruner": "none", "space": SPACE, **settings})
    return search_hyperparameters(
        X, y, Xv, yv, s, base_params=base, storage_dir=tmp_path, seed=0, progress=False
    )


def test_trial_budget_and_resume_without_redoing_trials(data, tmp_path, fits):
    X, y, Xv, yv = data
    first = _search(data, tmp_path, trials=2)
    assert len(fits) == 2 and (tmp_path / STUDY_FILE).exists()
    assert first.trials["state"].tolist() == ["complete", "complete"]
    again = _search(data, tmp_path, trials=2)  # budget already reached: nothing is redone
    assert len(fits) == 2 and again.trials.equals(first.trials)
    more = _search(data, tmp_path, trials=3)  # the same study continues
    assert len(fits) == 3 and more.trials["trial"].tolist() == [0, 1, 2]
    assert more.trials.iloc[:2].equals(first.trials)
    keys = list(resolve_space(SPACE))  # a resumed sampler draws anew, not a replay
    assert more.trials.loc[2, keys].tolist() != more.trials.loc[0, keys].tolist()
    # the best trial's model is the result (every trial trains like the final fit) ...
    best = more.trials.loc[more.trials["val_auprc"].idxmax()]
    assert more.best_value == pytest.approx(best["val_auprc"])
    ap = average_precision_score(yv, more.model.predict_proba(Xv)[:, 1])
    assert ap == pytest.approx(more.best_value)
    assert {k: more.best_params[k] for k in SPACE} == {k: best[k] for k in SPACE}
    assert type(more.best_params["hidden"]) is int and more.best_params["epochs"] == 2
    # ... and refitting its parameters reproduces it
    refit = MGPTCNClassifier(**more.best_params).fit(X, y, Xv, yv)
    np.testing.assert_allclose(refit.predict_proba(Xv), more.model.predict_proba(Xv), atol=1e-6)
    assert set(more.curves["trial"]) == {0, 1, 2} and "val_auprc" in more.curves


def test_wall_time_budget_stops_the_search_and_counts_across_resumes(data, tmp_path, fits):
    budget = 0.03  # minutes: 1.8 s, far less than 100 trials of 200 epochs
    # early stopping can never fire (patience > epochs): on a fast machine a trial would
    # otherwise end by patience just past the deadline, and the test would depend on speed
    base = {**BASE, "epochs": 200, "patience": 1000}
    t0 = time.perf_counter()
    res = _search(data, tmp_path, base=base, trials=100, budget_minutes=budget)
    wall = time.perf_counter() - t0
    assert wall < 60 * budget + 15, wall  # one epoch and the final scoring past the deadline
    assert 1 <= len(res.trials) < 100 and res.elapsed_seconds >= 60 * budget
    last = res.trials.iloc[-1]
    assert last["state"] == "complete" and last["stopped"] == "budget"
    assert last["epochs_run"] < 200 and np.isfinite(res.best_value)
    n = len(fits)
    again = _search(data, tmp_path, base=base, trials=100, budget_minutes=budget)
    assert len(fits) == n and len(again.trials) == len(res.trials)  # the budget is spent


def test_interrupted_trials_are_queued_again_with_the_same_parameters(
    data, tmp_path, fits, monkeypatch
):
    orig = MGPTCNClassifier.fit  # the spy

    def crash_second(self, *a, **k):
        if len(fits) == 1:
            fits.append(-1)
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    monkeypatch.setattr(MGPTCNClassifier, "fit", crash_second)
    with pytest.raises(KeyboardInterrupt):
        _search(data, tmp_path, trials=2)
    monkeypatch.setattr(MGPTCNClassifier, "fit", orig)
    res = _search(data, tmp_path, trials=2)
    assert res.trials["state"].tolist() == ["complete", "fail", "complete"]
    assert len(fits) == 3  # trial 0 once, the crash, and its retry only
    keys = list(resolve_space(SPACE))
    assert res.trials.loc[2, keys].tolist() == res.trials.loc[1, keys].tolist()
    assert res.trials.loc[2, "retry_of"] == 1
    # a trial left RUNNING by a killed process is marked failed and queued again
    study = optuna.load_study(study_name="mgp_tcn", storage=f"sqlite:///{tmp_path / STUDY_FILE}")
    t = study.ask()
    for d in resolve_space(SPACE).values():
        d.suggest(t)
    res = _search(data, tmp_path, trials=3)
    assert res.trials["state"].tolist() == ["complete", "fail", "complete", "fail", "complete"]
    assert res.trials.loc[4, keys].tolist() == res.trials.loc[3, keys].tolist()


def test_pruned_trials_are_recorded_with_their_curves(data, tmp_path, monkeypatch):
    # trial 0 (3 epochs) sees a high validation AUPRC, every later epoch a low one
    calls = {"n": 0}

    def scripted(*a, **k):
        calls["n"] += 1
        return 0.9 if calls["n"] <= 3 else 0.1

    monkeypatch.setattr(clf_mod, "average_precision_score", scripted)
    res = _search(
        data,
        tmp_path,
        base={**BASE, "epochs": 3},
        trials=3,
        pruner="median",
        startup_trials=1,
        warmup_epochs=1,
    )
    t = res.trials
    assert t["state"].tolist() == ["complete", "pruned", "pruned"]
    assert t.loc[1:, "stopped"].tolist() == ["pruned", "pruned"]
    assert t.loc[1:, "epochs_run"].tolist() == [1, 1] and t.loc[1:, "val_auprc"].isna().all()
    assert t.loc[1, "last_val_auprc"] == pytest.approx(0.1)
    c = res.curves
    assert len(c[c["trial"] == 0]) == 3 and len(c[c["state"] == "pruned"]) == 2
    assert res.best_params["hidden"] == t.loc[0, "hidden"]


def test_hyperband_and_subsampled_trials_need_a_refit(data, tmp_path, fits):
    X, y, _, _ = data
    res = _search(
        data,
        tmp_path,
        base={**BASE, "epochs": 4},
        trials=2,
        pruner="hyperband",
        train_fraction=0.5,
        max_epochs=2,
        predict_samples=(6,),
    )
    assert res.model is None  # trials trained on half the stays for 2 epochs: refit
    assert fits == [30, 30] and (res.trials["epochs_run"] <= 2).all()
    assert res.best_params["epochs"] == 4  # the final fit keeps the learner's epochs
    assert res.best_params["mc_samples_predict"] in (None, 6)
    assert set(res.trials["mc_samples_predict"].dropna()) <= {6.0}


def test_a_study_for_other_parameters_is_discarded(data, tmp_path, fits):
    _search(data, tmp_path, trials=1)
    res = _search(data, tmp_path, base={**BASE, "jitter": 0.2}, trials=1)
    assert len(fits) == 2 and res.trials["trial"].tolist() == [0]
    assert res.best_params["jitter"] == 0.2


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"pruner": "asha"}, "pruner"),
        ({"trials": -1}, "trials"),
        ({"budget_minutes": 0}, "budget_minutes"),
        ({"train_fraction": 0}, "train_fraction"),
        ({"space": {"hiden": [1, 2]}}, "space.hiden"),
        ({"space": {"lr": [0.1, 0.01]}}, "space.lr"),
        ({"space": {"lr": "fast"}}, "space.lr"),
    ],
)
def test_bad_settings_name_the_key(settings, words):
    with pytest.raises(ValueError, match=words):
        SearchParams(**settings).validate()
