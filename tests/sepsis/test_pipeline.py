"""End to end on a small synthetic database: stages, skip/redo, leakage checks, CLI, external runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sepsis import pipeline
from sepsis.cli import main
from sepsis.config import load_config
from sepsis.stages import train as train_stage

FAST = {
    # a stronger early signal than the default (which is tuned to be as hard as real data), so
    # that "real labels beat shuffled labels" is clear on a cohort this small
    "synthetic": {"n_patients": 400, "seed": 3, "signal_strength": 2.5},
    "cohort": {
        "split_seeds": [0],
        "dbsource": "all",
        "split_fractions": [0.5, 0.2, 0.3],
        "min_variable_observations": 20,
        "horizons": [0, 3, 7],
    },
    "train": {
        "per_horizon": ["logreg", "sofa"],
        "train_once": ["dtw_knn", "mgp_tcn"],
        "horizons": [0, 3, 7],
    },
    "dtw_knn": {"k_grid": [3, 5], "variables": ["heart_rate", "resp_rate", "mbp", "temperature"]},
    "mgp_tcn": {"epochs": 1, "n_mc_samples": 2, "levels": 2, "hidden": 8, "batch_size": 32},
    "evaluate": {"n_bootstrap": 50},
}


def _config(tmp_path: Path, name: str = "tiny", **extra) -> Path:
    data = {
        "name": name,
        "source": "synthetic",
        "data_dir": str(tmp_path / "db"),
        "output_dir": str(tmp_path / "runs" / name),
    }
    data.update(yaml.safe_load(yaml.safe_dump(FAST)))
    for key, val in extra.items():
        data.setdefault(key, {}).update(val)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One full run (prepare -> train -> evaluate -> report) shared by the tests below."""
    tmp = tmp_path_factory.mktemp("pipe")
    cfg = load_config(_config(tmp))
    pipeline.prepare(cfg, progress=False)
    pipeline.train(cfg, progress=False)
    pipeline.evaluate(cfg, progress=False)
    pipeline.report(cfg)
    return tmp, cfg


def _mtimes(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("manifest.json")}


def test_run_writes_every_stage_with_manifests(tiny_run):
    tmp, cfg = tiny_run
    out = cfg.output_dir
    for stage in ("extracted", "prepared", "evaluation", "reports"):
        man = json.loads((out / stage / "manifest.json").read_text())
        assert man["config_hash"] and man["wall_seconds"] >= 0
    assert (out / "reports" / "report.html").stat().st_size > 10_000
    units = pipeline.plan_units(cfg)
    assert len(units) == 2 * 3 + 2  # logreg and sofa at 3 horizons, dtw_knn and mgp_tcn once
    for u in units:
        assert (u.folder(out / "models") / "predictions.parquet").exists(), u
    preds = pd.read_parquet(out / "evaluation" / "predictions.parquet")
    # every learner scores every test stay at every horizon, once
    test_ids = set(
        pd.read_parquet(out / "prepared" / "splits.parquet").query("split == 'test'")["stay_id"]
    )
    for (learner, h), g in preds.groupby(["learner", "horizon"]):
        assert set(g["stay_id"]) == test_ids, (learner, h)
    metrics = pd.read_csv(out / "evaluation" / "metrics.csv")
    assert set(metrics["learner"]) == {"logreg", "sofa", "dtw_knn", "mgp_tcn"}
    assert metrics["auprc"].between(0, 1).all()


def test_rerun_skips_current_stages_and_redoes_changed_ones(tiny_run):
    tmp, cfg = tiny_run
    before = _mtimes(cfg.output_dir)
    pipeline.prepare(cfg, progress=False)
    pipeline.train(cfg, progress=False)
    assert _mtimes(cfg.output_dir) == before  # nothing changed -> nothing rewritten
    cfg2 = load_config(_config(tmp), ["logreg.C=0.5"])
    pipeline.train(cfg2, progress=False)
    after = _mtimes(cfg.output_dir)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed and all(k.startswith("models/logreg/") for k in changed)
    pipeline.prepare(cfg, force=True, progress=False)
    assert _mtimes(cfg.output_dir)["prepared/manifest.json"] != before["prepared/manifest.json"]


def _auroc_by_learner(preds: pd.DataFrame) -> pd.Series:
    from sepsis.evaluation.metrics import auroc

    per = preds.groupby(["learner", "horizon"]).apply(
        lambda g: auroc(g["y_true"].to_numpy(), g["score"].to_numpy()), include_groups=False
    )
    return per.groupby("learner").mean()


def test_real_labels_beat_chance_and_shuffled_labels_do_not(tiny_run):
    """Leak check: with training labels permuted, no learner should find anything.

    One permutation is drawn per unit seed and shared by the learners, so their shuffled
    scores are correlated draws from the null. The null AUROC of n_pos cases vs n_neg controls
    has standard deviation sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg)) (Hanley & McNeil);
    each learner's mean over horizons must lie within 3 of those of 0.5 (about 0.29 here:
    ~10 test cases), and with the real labels the same learners do clearly better.
    """
    tmp, cfg = tiny_run
    preds = pd.read_parquet(cfg.output_dir / "evaluation" / "predictions.parquet")
    real = _auroc_by_learner(preds)
    learned = ["logreg", "dtw_knn", "mgp_tcn"]
    assert real[learned].mean() > 0.65 and real[learned].max() > 0.7, real
    cfg_s = load_config(_config(tmp, name="shuffled", train={"shuffle_train_labels": True}))
    cfg_s.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg_s.output_dir / "prepared").symlink_to(cfg.output_dir / "prepared")  # same cohort
    pipeline.train(cfg_s, progress=False)
    shuffled = _auroc_by_learner(pipeline.collect_predictions(cfg_s.output_dir / "models"))
    y = preds.drop_duplicates("stay_id")["y_true"]
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    null_sd = np.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))
    for learner in learned:
        assert abs(shuffled[learner] - 0.5) < 3 * null_sd, (shuffled, n_pos, n_neg)
    assert shuffled[learned].mean() < real[learned].mean() - 0.15, (real, shuffled)


def test_training_never_reads_the_test_split(tiny_run, monkeypatch):
    """Every view of the test split is requested only after that unit's model is fitted,
    and no fit or hyperparameter choice ever receives a test stay."""
    tmp, cfg = tiny_run
    splits = pd.read_parquet(cfg.output_dir / "prepared" / "splits.parquet")
    test_ids = set(splits.loc[(splits["seed"] == 0) & (splits["split"] == "test"), "stay_id"])
    events: list[tuple[str, str]] = []
    # the train stage looks its helpers up in its own module (sepsis.stages.train)
    orig_view, orig_make = train_stage._view, train_stage.make_learner

    def spy_view(ds, view, h, split, seed):
        X, y = orig_view(ds, view, h, split, seed)
        events.append(("view", split))
        if split != "test":
            assert not set(X.stay_id.tolist()) & test_ids
        return X, y

    def spy_make(cfg_, name, seed, progress):
        learner = orig_make(cfg_, name, seed, progress)
        fit = learner.fit

        def spy_fit(X, y, X_val=None, y_val=None):
            for view in (X, X_val):
                assert not set(view.stay_id.tolist()) & test_ids
            events.append(("fit", name))
            return fit(X, y, X_val=X_val, y_val=y_val)

        learner.fit = spy_fit
        return learner

    monkeypatch.setattr(train_stage, "_view", spy_view)
    monkeypatch.setattr(train_stage, "make_learner", spy_make)
    pipeline.train(cfg, force=True, progress=False)
    fits = [i for i, e in enumerate(events) if e[0] == "fit"]
    assert len(fits) == 3 + 2  # logreg per horizon, dtw_knn and mgp_tcn once
    start = 0
    for i in fits:  # between one fit and the next unit's fit: only train/val views before it
        before = [split for kind, split in events[start:i] if kind == "view"]
        assert before and before[-2:] == ["train", "val"], events[start:i]
        start = i + 1
    assert ("view", "test") in events


def test_external_validation_uses_other_runs_models(tiny_run, tmp_path):
    tmp, cfg = tiny_run
    other = load_config(_config(tmp_path, name="other", synthetic={"seed": 11, "n_patients": 200}))
    pipeline.prepare(other, progress=False)
    ev = pipeline.evaluate(other, progress=False, models_run=cfg.output_dir)
    preds = pd.read_parquet(ev / "predictions.parquet")
    assert preds["external"].all()
    cohort = pd.read_parquet(other.output_dir / "prepared" / "cohort.parquet")
    for (learner, h), g in preds.groupby(["learner", "horizon"]):
        assert set(g["stay_id"]) == set(cohort["stay_id"]), (learner, h)
    assert {"logreg", "dtw_knn", "mgp_tcn"} <= set(preds["learner"])
    rep = pipeline.report(other, models_run=cfg.output_dir)
    assert (rep / "report.md").exists()
    with pytest.raises(pipeline.PipelineError, match="another run"):
        pipeline.evaluate(cfg, models_run=cfg.output_dir, progress=False)


def test_cli_reports_config_errors_and_missing_stages(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: synthetic\ncohort:\n  contol_ratio: 2\n")
    assert main(["prepare", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert (
        "cohort.contol_ratio" in err and str(bad) in err and "did you mean 'control_ratio'" in err
    )
    ok = _config(tmp_path, name="empty")
    assert main(["train", "--config", str(ok), "--no-progress"]) == 1
    assert "run `sepsis prepare" in capsys.readouterr().err


def test_cli_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for cmd in ("generate", "prepare", "train", "evaluate", "report", "run"):
        assert cmd in text


def test_predictions_are_valid_probability_like_scores(tiny_run):
    tmp, cfg = tiny_run
    preds = pd.read_parquet(cfg.output_dir / "evaluation" / "predictions.parquet")
    learned = preds[preds["learner"] != "sofa"]
    assert np.isfinite(learned["score"]).all()
    assert learned["score"].between(0, 1).all()


def test_tuned_learners_search_resume_and_never_see_test_stays(tiny_run, monkeypatch):
    """The tuned variants: their own rows, the search's study in the unit folder (resumed by a
    larger budget without redoing trials), learning curves, per-variable AUPRC, report."""
    from models.dtw_knn import DTWKNNClassifier
    from models.mgp_tcn import MGPTCNClassifier

    tmp, cfg = tiny_run
    splits = pd.read_parquet(cfg.output_dir / "prepared" / "splits.parquet")
    test_ids = set(splits.loc[(splits["seed"] == 0) & (splits["split"] == "test"), "stay_id"])
    fits: list[str] = []
    for cls in (MGPTCNClassifier, DTWKNNClassifier):
        orig = cls.fit

        def spy(self, X, y, X_val=None, y_val=None, _orig=orig, **kw):
            for view in (X, X_val):
                assert view is None or not set(view.stay_id.tolist()) & test_ids
            fits.append(type(self).__name__)
            return _orig(self, X, y, X_val, y_val, **kw)

        monkeypatch.setattr(cls, "fit", spy)
    extra = dict(
        train={"per_horizon": [], "train_once": ["mgp_tcn", "mgp_tcn_tuned", "dtw_knn_tuned"]},
        mgp_tcn_search={
            "trials": 2,
            "pruner": "none",
            "space": {"hidden": [4, 8], "levels": [1, 2], "n_mc_samples": [2], "batch_size": [32]},
            "predict_samples": [4],
        },
        mgp_tcn_tuned={"epochs": 2, "patience": 2, "mc_samples_predict": None},
        dtw_knn_tuned={
            "k_grid": [3, 5],
            "radius_grid": [None, 2],
            "variables": FAST["dtw_knn"]["variables"],
        },
    )
    cfg_s = load_config(_config(tmp, name="tuned", **extra))
    cfg_s.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg_s.output_dir / "prepared").symlink_to(cfg.output_dir / "prepared")
    pipeline.train(cfg_s, progress=False)
    models = cfg_s.output_dir / "models"
    unit = pipeline.Unit("mgp_tcn_tuned", "train_once", 0, 0).folder(models)
    trials = pd.read_csv(unit / "search_trials.csv")
    assert trials["state"].tolist() == ["complete", "complete"]
    assert (unit / "search" / "study.sqlite3").exists() and (unit / "search_curves.csv").exists()
    best = json.loads((unit / "search_best.json").read_text())
    params = json.loads((unit / "model" / "params.json").read_text())
    top = trials.loc[trials["val_auprc"].idxmax()]
    assert params["levels"] == top["levels"] and params["hidden"] == top["hidden"]
    assert params["epochs"] == 2 and params["smoothing"] == 3  # config and variant keys hold
    assert best["best_params"]["hidden"] == params["hidden"] and best["refit"] is False
    curve = pd.read_csv(unit / "learning_curve.csv")
    assert {"epoch", "loss", "val_auprc", "val_auprc_smoothed"} <= set(curve.columns)
    # the paper's MGP-TCN is not searched: same hash as before the search existed
    paper = pipeline.Unit("mgp_tcn", "train_once", 0, 0).folder(models)
    assert not (paper / "search_trials.csv").exists()
    man = json.loads((paper / "manifest.json").read_text())
    assert man["config"]["mgp_search_trials"] == 0 and "mgp_tcn_search" not in man["config"]
    vt = pd.read_csv(
        pipeline.Unit("dtw_knn_tuned", "train_once", 0, 0).folder(models) / "variable_auprc.csv"
    )
    assert (
        set(vt["variable"]) == set(FAST["dtw_knn"]["variables"]) and vt["auprc"].between(0, 1).all()
    )
    # a larger trial budget continues the same study: one more trial, none redone
    n_mgp = fits.count("MGPTCNClassifier")
    more = {**extra, "mgp_tcn_search": {**extra["mgp_tcn_search"], "trials": 3}}
    cfg_m = load_config(_config(tmp, name="tuned", **more))
    pipeline.train(cfg_m, progress=False)
    assert fits.count("MGPTCNClassifier") == n_mgp + 1
    again = pd.read_csv(unit / "search_trials.csv")
    assert again["trial"].tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(again.iloc[:2], trials, check_dtype=False)
    pipeline.evaluate(cfg_m, progress=False)
    text = (pipeline.report(cfg_m) / "report.md").read_text()
    for words in ("Hyperparameter search", "mgp_tcn_tuned", "Per-variable validation AUPRC"):
        assert words in text, words
    metrics = pd.read_csv(cfg_m.output_dir / "evaluation" / "metrics.csv")
    assert {"mgp_tcn", "mgp_tcn_tuned", "dtw_knn_tuned"} == set(metrics["learner"])
