"""MGPTCNClassifier: learning, GP gradients, class weighting, determinism, resume, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models.mgp_tcn.classifier as clf_mod
from data_prep.views import random_irregular_view
from models.mgp_tcn import MGPTCNClassifier

SMALL = dict(n_mc_samples=3, levels=2, hidden=16, batch_size=32, progress=False)


@pytest.fixture(scope="module")
def data():
    X, y = random_irregular_view(n=200, signal=1.5, seed=0)
    Xv, yv = random_irregular_view(n=80, signal=1.5, seed=1)
    return X, y, Xv, yv


def test_learns_and_trains_gp_parameters(data):
    X, y, Xv, yv = data
    m = MGPTCNClassifier(epochs=3, **SMALL).fit(X, y, Xv, yv)
    assert len(m.history_) == 3 and all(h["seconds"] > 0 for h in m.history_)
    assert m.best_val_auprc_ > yv.mean() + 0.3, (m.best_val_auprc_, yv.mean())
    gp = m.net_.gp
    assert abs(float(gp.lengthscale.detach()) - 1.0) > 1e-3  # init 1.0
    assert not torch.allclose(gp.task_factor(), torch.eye(4), atol=1e-3)  # init identity
    assert not torch.allclose(gp.noise(), torch.full((4,), 0.1), atol=1e-4)  # init 0.1
    assert m.pos_weight_ == pytest.approx((y == 0).sum() / (y == 1).sum())


def test_class_weight_balances_the_classes(data, monkeypatch):
    X, y, Xv, yv = data
    seen = {}
    orig = torch.nn.functional.cross_entropy

    def spy(logits, target, weight=None, **kw):
        seen["w"] = weight
        seen["t"] = target
        return orig(logits, target, weight=weight, **kw)

    monkeypatch.setattr(clf_mod.nn.functional, "cross_entropy", spy)
    MGPTCNClassifier(epochs=1, **SMALL).fit(X, y, Xv, yv)
    w = seen["w"].cpu().numpy()
    assert w[0] == 1.0 and w[1] == pytest.approx((y == 0).sum() / (y == 1).sum())
    # total weight of each class is equal over the training set
    assert (y == 1).sum() * w[1] == pytest.approx((y == 0).sum() * w[0])


def test_deterministic_for_a_seed_and_internal_validation_split(data):
    X, y, _, _ = data
    a = MGPTCNClassifier(epochs=1, **SMALL).fit(X, y)
    b = MGPTCNClassifier(epochs=1, **SMALL).fit(X, y)
    pa = a.predict_proba(X)
    np.testing.assert_array_equal(pa, a.predict_proba(X))
    np.testing.assert_array_equal(pa, b.predict_proba(X))
    c = MGPTCNClassifier(epochs=1, **{**SMALL, "seed": 1}).fit(X, y)
    assert not np.allclose(pa, c.predict_proba(X))


def test_resume_after_interruption_equals_uninterrupted(data, tmp_path, monkeypatch):
    X, y, Xv, yv = data
    params = dict(epochs=3, patience=5, dropout=0.1, **SMALL)
    full = MGPTCNClassifier(**params).fit(X, y, Xv, yv)
    calls = {"n": 0}
    orig = clf_mod.average_precision_score

    def crash_on_second_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return orig(*a, **k)

    monkeypatch.setattr(clf_mod, "average_precision_score", crash_on_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        MGPTCNClassifier(checkpoint_dir=str(tmp_path), **params).fit(X, y, Xv, yv)
    monkeypatch.setattr(clf_mod, "average_precision_score", orig)
    resumed = MGPTCNClassifier(checkpoint_dir=str(tmp_path), **params).fit(X, y, Xv, yv)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3]
    assert [h["val_auprc"] for h in resumed.history_] == [h["val_auprc"] for h in full.history_]
    np.testing.assert_allclose(resumed.predict_proba(Xv), full.predict_proba(Xv), atol=1e-6)
    # a checkpoint written with other parameters is discarded: trained from scratch, no error
    other = MGPTCNClassifier(checkpoint_dir=str(tmp_path), **{**params, "hidden": 8})
    fresh = MGPTCNClassifier(**{**params, "hidden": 8}).fit(X, y, Xv, yv)
    other.fit(X, y, Xv, yv)
    assert [h["val_auprc"] for h in other.history_] == [h["val_auprc"] for h in fresh.history_]


def test_early_stopping_restores_best_epoch(data):
    X, y, Xv, yv = data
    m = MGPTCNClassifier(epochs=6, patience=1, lr=0.05, **{k: v for k, v in SMALL.items()}).fit(
        X, y, Xv, yv
    )
    scores = [h["val_auprc"] for h in m.history_]
    assert m.best_val_auprc_ == max(scores) and m.history_[m.best_epoch_ - 1]["val_auprc"] == max(
        scores
    )
    if len(scores) < 6:  # stopped early: the last epoch did not improve on the best
        assert scores[-1] <= max(scores[:-1])
    from sklearn.metrics import average_precision_score

    assert average_precision_score(yv, m.predict_proba(Xv)[:, 1]) == pytest.approx(max(scores))


def test_dense_sampler_mixed_precision_and_grid_clipping(data):
    X, y, Xv, yv = data
    sub, ysub = X.subset(np.arange(60)), y[:60]
    dense = MGPTCNClassifier(epochs=1, sampler="dense", max_grid=5, **SMALL).fit(sub, ysub, Xv, yv)
    assert np.isfinite(dense.predict_proba(Xv)).all()
    bf16 = MGPTCNClassifier(epochs=1, mixed_precision=True, gp_dtype="float64", **SMALL).fit(
        sub, ysub, Xv, yv
    )
    p = bf16.predict_proba(Xv)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1)


def test_invalid_parameters_raise_naming_the_key(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="sampler"):
        MGPTCNClassifier(sampler="cholesky").fit(X, y)
    with pytest.raises(ValueError, match="n_mc_samples"):
        MGPTCNClassifier(n_mc_samples=0).fit(X, y)


def _scripted_val_scores(monkeypatch, scores):
    """Make the per-epoch validation AUPRC follow `scores`; return the state_dict per epoch."""
    import copy

    it = iter(scores)
    states = []
    orig_proba = MGPTCNClassifier._proba

    def proba(self, net, arr, device, n_samples=None):
        states.append(copy.deepcopy(net.state_dict()))
        return orig_proba(self, net, arr, device, n_samples)

    monkeypatch.setattr(MGPTCNClassifier, "_proba", proba)
    monkeypatch.setattr(clf_mod, "average_precision_score", lambda *a, **k: next(it))
    return states


def test_smoothed_early_stopping_stops_and_restores_the_best_epoch(data, monkeypatch):
    X, y, Xv, yv = data
    # smoothed over 2 epochs: 0.5, 0.6, 0.65 (best), 0.625, 0.525 -> stop after 2 bad epochs
    states = _scripted_val_scores(monkeypatch, [0.5, 0.7, 0.6, 0.65, 0.4, 0.9, 0.9])
    m = MGPTCNClassifier(epochs=7, patience=2, smoothing=2, **SMALL).fit(
        X.subset(np.arange(60)), y[:60], Xv, yv
    )
    assert [h["epoch"] for h in m.history_] == [1, 2, 3, 4, 5]
    assert [h["val_auprc_smoothed"] for h in m.history_] == pytest.approx(
        [0.5, 0.6, 0.65, 0.625, 0.525]
    )
    assert m.best_epoch_ == 3 and m.best_val_auprc_ == pytest.approx(0.65)
    assert m.stop_reason_ == "patience"
    restored = m.net_.state_dict()
    for key, value in states[2].items():  # the weights after epoch 3, not the last ones
        torch.testing.assert_close(restored[key], value)
    assert any(not torch.equal(states[4][k], v) for k, v in states[2].items())


def test_epoch_callback_stops_or_aborts_training(data):
    X, y, Xv, yv = data
    sub, ysub = X.subset(np.arange(60)), y[:60]
    seen = []
    m = MGPTCNClassifier(epochs=5, **SMALL).fit(
        sub, ysub, Xv, yv, epoch_callback=lambda rec: seen.append(rec) or rec["epoch"] == 2
    )
    assert [r["epoch"] for r in seen] == [1, 2] and len(m.history_) == 2
    assert m.stop_reason_ == "callback" and set(seen[0]) >= {"loss", "val_auprc", "lr"}

    class Abort(Exception):
        pass

    def abort(rec):
        raise Abort

    with pytest.raises(Abort):
        MGPTCNClassifier(epochs=3, **SMALL).fit(sub, ysub, Xv, yv, epoch_callback=abort)


def test_lr_schedules_and_gradient_clipping(data, monkeypatch):
    X, y, Xv, yv = data
    sub, ysub = X.subset(np.arange(40)), y[:40]
    cos = MGPTCNClassifier(epochs=3, patience=5, lr_schedule="cosine", **SMALL).fit(
        sub, ysub, Xv, yv
    )
    lrs = [h["lr"] for h in cos.history_]
    assert lrs[0] == pytest.approx(0.005) and lrs[0] > lrs[1] > lrs[2]
    # plateau: a flat validation curve halves the rate once lr_patience epochs are exceeded
    _scripted_val_scores(monkeypatch, [0.5] * 5)
    calls = {"n": 0}
    orig_clip = torch.nn.utils.clip_grad_norm_

    def clip(params, max_norm, *a, **k):
        calls["n"] += 1
        assert max_norm == 0.5
        return orig_clip(params, max_norm, *a, **k)

    monkeypatch.setattr(clf_mod.nn.utils, "clip_grad_norm_", clip)
    pl = MGPTCNClassifier(
        epochs=5, patience=10, lr_schedule="plateau", lr_patience=1, grad_clip=0.5, **SMALL
    ).fit(sub, ysub, Xv, yv)
    assert [h["lr"] for h in pl.history_] == pytest.approx([0.005, 0.005, 0.005, 0.0025, 0.0025])
    assert calls["n"] == 5 * 2  # every batch of every epoch (40 stays, batch 32)


def test_scheduler_state_survives_resume(data, tmp_path, monkeypatch):
    X, y, Xv, yv = data
    sub, ysub = X.subset(np.arange(40)), y[:40]
    params = dict(epochs=3, patience=5, lr_schedule="cosine", grad_clip=1.0, **SMALL)
    full = MGPTCNClassifier(**params).fit(sub, ysub, Xv, yv)
    orig = clf_mod.average_precision_score
    calls = {"n": 0}

    def crash_on_second_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return orig(*a, **k)

    monkeypatch.setattr(clf_mod, "average_precision_score", crash_on_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        MGPTCNClassifier(checkpoint_dir=str(tmp_path), **params).fit(sub, ysub, Xv, yv)
    monkeypatch.setattr(clf_mod, "average_precision_score", orig)
    resumed = MGPTCNClassifier(checkpoint_dir=str(tmp_path), **params).fit(sub, ysub, Xv, yv)
    assert [h["lr"] for h in resumed.history_] == [h["lr"] for h in full.history_]
    assert [h["val_auprc"] for h in resumed.history_] == [h["val_auprc"] for h in full.history_]


def test_more_mc_samples_at_prediction_time(data, tmp_path):
    X, y, Xv, yv = data
    m = MGPTCNClassifier(epochs=1, **SMALL).fit(X.subset(np.arange(60)), y[:60], Xv, yv)
    base = m.predict_proba(Xv)
    m.set_params(mc_samples_predict=SMALL["n_mc_samples"])
    np.testing.assert_array_equal(m.predict_proba(Xv), base)  # same count: same draws
    m.set_params(mc_samples_predict=12)
    more = m.predict_proba(Xv)
    assert not np.allclose(more, base) and np.allclose(more.sum(1), 1)
    np.testing.assert_array_equal(m.predict_proba(Xv), more)  # deterministic
    m.save(tmp_path / "m")
    again = MGPTCNClassifier.load(tmp_path / "m")
    assert again.mc_samples_predict == 12 and again.stop_reason_ == m.stop_reason_
    np.testing.assert_array_equal(again.predict_proba(Xv), more)
