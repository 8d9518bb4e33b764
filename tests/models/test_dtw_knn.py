"""DTWKNNClassifier: agreement with tslearn, validation choice of k, cache, learning, I/O."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import average_precision_score
from tslearn.neighbors import KNeighborsTimeSeriesClassifier

from data_prep.views import random_grid_view, random_irregular_view
from models.dtw_knn import DTWKNNClassifier
from models.dtw_knn import classifier as clf_mod
from models.dtw_knn import combine as combine_mod
from models.dtw_knn import search as search_mod


def views(n_tr=60, n_te=25, equal=False, signal=0.5, max_len=14):
    tr, ytr = random_grid_view(
        n=n_tr, n_variables=3, max_len=max_len, seed=1, signal=signal, equal_length=equal
    )
    te, yte = random_grid_view(
        n=n_te, n_variables=3, max_len=max_len, seed=2, signal=signal, equal_length=equal
    )
    return tr, ytr, te, yte


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_matches_tslearn_per_variable(weights):
    tr, ytr, te, _ = views(equal=True)
    k = 5
    model = DTWKNNClassifier(n_neighbors=k, weights=weights, progress=False).fit(tr, ytr)
    per_var = model.kneighbors(te)
    vp = model.variable_proba(te)
    for v in range(3):
        ref = KNeighborsTimeSeriesClassifier(n_neighbors=k, metric="dtw", weights=weights)
        ref.fit(tr.X[:, :, v : v + 1].astype(np.float64), ytr)
        Xte = te.X[:, :, v : v + 1].astype(np.float64)
        rd, ri = ref.kneighbors(Xte, return_distance=True)
        np.testing.assert_array_equal(per_var[v][1], ri)
        np.testing.assert_allclose(per_var[v][0], rd, atol=1e-9)
        np.testing.assert_allclose(vp[:, v], ref.predict_proba(Xte)[:, 1], atol=1e-12)
    np.testing.assert_allclose(model.predict_proba(te)[:, 1], vp.mean(axis=1))


def test_unequal_lengths_and_variable_subset():
    tr, ytr, te, _ = views(equal=False)
    assert len(set(tr.lengths.tolist())) > 3
    model = DTWKNNClassifier(n_neighbors=3, variables=["v2", "v0"], progress=False)
    p = model.fit(tr, ytr).predict_proba(te)
    assert model.variables_ == ("v2", "v0")
    assert p.shape == (len(te), 2) and np.allclose(p.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="not in the GridView"):
        DTWKNNClassifier(variables=["nope"], progress=False).fit(tr, ytr)


def test_k_chosen_on_validation_without_recomputing(monkeypatch):
    tr, ytr, va, yva = views(n_te=40)
    calls = []
    real = clf_mod.knn_search

    def spy(*a, **kw):
        calls.append(a[2])
        return real(*a, **kw)

    monkeypatch.setattr(clf_mod, "knn_search", spy)
    grid = (1, 3, 7, 15)
    model = DTWKNNClassifier(k_grid=grid, radius_grid=(None, 2), progress=False)
    model.fit(tr, ytr, va, yva)
    # one search per (radius, variable), each up to the largest k
    assert calls == [15] * 6
    table = model.validation_table_
    assert [(r["k"], r["radius"]) for r in table] == [(k, r) for r in (None, 2) for k in grid]
    best = max(table, key=lambda r: r["auprc"])
    assert model.k_ == best["k"] and model.radius_ == best["radius"]
    # the table's AUPRC is the AUPRC of the model's own predictions at the chosen k
    ap = average_precision_score(yva, model.predict_proba(va)[:, 1])
    assert ap == pytest.approx(best["auprc"], abs=1e-12)


def test_cache_hit_skips_search(tmp_path):
    tr, ytr, va, yva = views()
    before = dict(search_mod.STATS)
    m1 = DTWKNNClassifier(cache_dir=str(tmp_path), progress=False).fit(tr, ytr, va, yva)
    after_first = search_mod.STATS["searches"]
    assert after_first - before["searches"] == 3
    files = sorted(tmp_path.glob("dtwknn_*.npz"))
    assert len(files) == 3
    hits = clf_mod.CACHE_STATS["hits"]
    m2 = DTWKNNClassifier(cache_dir=str(tmp_path), progress=False).fit(tr, ytr, va, yva)
    assert search_mod.STATS["searches"] == after_first  # no DTW at all
    assert clf_mod.CACHE_STATS["hits"] - hits == 3
    assert m2.validation_table_ == m1.validation_table_
    fr1, fr2 = m1.pruned_fraction_["None"], m2.pruned_fraction_["None"]
    assert set(fr1) == {"v0", "v1", "v2"} and all(0.0 <= f <= 1.0 for f in fr1.values())
    assert all(f is None for f in fr2.values())  # served from the cache
    # other data -> other key -> a real search
    va2, _ = random_grid_view(n=10, n_variables=3, max_len=14, seed=9)
    m2.predict_proba(va2)
    assert search_mod.STATS["searches"] > after_first


def test_learns_signal():
    tr, ytr = random_grid_view(n=200, n_variables=3, max_len=12, seed=3, signal=1.0)
    va, yva = random_grid_view(n=200, n_variables=3, max_len=12, seed=4, signal=1.0)
    model = DTWKNNClassifier(progress=False).fit(tr, ytr, va, yva)
    ap = max(r["auprc"] for r in model.validation_table_)
    assert ap > yva.mean() + 0.25, (ap, yva.mean())


def test_contract_and_roundtrip(tmp_path):
    tr, ytr, te, _ = views()
    model = DTWKNNClassifier(
        n_neighbors=4, weights="distance", sakoe_chiba_radius=2, progress=False
    )
    params = model.get_params()
    with pytest.raises(NotFittedError):
        model.predict_proba(te)
    model.fit(tr, ytr)
    assert model.get_params() == params
    assert clone(model).get_params() == params
    p = model.predict_proba(te)
    assert p.shape == (len(te), 2) and np.allclose(p.sum(axis=1), 1.0)
    assert ((p >= 0) & (p <= 1)).all()
    model.save(tmp_path / "m")
    loaded = DTWKNNClassifier.load(tmp_path / "m")
    assert loaded.get_params() == params
    np.testing.assert_array_equal(loaded.predict_proba(te), p)
    assert not list((tmp_path / "m").glob("*.pkl"))
    irr, _ = random_irregular_view(n=5)
    with pytest.raises(TypeError, match="grid"):
        model.predict_proba(irr)
    with pytest.raises(TypeError):
        DTWKNNClassifier(progress=False).fit(irr, ytr[:5])
    with pytest.raises(ValueError, match="weights"):
        DTWKNNClassifier(weights="bogus", progress=False).fit(tr, ytr)


def _with_flat_variable(view, v=2):
    """The view with variable `v` never observed (imputed 0 everywhere inside each length)."""
    X = view.X.copy()
    inside = np.arange(X.shape[1])[None, :] < view.lengths[:, None]
    X[:, :, v] = np.where(inside, 0.0, np.nan)
    return type(view)(X, view.lengths, view.stay_id, view.variables)


def test_per_variable_k_radius_and_weighting_chosen_on_validation():
    tr, ytr, va, yva = views(n_tr=80, n_te=50, signal=0.8)
    tr, va = _with_flat_variable(tr), _with_flat_variable(va)
    grid = dict(k_grid=(1, 3, 7), radius_grid=(None, 2), weights_grid=("uniform", "distance"))
    m = DTWKNNClassifier(per_variable=True, progress=False, **grid).fit(tr, ytr, va, yva)
    rows = {r["variable"]: r for r in m.variable_table_}
    assert list(rows) == ["v0", "v1", "v2"]
    # each variable's setting is the best of the grid for that variable alone
    for v, name in enumerate(m.variables_):
        aps = {}
        for radius in grid["radius_grid"]:
            for w in grid["weights_grid"]:
                for k in grid["k_grid"]:
                    one = DTWKNNClassifier(
                        n_neighbors=k, sakoe_chiba_radius=radius, weights=w, progress=False
                    ).fit(tr, ytr)
                    aps[(k, radius, w)] = average_precision_score(yva, one.variable_proba(va)[:, v])
        chosen = (m.k_per_var_[v], m.radius_per_var_[v], m.weights_per_var_[v])
        assert rows[name]["auprc"] == pytest.approx(max(aps.values()), abs=1e-12)
        assert aps[chosen] == pytest.approx(max(aps.values()), abs=1e-12)
    # the flat (never observed) variable is visible as such
    assert rows["v2"]["flat_fraction"] == 1.0 and rows["v0"]["flat_fraction"] < 0.5
    assert m.val_prevalence_ == pytest.approx(yva.mean())
    # the ensemble is the plain mean of the per-variable probabilities at their settings
    P = m.variable_proba(va)
    np.testing.assert_allclose(m.predict_proba(va)[:, 1], P.mean(axis=1))
    # the paper's mode keeps one setting for all variables
    g = DTWKNNClassifier(progress=False, **grid).fit(tr, ytr, va, yva)
    assert len(set(zip(g.k_per_var_, g.radius_per_var_, g.weights_per_var_, strict=True))) == 1
    assert [(r["k"], r["radius"], r["weights"]) for r in g.validation_table_] == [
        (k, r, w) for r in (None, 2) for w in ("uniform", "distance") for k in (1, 3, 7)
    ]


def test_learned_combination_uses_validation_stays_only(monkeypatch, tmp_path):
    tr, ytr, va, yva = views(n_tr=80, n_te=50, signal=0.8)
    tr, va = _with_flat_variable(tr), _with_flat_variable(va)
    te, _ = random_grid_view(n=30, n_variables=3, max_len=14, seed=7, signal=0.8)
    seen = []
    real = clf_mod.fit_combination

    def spy(P, y, C=1.0):
        seen.append((P.copy(), np.asarray(y).copy()))
        return real(P, y, C)

    # fit calls it from the classifier, the out-of-fold refits from models.dtw_knn.combine
    monkeypatch.setattr(clf_mod, "fit_combination", spy)
    monkeypatch.setattr(combine_mod, "fit_combination", spy)
    m = DTWKNNClassifier(combine="logistic", k_grid=(3, 7), progress=False).fit(tr, ytr, va, yva)
    # one fit on the validation stays' own probabilities, the rest out-of-fold refits on
    # subsets of them: the fitted rows are validation stays, never training or test ones
    P_val = m.variable_proba(va)
    np.testing.assert_array_equal(seen[0][0], P_val)
    np.testing.assert_array_equal(seen[0][1], yva)
    val_rows = {tuple(r) for r in P_val}
    assert all({tuple(r) for r in P} <= val_rows and len(P) < len(P_val) for P, _ in seen[1:])
    w = m.combine_weights_.copy()
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert w[2] < w[0] and w[2] < w[1]  # the flat variable counts least
    n_fits = len(seen)
    p = m.predict_proba(te)
    assert len(seen) == n_fits and np.array_equal(m.combine_weights_, w)  # no refit on test
    np.testing.assert_allclose(p[:, 1], m.variable_proba(te) @ w)
    assert np.isfinite(m.combine_oof_auprc_)
    assert [r["combine_weight"] for r in m.variable_table_] == pytest.approx(w.tolist())
    # with its weights fixed equal, the learned combination is the paper's plain mean
    m.combine_weights_ = np.full(3, 1 / 3)
    mean = DTWKNNClassifier(k_grid=(3, 7), progress=False).fit(tr, ytr, va, yva)
    np.testing.assert_allclose(m.predict_proba(te), mean.predict_proba(te), atol=1e-15)
    m.combine_weights_ = w
    m.save(tmp_path / "m")
    again = DTWKNNClassifier.load(tmp_path / "m")
    np.testing.assert_array_equal(again.predict_proba(te), p)
    assert again.variable_table_ == m.variable_table_
    with pytest.raises(ValueError, match="validation"):
        DTWKNNClassifier(combine="logistic", progress=False).fit(tr, ytr)


def test_fit_combination_weights():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    good = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 400), 0, 1)
    noise = rng.random(400)
    w = clf_mod.fit_combination(np.column_stack([good, noise]), y)
    assert w[0] > 0.8 and w.sum() == pytest.approx(1.0)
    w2 = clf_mod.fit_combination(np.column_stack([good, good]), y)
    np.testing.assert_allclose(w2, [0.5, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="weights_grid"):
        DTWKNNClassifier(weights_grid=("cosine",), progress=False).fit(*views()[:2])


def test_old_format_models_still_load(tmp_path):
    import json

    tr, ytr, te, _ = views()
    m = DTWKNNClassifier(n_neighbors=3, progress=False).fit(tr, ytr)
    m.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    old = {k: meta[k] for k in ("params", "k_", "radius_", "variables_", "validation_table_")}
    for key in ("weights_grid", "per_variable", "combine", "combine_C"):
        del old["params"][key]
    (tmp_path / "m" / "model.json").write_text(json.dumps({"format": "dtw_knn/1", **old}))
    np.testing.assert_array_equal(
        DTWKNNClassifier.load(tmp_path / "m").predict_proba(te), m.predict_proba(te)
    )
