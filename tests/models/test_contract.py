"""The learner contract shared by MGP-TCN and DTW-KNN (models.base.SepsisLearner)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from data_prep.views import random_grid_view, random_irregular_view


def _mgp_tcn():
    from models.mgp_tcn import MGPTCNClassifier

    return MGPTCNClassifier(
        n_mc_samples=2, levels=2, hidden=8, epochs=2, batch_size=16, progress=False
    )


def _dtw_knn():
    from models.dtw_knn import DTWKNNClassifier

    return DTWKNNClassifier(progress=False)


def _logreg():
    from models.baselines import LogisticRegressionBaseline

    return LogisticRegressionBaseline()


def _gbm():
    from models.baselines import GradientBoostingBaseline

    return GradientBoostingBaseline(min_samples_leaf=3, max_iter=30)


FACTORIES = [
    pytest.param(_mgp_tcn, id="mgp_tcn"),
    pytest.param(_dtw_knn, id="dtw_knn"),
    pytest.param(_logreg, id="logreg"),
    pytest.param(_gbm, id="gbm"),
]


def _views(learner, seed=0, n=24):
    """(X, y) of the view the learner consumes, and a view of the other kind."""
    xi, yi = random_irregular_view(n=n, seed=seed, signal=1.0)
    xg, yg = random_grid_view(n=n, seed=seed, signal=1.0)
    return ((xi, yi), xg) if learner.view == "irregular" else ((xg, yg), xi)


@pytest.mark.parametrize("factory", FACTORIES)
def test_learner_contract(factory, tmp_path):
    est = factory()
    (X, y), wrong = _views(est)
    params = est.get_params(deep=False)
    twin = clone(est)
    assert twin.get_params(deep=False) == params
    with pytest.raises(NotFittedError):
        est.predict_proba(X)
    with pytest.raises(TypeError):
        clone(est).fit(wrong, y)
    assert est.fit(X, y) is est
    assert est.get_params(deep=False) == params  # fit never mutates parameters
    assert list(est.classes_) == [0, 1]
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert np.all(proba >= 0) and np.allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(est.predict(X), est.classes_[proba.argmax(1)])
    # classes_ order: column 1 is the positive class, so it ranks positives higher here
    assert proba[y == 1, 1].mean() > proba[y == 0, 1].mean()
    with pytest.raises(TypeError):
        est.predict_proba(wrong)
    est.save(tmp_path / "model")
    again = type(est).load(tmp_path / "model")
    np.testing.assert_array_equal(again.predict_proba(X), proba)
    assert again.get_params(deep=False) == params
