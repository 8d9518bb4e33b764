"""Issue 17: model folders never run code or pick paths; checkpoints are data-keyed; params ranged."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import yaml

import models.mgp_tcn.classifier as clf_mod
from data_prep.views import random_grid_view, random_irregular_view
from models.base import ModelFormatError, ParameterError
from models.baselines import GradientBoostingBaseline, LogisticRegressionBaseline
from models.dtw_knn import DTWKNNClassifier
from models.mgp_tcn import MGPTCNClassifier
from sepsis import pipeline
from sepsis.config import ConfigError, _learner_classes, build_learner_params, load_config


class _MakesSentinel:
    """Unpickling this calls os.mkdir(path): stands in for any command a pickle could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


BASELINES = [
    pytest.param(LogisticRegressionBaseline, {}, id="logreg"),
    pytest.param(GradientBoostingBaseline, {"max_iter": 20, "min_samples_leaf": 5}, id="gbm"),
]


@pytest.mark.parametrize("cls, kw", BASELINES)
def test_crafted_joblib_model_is_never_unpickled(cls, kw, tmp_path):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_MakesSentinel(proof)))
    assert proof.is_dir()  # the payload is live: unpickling it does run the command
    sentinel = tmp_path / "sentinel"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.joblib").write_bytes(pickle.dumps({"model": _MakesSentinel(sentinel)}))
    with pytest.raises(ModelFormatError, match=r"model\.joblib.*never loaded"):
        cls.load(folder)
    assert not sentinel.exists()


@pytest.mark.parametrize("cls, kw", BASELINES)
def test_baselines_store_no_pickle_and_round_trip_exactly(cls, kw, tmp_path):
    X, y = random_grid_view(n=120, n_variables=3, max_len=10, seed=0, signal=1.0)
    Xt, _ = random_grid_view(n=80, n_variables=3, max_len=10, seed=1, signal=1.0)
    est = cls(**kw).fit(X, y)
    est.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.npz"]
    with np.load(tmp_path / "m" / "model.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    back = cls.load(tmp_path / "m")
    assert np.array_equal(back.predict_proba(Xt), est.predict_proba(Xt))
    assert np.array_equal(back.predict(Xt), est.predict(Xt))
    # an npz that would need unpickling is refused, and its payload never runs
    sentinel = tmp_path / "sentinel"
    np.savez(tmp_path / "m" / "model.npz", coef=np.array([_MakesSentinel(sentinel)], dtype=object))
    with pytest.raises(ModelFormatError, match="without unpickling"):
        cls.load(tmp_path / "m")
    assert not sentinel.exists()


def test_gbm_tree_with_a_cycle_is_refused(tmp_path):
    X, y = random_grid_view(n=120, n_variables=3, max_len=10, seed=0, signal=1.0)
    GradientBoostingBaseline(max_iter=5, min_samples_leaf=5).fit(X, y).save(tmp_path / "m")
    with np.load(tmp_path / "m" / "model.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    nodes = arrays["nodes_0_0"].copy()
    inner = np.flatnonzero(nodes["is_leaf"] == 0)
    assert len(inner) > 0
    nodes["left"][inner[-1]] = 0  # points back at the root: the compiled walk would never end
    arrays["nodes_0_0"] = nodes
    np.savez(tmp_path / "m" / "model.npz", **arrays)
    with pytest.raises(ModelFormatError, match="nodes_0_0 node"):
        GradientBoostingBaseline.load(tmp_path / "m")


def test_loaded_dtw_model_ignores_a_saved_cache_dir(tmp_path):
    X, y = random_grid_view(n=30, n_variables=2, max_len=8, seed=0, signal=1.0)
    Xt, _ = random_grid_view(n=10, n_variables=2, max_len=8, seed=1, signal=1.0)
    est = DTWKNNClassifier(n_neighbors=3, progress=False).fit(X, y)
    est.save(tmp_path / "m")
    meta_file = tmp_path / "m" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["params"]["cache_dir"] = str(tmp_path / "x")
    meta_file.write_text(json.dumps(meta))
    back = DTWKNNClassifier.load(tmp_path / "m")
    assert back.cache_dir is None
    np.testing.assert_array_equal(back.predict_proba(Xt), est.predict_proba(Xt))
    assert not (tmp_path / "x").exists()


def test_loaded_mgp_model_ignores_a_saved_checkpoint_dir(tmp_path):
    X, y = random_irregular_view(n=40, seed=0, signal=1.0)
    est = MGPTCNClassifier(epochs=1, n_mc_samples=2, levels=1, hidden=4, progress=False)
    est.fit(X, y).save(tmp_path / "m")
    params = json.loads((tmp_path / "m" / "params.json").read_text())
    params["checkpoint_dir"] = str(tmp_path / "x")
    (tmp_path / "m" / "params.json").write_text(json.dumps(params))
    assert MGPTCNClassifier.load(tmp_path / "m").checkpoint_dir is None


# --- MGP-TCN checkpoints ------------------------------------------------------------------

TINY = dict(n_mc_samples=2, levels=1, hidden=8, batch_size=32, epochs=2, progress=False)


@pytest.fixture(scope="module")
def two_cohorts():
    a = random_irregular_view(n=60, signal=1.5, seed=0), random_irregular_view(n=30, seed=1)
    b = random_irregular_view(n=60, signal=1.5, seed=5), random_irregular_view(n=30, seed=6)
    return a, b


def test_checkpoint_from_other_data_is_retrained(two_cohorts, tmp_path):
    ((Xa, ya), (Va, va)), ((Xb, yb), (Vb, vb)) = two_cohorts
    ck = str(tmp_path / "ck")
    on_a = MGPTCNClassifier(checkpoint_dir=ck, **TINY).fit(Xa, ya, Va, va)
    assert (tmp_path / "ck" / "checkpoint.pt").exists()  # finished: epoch 2 of 2 saved
    on_b = MGPTCNClassifier(checkpoint_dir=ck, **TINY).fit(Xb, yb, Vb, vb)
    fresh_b = MGPTCNClassifier(**TINY).fit(Xb, yb, Vb, vb)
    assert [h["epoch"] for h in on_b.history_] == [1, 2]
    assert [h["loss"] for h in on_b.history_] == [h["loss"] for h in fresh_b.history_]
    assert [h["loss"] for h in on_b.history_] != [h["loss"] for h in on_a.history_]
    np.testing.assert_array_equal(on_b.predict_proba(Vb), fresh_b.predict_proba(Vb))
    assert not np.array_equal(on_b.predict_proba(Vb), on_a.predict_proba(Vb))


def test_checkpoint_on_the_same_data_resumes(two_cohorts, tmp_path, monkeypatch):
    ((Xa, ya), (Va, va)), _ = two_cohorts
    ck = str(tmp_path / "ck")
    first = MGPTCNClassifier(checkpoint_dir=ck, **TINY).fit(Xa, ya, Va, va)
    trained = []
    orig = clf_mod.MGPTCNClassifier._write_checkpoint
    monkeypatch.setattr(
        clf_mod.MGPTCNClassifier,
        "_write_checkpoint",
        lambda self, *a: trained.append(a[-1]["epoch"]) or orig(self, *a),
    )
    again = MGPTCNClassifier(checkpoint_dir=ck, **TINY).fit(Xa, ya, Va, va)
    assert trained == []  # both epochs came from the checkpoint
    assert again.history_ == first.history_
    np.testing.assert_array_equal(again.predict_proba(Va), first.predict_proba(Va))


# --- the pipeline's checkpoint folder -----------------------------------------------------


class _FakeDataset:
    """The two methods `_train_unit` calls, on random irregular views per split."""

    def irregular(self, h, split, seed):
        return random_irregular_view(n=40, signal=1.5, seed={"train": 0, "val": 1}.get(split, 2))


def _cfg(tmp_path):
    data = {
        "name": "ck",
        "source": "synthetic",
        "data_dir": str(tmp_path / "db"),
        "output_dir": str(tmp_path / "run"),
        "train": {"per_horizon": [], "train_once": ["mgp_tcn"], "horizons": [0]},
        "cohort": {"horizons": [0], "split_seeds": [0]},
        "mgp_tcn": {k: v for k, v in TINY.items() if k != "progress"},
    }
    (tmp_path / "ck.yaml").write_text(yaml.safe_dump(data))
    return load_config(tmp_path / "ck.yaml", check_paths=False)


def _crash_in_epoch_two(monkeypatch):
    from sklearn.metrics import average_precision_score

    calls = {"n": 0}

    def crash(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return average_precision_score(*a, **k)

    monkeypatch.setattr(clf_mod, "average_precision_score", crash)


def _spy_resume(monkeypatch) -> list[bool]:
    """Calls of MGPTCNClassifier._resume: True where the checkpoint was used."""
    used = []
    orig = clf_mod.MGPTCNClassifier._resume

    def spy(self, *a):
        state = orig(self, *a)
        used.append(state is not None)
        return state

    monkeypatch.setattr(clf_mod.MGPTCNClassifier, "_resume", spy)
    return used


def _crashed_unit(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    unit = pipeline.Unit("mgp_tcn", "train_once", 0, 0)
    models_dir = cfg.output_dir / "models"
    _crash_in_epoch_two(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        pipeline._train_unit(cfg, _FakeDataset(), unit, models_dir, "fp", False, False)
    monkeypatch.setattr(clf_mod, "average_precision_score", _real_ap())
    out = unit.folder(models_dir)
    assert (out / "checkpoint" / "checkpoint.pt").exists()  # left for the next run
    assert not (out / "manifest.json").exists()
    return cfg, unit, models_dir, out


def _real_ap():
    from sklearn.metrics import average_precision_score

    return average_precision_score


def test_pipeline_checkpoint_lives_in_the_unit_and_goes_with_it(tmp_path, monkeypatch):
    cfg, unit, models_dir, out = _crashed_unit(tmp_path, monkeypatch)
    used = _spy_resume(monkeypatch)
    pipeline._train_unit(cfg, _FakeDataset(), unit, models_dir, "fp", False, False)
    assert used == [True]  # resumed after epoch 1
    assert (out / "manifest.json").exists() and not (out / "checkpoint").exists()
    hist = json.loads((out / "manifest.json").read_text())
    assert hist["stage"] == "train"
    # the saved model does not point at the (gone) checkpoint once loaded
    assert MGPTCNClassifier.load(out / "model").checkpoint_dir is None


def test_pipeline_force_drops_the_checkpoint(tmp_path, monkeypatch):
    cfg, unit, models_dir, out = _crashed_unit(tmp_path, monkeypatch)
    used = _spy_resume(monkeypatch)
    pipeline._train_unit(cfg, _FakeDataset(), unit, models_dir, "fp", True, False)
    assert used == []  # the checkpoint was gone before training began
    assert (out / "manifest.json").exists() and not (out / "checkpoint").exists()


# --- parameter ranges ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "learner, key, value",
    [
        ("mgp_tcn", "epochs", -3),
        ("mgp_tcn", "lr", -1),
        ("mgp_tcn", "gp_dtype", "float8"),
        ("mgp_tcn", "device", "tpu"),
        ("gbm", "max_iter", 0),
        ("gbm", "learning_rate", 0),
        ("logreg", "C", 0),
        ("dtw_knn", "weights", "cosine"),
        ("dtw_knn", "k_grid", [0, 3]),
        ("dtw_knn", "n_jobs", 0),
    ],
)
def test_out_of_range_learner_params_are_config_errors_naming_the_key(learner, key, value):
    cls = _learner_classes()[learner]
    with pytest.raises(ConfigError, match=rf"^{learner}\.{key}: "):
        build_learner_params(cls, {key: value}, learner)
    with pytest.raises(ParameterError, match=rf"^{key}: ") as err:
        cls(**{key: value}).validate_params()
    assert err.value.key == key


def test_out_of_range_params_are_refused_by_fit():
    X, y = random_grid_view(n=30, seed=0, signal=1.0)
    with pytest.raises(ParameterError, match="max_iter"):
        GradientBoostingBaseline(max_iter=0).fit(X, y)
    Xi, yi = random_irregular_view(n=30, seed=0)
    with pytest.raises(ParameterError, match="epochs"):
        MGPTCNClassifier(epochs=-3, progress=False).fit(Xi, yi)


@pytest.mark.parametrize("learner", ["mgp_tcn", "dtw_knn", "logreg", "gbm"])
def test_defaults_pass_and_every_parameter_has_a_range(learner):
    cls = _learner_classes()[learner]
    assert set(cls._parameter_constraints) == set(cls().get_params())
    cls().validate_params()
    assert build_learner_params(cls, {}, learner) == {}
