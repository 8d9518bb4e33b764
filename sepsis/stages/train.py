"""The train stage: one unit per (learner, regime, horizon, seed), each its own stage
folder, so an interrupted `make train` resumes where it stopped; the units' test-split
predictions."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sepsis.config import RunConfig, split_seeds
from sepsis.manifest import PipelineError, Stage, stage_fingerprint
from sepsis.stages.common import _asdict, _locked

log = logging.getLogger("sepsis.pipeline")

REGIMES = ("per_horizon", "train_once")
CHECKPOINT = "checkpoint"  # inside a training unit's folder while it is being fitted
SEARCH = "search"  # a unit's hyperparameter study (kept in the finished folder too)


@dataclass(frozen=True)
class Unit:
    """One training unit: a learner fitted at one horizon for one split seed."""

    learner: str
    regime: str
    horizon: int  # horizon the model is trained at (0 for train_once)
    seed: int

    def folder(self, models_dir: Path) -> Path:
        return models_dir / self.learner / self.regime / f"h{self.horizon}" / f"seed{self.seed}"


def plan_units(cfg: RunConfig) -> list[Unit]:
    """Every (learner, regime, horizon, seed) the config asks for."""
    units = []
    horizons = tuple(cfg.train.horizons)
    for seed in split_seeds(cfg):
        for learner in cfg.train.per_horizon:
            for h in horizons:
                units.append(Unit(learner, "per_horizon", h, seed))
        for learner in cfg.train.train_once:
            units.append(Unit(learner, "train_once", 0, seed))
    return units


def make_learner(cfg: RunConfig, name: str, seed: int, progress: bool):
    """A fresh estimator for learner `name` with the config's parameters."""
    from sepsis.config import _learner_classes

    cls = _learner_classes()[name]
    params = dict(cfg.learners.get(name, {}))
    import inspect

    sig = inspect.signature(cls.__init__).parameters
    if "progress" in sig and "progress" not in params:
        params["progress"] = progress
    if "seed" in sig and "seed" not in params:
        params["seed"] = seed
    return cls(**params)


def _set_threads(n: int) -> None:
    try:
        import torch

        torch.set_num_threads(n)
    except Exception:  # pragma: no cover
        pass
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except Exception:  # pragma: no cover
        pass


@_locked
def train(cfg: RunConfig, force: bool = False, progress: bool = True) -> Path:
    """Fit every planned unit (skipping current ones) and write test-split predictions."""
    from tqdm.auto import tqdm

    from data_prep.dataset import CohortDataset

    prepared = cfg.output_dir / "prepared"
    if not (prepared / "manifest.json").exists():
        raise PipelineError(
            f"no prepared cohort at {prepared}: run `sepsis prepare --config {cfg.config_file}` first"
        )
    _set_threads(cfg.train.threads)
    ds = CohortDataset.load(prepared)
    models_dir = cfg.output_dir / "models"
    units = plan_units(cfg)
    prepared_fp = stage_fingerprint(prepared)
    t0 = time.time()
    bar = tqdm(units, desc="train", unit="model", disable=not progress)
    for unit in bar:
        bar.set_postfix_str(f"{unit.learner} {unit.regime} h{unit.horizon} seed{unit.seed}")
        _train_unit(cfg, ds, unit, models_dir, prepared_fp, force=force, progress=progress)
    log.info("train: %d units in %.1f s", len(units), time.time() - t0)
    preds = collect_predictions(models_dir, units)
    if len(preds):
        print(
            "\nTest-split AUPRC (point estimates, mean over split seeds; `sepsis report` adds bootstrap CIs):"
        )
        print(point_summary(preds).to_string())
    return models_dir


def point_summary(preds: pd.DataFrame, metric: str = "auprc") -> pd.DataFrame:
    """Learner x horizon table of a metric's point estimate, averaged over split seeds."""
    from sepsis.evaluation.metrics import auprc, auroc

    fn = auprc if metric == "auprc" else auroc
    rows = []
    for (learner, regime, h, seed), g in preds.groupby(["learner", "regime", "horizon", "seed"]):
        ok = np.isfinite(g["score"].to_numpy(float))
        y, sc = g["y_true"].to_numpy()[ok], g["score"].to_numpy(float)[ok]
        val = fn(y, sc) if len(y) and 0 < y.sum() < len(y) else np.nan
        rows.append(
            {"learner": f"{learner} ({regime})", "horizon": int(h), "seed": seed, metric: val}
        )
    df = pd.DataFrame(rows).groupby(["learner", "horizon"])[metric].mean().unstack("horizon")
    df.columns = [f"{c}h" for c in df.columns]
    return df.round(3)


def _searched(cfg: RunConfig, unit: Unit) -> bool:
    search = cfg.mgp_tcn_search
    return search.enabled and unit.learner in search.learners


def _unit_config(cfg: RunConfig, unit: Unit) -> dict[str, Any]:
    out = {
        "unit": dataclasses.asdict(unit),
        "learner_params": cfg.learners.get(unit.learner, {}),
        "horizons": list(cfg.train.horizons),
        "shuffle_train_labels": cfg.train.shuffle_train_labels,
        # the removed random search's key, kept at 0 so that units trained before the
        # Optuna search existed keep their config hash (and are not retrained)
        "mgp_search_trials": 0,
    }
    if _searched(cfg, unit):
        out["mgp_tcn_search"] = _asdict(cfg.mgp_tcn_search)
    return out


def _view(ds, learner_view: str, h: int, split: str | None, seed: int):
    return (
        ds.irregular(h, split=split, seed=seed)
        if learner_view == "irregular"
        else ds.grid(h, split=split, seed=seed)
    )


def _unit_stage(
    cfg: RunConfig, unit: Unit, models_dir: Path, prepared_fp: str, force: bool = False
) -> Stage:
    """The stage of one training unit (its folder, config and input fingerprint)."""
    return Stage(
        "train",
        unit.folder(models_dir),
        _unit_config(cfg, unit),
        inputs={"prepared": prepared_fp},
        force=force,
        # an unfinished MGP-TCN fit's checkpoint (replaced on success) and a search's study
        scratch=(CHECKPOINT, SEARCH),
    )


def unfinished_units(cfg: RunConfig) -> list[tuple[Unit, str]]:
    """The planned training units without a current result, each with the reason."""
    prepared_fp = stage_fingerprint(cfg.output_dir / "prepared")
    models_dir = cfg.output_dir / "models"
    out = []
    for unit in plan_units(cfg):
        reason = _unit_stage(cfg, unit, models_dir, prepared_fp).stale_reason()
        if reason is not None:
            out.append((unit, "not trained" if reason == "no manifest" else reason))
    return out


def _describe_units(units: list[tuple[Unit, str]], n: int = 8) -> str:
    text = "; ".join(
        f"{u.learner} {u.regime} h{u.horizon} seed{u.seed} ({why})" for u, why in units[:n]
    )
    return text + (f"; and {len(units) - n} more" if len(units) > n else "")


def _train_unit(
    cfg: RunConfig, ds, unit: Unit, models_dir: Path, prepared_fp: str, force: bool, progress: bool
) -> Path:
    out = unit.folder(models_dir)
    stage = _unit_stage(cfg, unit, models_dir, prepared_fp, force=force)
    if stage.is_current():
        return out
    # MGP-TCN checkpoints live in the unit's own folder: the finished stage folder replaces
    # it (and the checkpoint with it), a crash leaves it for the next run to resume, --force
    # drops it; the classifier still refuses one written for other data or parameters
    ckpt = out / CHECKPOINT
    for scratch in (ckpt, out / SEARCH):
        if force and scratch.exists():
            log.info("train --force: removing %s", scratch)
            shutil.rmtree(scratch)
    horizons = [unit.horizon] if unit.regime == "per_horizon" else list(cfg.train.horizons)
    counts: dict[str, Any] = {}
    with stage.writing(counts) as tmp:
        rows = []
        if unit.learner == "sofa":
            rows = _sofa_scores(cfg, ds, unit, horizons)
        else:
            learner = make_learner(cfg, unit.learner, unit.seed, progress)
            if "checkpoint_dir" in learner.get_params():
                user_dir = learner.get_params().get("checkpoint_dir")
                if user_dir is not None:
                    log.info(
                        "%s.checkpoint_dir %s: the pipeline uses %s instead",
                        unit.learner,
                        user_dir,
                        ckpt,
                    )
                learner.set_params(checkpoint_dir=str(ckpt))
            X_tr, y_tr = _view(ds, learner.view, unit.horizon, "train", unit.seed)
            X_va, y_va = _view(ds, learner.view, unit.horizon, "val", unit.seed)
            if cfg.train.shuffle_train_labels:
                y_tr = np.random.default_rng(unit.seed).permutation(y_tr)
            t_fit = time.time()
            fitted = False
            if _searched(cfg, unit):
                learner, fitted = _search_unit(
                    cfg, unit, learner, out, tmp, counts, progress, (X_tr, y_tr, X_va, y_va)
                )
            if not fitted:
                learner.fit(X_tr, y_tr, X_val=X_va, y_val=y_va)
            counts["fit_seconds"] = round(time.time() - t_fit, 2)
            counts["n_train"] = int(len(y_tr))
            counts["n_val"] = int(len(y_va))
            learner.save(tmp / "model")
            hist = getattr(learner, "history_", None)
            if hist is not None and len(hist):
                hist = pd.DataFrame(hist)
                hist["learner"], hist["regime"], hist["horizon"], hist["seed"] = (
                    unit.learner,
                    unit.regime,
                    unit.horizon,
                    unit.seed,
                )
                hist.to_parquet(tmp / "history.parquet", index=False)
                hist.to_csv(tmp / "learning_curve.csv", index=False)
            table = getattr(learner, "variable_table_", None)
            if table:
                vt = pd.DataFrame(table)
                vt["prevalence"] = float(np.mean(y_va))
                vt["learner"], vt["regime"], vt["horizon"], vt["seed"] = (
                    unit.learner,
                    unit.regime,
                    unit.horizon,
                    unit.seed,
                )
                vt.to_csv(tmp / "variable_auprc.csv", index=False)
            from sepsis.evaluation.metrics import auprc

            val_scores = learner.predict_proba(X_va)[:, 1]
            counts["val_auprc"] = float(auprc(y_va, val_scores))
            # the test split is read only here, after the model and its hyperparameters are fixed
            for h in horizons:
                X_te, y_te = _view(ds, learner.view, h, "test", unit.seed)
                scores = learner.predict_proba(X_te)[:, 1]
                rows.append(_pred_frame(unit, h, X_te.stay_id, y_te, scores))
        preds = pd.concat(rows, ignore_index=True)
        preds.to_parquet(tmp / "predictions.parquet", index=False)
        counts["n_test"] = int(preds["stay_id"].nunique())
    return out  # the finished folder replaced the one holding the checkpoint


def _search_unit(cfg: RunConfig, unit: Unit, learner, out: Path, tmp: Path, counts, progress, data):
    """Run (or resume) the unit's hyperparameter search; returns (learner, fitted).

    The study lives in the unit's own folder (`out/search`), outside the temporary stage
    folder, so a crash leaves it for the next run to resume; a copy goes into the finished
    folder. The config's learner keys hold in every trial, the search draws the rest, on the
    training and validation splits only.
    """
    from models.mgp_tcn.search import search_hyperparameters

    X_tr, y_tr, X_va, y_va = data
    search = cfg.mgp_tcn_search
    base = {k: v for k, v in cfg.learners.get(unit.learner, {}).items() if k != "checkpoint_dir"}
    res = search_hyperparameters(
        X_tr,
        y_tr,
        X_va,
        y_va,
        search,
        base_params=base,
        storage_dir=out / SEARCH,
        seed=unit.seed,
        progress=progress,
    )
    ids = {
        "learner": unit.learner,
        "regime": unit.regime,
        "horizon": unit.horizon,
        "seed": unit.seed,
    }
    res.trials.assign(**ids).to_csv(tmp / "search_trials.csv", index=False)
    res.curves.assign(**ids).to_csv(tmp / "search_curves.csv", index=False)
    states = res.trials["state"].value_counts().to_dict()
    summary = {
        **ids,
        "best_params": res.best_params,
        "best_val_auprc": res.best_value,
        "trials": {k: int(v) for k, v in states.items()},
        "search_minutes": round(res.elapsed_seconds / 60, 2),
        "refit": res.model is None,
        "settings": _asdict(search),
    }
    (tmp / "search_best.json").write_text(json.dumps(summary, indent=2, default=str))
    shutil.copytree(out / SEARCH, tmp / SEARCH)
    counts["search_trials"] = summary["trials"]
    counts["search_minutes"] = summary["search_minutes"]
    if res.model is not None:
        return res.model, True
    learner.set_params(**res.best_params)
    return learner, False


def _pred_frame(unit: Unit, h: int, stay_id, y, scores, external: bool = False) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "learner": unit.learner,
            "horizon": np.int32(h),
            "seed": np.int32(unit.seed),
            "stay_id": np.asarray(stay_id, dtype=np.int64),
            "y_true": np.asarray(y, dtype=np.int8),
            "score": np.asarray(scores, dtype=np.float64),
            "regime": unit.regime,
            "external": external,
        }
    )


def _sofa_scores(cfg: RunConfig, ds, unit: Unit, horizons: list[int]) -> list[pd.DataFrame]:
    """The clinical baseline: SOFA increase at prediction time (no training)."""
    from models.baselines import sofa_increase_scores

    labels_hourly = pd.read_parquet(
        cfg.output_dir / "prepared" / "labels_hourly.parquet", columns=["stay_id", "hour", "sofa"]
    )
    cohort = ds.cohort.set_index("stay_id")
    ids = ds.stays_in("test", unit.seed)
    sub = cohort.loc[ids]
    rows = []
    for h in horizons:
        scores = sofa_increase_scores(
            labels_hourly,
            ids,
            sub["onset_hour"].to_numpy(float) - h,
            window_hours=cfg.cohort.window_hours,
        )
        rows.append(_pred_frame(unit, h, ids, sub["label"].to_numpy(), scores))
    return rows


def collect_predictions(models_dir: Path, units: list[Unit] | None = None) -> pd.DataFrame:
    """Concatenate the test-split predictions of finished training units."""
    files = (
        [u.folder(models_dir) / "predictions.parquet" for u in units]
        if units is not None
        else sorted(models_dir.rglob("predictions.parquet"))
    )
    frames = [pd.read_parquet(f) for f in files if f.exists()]
    if not frames:
        from sepsis.evaluation.metrics import PREDICTION_COLUMNS

        return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def collect_histories(models_dir: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(f) for f in sorted(models_dir.rglob("history.parquet"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
