"""MGP-TCN hyperparameter search with Optuna, by validation AUPRC (PIPELINE.md section 4).

TPE (seeded) draws each trial's parameters from the paper's space (`DEFAULT_SPACE`: TCN
levels, kernel, hidden channels, batch size, learning rate, L2, dropout, plus the number of
MC samples); every trial is one `MGPTCNClassifier` fit on the training split that reports its
per-epoch (smoothed) validation AUPRC to a pruner (median or Hyperband), which stops trials
that fall behind the others. After a finished fit the trial also scores each candidate
``mc_samples_predict`` on validation and keeps the best; that score is the trial's value.

Budget: ``trials`` finished (complete or pruned) trials, and an optional wall-time budget
``budget_minutes`` over the whole search, counted across resumed runs. Optuna checks its
timeout only between trials, so each epoch also checks the deadline: a trial still running at
the deadline stops like early stopping (its best epoch restored) and counts as complete,
marked ``stopped = budget``.

Resume: the study lives in an SQLite file (``storage_dir/study.sqlite3``). A later call with
the same data, fixed parameters and space continues the same study: finished trials are never
redone, a trial that was running when the process died (or failed) is re-queued once with the
same parameters, and the time already spent counts against the budget. A study file written
for other data or parameters is discarded (logged) and the search starts afresh.

When every trial trains exactly as the final model would (``train_fraction = 1`` and no
``max_epochs``), the best trial's fitted model is kept (``storage_dir/best_model``) and is the
result: no refit. Otherwise the caller refits the best parameters on the full training split.
Test stays never reach this module: trials see the training and validation views only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from data_prep.views import IrregularView
from models.mgp_tcn.classifier import MGPTCNClassifier
from models.mgp_tcn.search_space import (  # noqa: F401  (re-exported)
    DEFAULT_SPACE,
    LOG_SCALE,
    PRUNERS,
    SEARCHABLE,
    SearchParams,
    resolve_space,
)

logger = logging.getLogger(__name__)

STUDY_FILE = "study.sqlite3"
BEST_MODEL = "best_model"


@dataclass
class SearchResult:
    """What a search found: the best parameters, and the tables the report shows."""

    best_params: dict[str, Any]  # full MGPTCNClassifier parameters of the best trial
    best_value: float  # its validation AUPRC
    model: MGPTCNClassifier | None  # the best trial's fitted model (None: refit needed)
    trials: pd.DataFrame  # one row per trial, pruned and failed ones included, with state
    curves: pd.DataFrame  # per trial and epoch: loss, val AUPRC (raw and smoothed), lr
    study_path: Path | None
    elapsed_seconds: float  # search time over all resumed runs


def _fingerprint(X, y, X_val, y_val, fixed: dict[str, Any], s: SearchParams, seed: int) -> str:
    """What a study is valid for: the data, the fixed parameters and the search definition."""
    h = hashlib.sha256()
    for view in (X, X_val):
        for a in (view.times, view.var_idx, view.values, view.mask, view.grid_len):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    for lab in (y, y_val):
        h.update(np.ascontiguousarray(np.asarray(lab, dtype=np.int64)).tobytes())
    ident = {
        "fixed": fixed,
        "space": {k: repr(v) for k, v in sorted(resolve_space(s.space).items())},
        "train_fraction": s.train_fraction,
        "max_epochs": s.max_epochs,
        "predict_samples": list(s.predict_samples),
        "seed": seed,
    }
    h.update(json.dumps(ident, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def _make_pruner(s: SearchParams, epochs: int):
    import optuna

    if s.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=s.startup_trials, n_warmup_steps=s.warmup_epochs
        )
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, s.warmup_epochs), max_resource=max(epochs, 1), reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def _save_model_atomic(model: MGPTCNClassifier, dest: Path) -> None:
    tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}"
    model.save(tmp)
    if dest.exists():
        trash = dest.parent / f".trash-{dest.name}-{uuid.uuid4().hex[:8]}"
        os.replace(dest, trash)
        os.replace(tmp, dest)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def _open_study(path: Path | None, fingerprint: str, make_sampler, pruner):
    """The study (new, or resumed from `path`), with stale RUNNING trials marked failed.

    `make_sampler(n)` gets the number of trials the study already holds: a resumed search
    seeds its sampler anew with it, so it does not replay the draws of the first run.
    """
    import optuna
    from optuna.trial import TrialState

    if path is None:
        study = optuna.create_study(direction="maximize", sampler=make_sampler(0), pruner=pruner)
        return study, None
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path.resolve()}"
    n_before = 0
    if path.exists():
        try:
            old = optuna.load_study(study_name="mgp_tcn", storage=url)
            ok = old.user_attrs.get("fingerprint") == fingerprint
            n_before = len(old.get_trials(deepcopy=False)) if ok else 0
        except Exception as err:  # a damaged or foreign file: never trusted, never fatal
            logger.warning("%s: unreadable study (%s); starting a new search", path, err)
            ok = False
        if not ok:
            logger.warning("%s: study written for other data, parameters or space; discarded", path)
            path.unlink()
            shutil.rmtree(path.parent / BEST_MODEL, ignore_errors=True)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(
        study_name="mgp_tcn",
        storage=storage,
        direction="maximize",
        sampler=make_sampler(n_before),
        pruner=pruner,
        load_if_exists=True,
    )
    study.set_user_attr("fingerprint", fingerprint)
    # the caller holds the run lock, so a trial still RUNNING was cut off by a crash
    sid = storage.get_study_id_from_name("mgp_tcn")
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tid = storage.get_trial_id_from_study_id_trial_number(sid, t.number)
        storage.set_trial_state_values(tid, state=TrialState.FAIL)
        logger.warning("search: trial %d was interrupted; it is queued again", t.number)
    retried = set(study.user_attrs.get("retried", []))
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.number not in retried and t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            retried.add(t.number)
    study.set_user_attr("retried", sorted(retried))
    return study, storage


def _py(v: Any) -> Any:
    """numpy scalar -> python scalar (parameters stay JSON-serialisable)."""
    return v.item() if hasattr(v, "item") else v


def search_hyperparameters(
    X: IrregularView,
    y,
    X_val: IrregularView,
    y_val,
    settings: SearchParams,
    base_params: dict[str, Any] | None = None,
    storage_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SearchResult:
    """Run (or resume) the search; see the module docstring. `base_params` hold in every
    trial except where the space draws a value; `seed` seeds every trial's fit (the same for
    all trials, so they differ only in their parameters) and, added to
    ``settings.sampler_seed``, the TPE sampler."""
    import optuna
    from optuna.trial import TrialState

    if settings.trials < 1:
        raise ValueError(f"trials: expected >= 1 for a search, got {settings.trials}")
    dims = resolve_space(settings.space)
    y, y_val = np.asarray(y, dtype=np.int64), np.asarray(y_val, dtype=np.int64)
    fixed = {
        k: v for k, v in dict(base_params or {}).items() if k not in ("checkpoint_dir", "progress")
    }
    fixed["seed"] = int(seed)
    trial_epochs = settings.max_epochs or int(
        fixed.get("epochs", MGPTCNClassifier().get_params()["epochs"])
    )
    if settings.train_fraction < 1:
        idx, _ = train_test_split(
            np.arange(len(y)), train_size=settings.train_fraction, stratify=y, random_state=seed
        )
        X_t, y_t = X.subset(np.sort(idx)), y[np.sort(idx)]
    else:
        X_t, y_t = X, y
    fingerprint = _fingerprint(X, y, X_val, y_val, fixed, settings, seed)
    storage_dir = Path(storage_dir) if storage_dir is not None else None
    study_path = storage_dir / STUDY_FILE if storage_dir is not None else None

    def make_sampler(n_trials_before: int):
        return optuna.samplers.TPESampler(
            seed=(settings.sampler_seed + seed) * 100_003 + n_trials_before,
            n_startup_trials=settings.startup_trials,
        )

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study, storage = _open_study(
            study_path, fingerprint, make_sampler, _make_pruner(settings, trial_epochs)
        )
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        done = len(study.get_trials(deepcopy=False, states=finished))
        elapsed0 = float(study.user_attrs.get("elapsed_seconds", 0.0))
        budget = None if settings.budget_minutes is None else 60.0 * settings.budget_minutes
        remaining_time = None if budget is None else budget - elapsed0
        remaining = settings.trials - done
        t_start = time.time()
        deadline = None if remaining_time is None else t_start + remaining_time
        candidates: list[int | None] = [fixed.get("mc_samples_predict")]
        candidates += [n for n in settings.predict_samples if n not in candidates]
        if done:
            logger.info(
                "search: resuming %s with %d finished trials (%.1f min spent)",
                study_path,
                done,
                elapsed0 / 60,
            )

        kept: dict[str, Any] = {}  # the best trial's fitted model of this run

        def spent() -> float:
            return elapsed0 + time.time() - t_start

        def objective(trial) -> float:
            draw = {name: _py(d.suggest(trial)) for name, d in dims.items()}
            params = {**fixed, **draw, "progress": False, "checkpoint_dir": None}
            params["epochs"] = trial_epochs
            rows: list[dict[str, Any]] = []
            t0 = time.time()

            def on_epoch(rec: dict[str, Any]) -> bool:
                rows.append({k: _py(v) for k, v in rec.items()})
                trial.set_user_attr("history", rows)
                study.set_user_attr("elapsed_seconds", spent())
                trial.report(float(rec["val_auprc_smoothed"]), int(rec["epoch"]))
                if trial.should_prune():
                    trial.set_user_attr("stopped", "pruned")
                    trial.set_user_attr("seconds", time.time() - t0)
                    raise optuna.TrialPruned()
                if deadline is not None and time.time() >= deadline:
                    trial.set_user_attr("stopped", "budget")
                    return True
                return False

            model = MGPTCNClassifier(**params).fit(X_t, y_t, X_val, y_val, epoch_callback=on_epoch)
            scores = {}
            for c in candidates:
                model.set_params(mc_samples_predict=c)
                scores[c] = float(average_precision_score(y_val, model.predict_proba(X_val)[:, 1]))
            best_c = max(candidates, key=lambda c: scores[c])  # ties: the first (cheapest)
            model.set_params(mc_samples_predict=best_c)
            value = scores[best_c]
            trial.set_user_attr("mc_samples_predict", best_c)
            trial.set_user_attr("best_epoch", model.best_epoch_)
            trial.set_user_attr("epochs_run", len(model.history_))
            trial.set_user_attr("seconds", time.time() - t0)
            if trial.user_attrs.get("stopped") is None:
                trial.set_user_attr("stopped", model.stop_reason_)
            if not settings.refit:
                complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if not complete or value > max(t.value for t in complete):
                    kept.update(trial=trial.number, model=model)
                    if storage_dir is not None:  # so that a resumed search needs no refit
                        _save_model_atomic(model, storage_dir / BEST_MODEL)
                        study.set_user_attr("best_model_trial", trial.number)
            return value

        bar = tqdm(
            total=max(remaining, 0), desc="MGP-TCN search", unit="trial", disable=not progress
        )

        def after_trial(study_, frozen) -> None:
            study_.set_user_attr("elapsed_seconds", spent())
            bar.update(1 if frozen.state in finished else 0)
            logger.info(
                "trial %d %s: %s, val AUPRC %s (%.0f s)",
                frozen.number,
                frozen.state.name.lower(),
                frozen.params,
                "n/a" if frozen.value is None else f"{frozen.value:.4f}",
                frozen.user_attrs.get("seconds", float("nan")),
            )
            n_finished = len(study_.get_trials(deepcopy=False, states=finished))
            if n_finished >= settings.trials:
                study_.stop()

        if remaining > 0 and (remaining_time is None or remaining_time > 0):
            # n_trials counts failed trials too; the callback stops at `trials` finished ones
            # no n_trials: it would count failed trials too; `after_trial` stops the study
            # at `trials` finished ones, and a failing trial raises out of optimize
            study.optimize(objective, timeout=remaining_time, callbacks=[after_trial], catch=())
        bar.close()
        study.set_user_attr("elapsed_seconds", spent())
        result = _result(study, fixed, settings, storage_dir, study_path, spent(), kept)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if study_path is not None and storage is not None:
        storage.remove_session()
        storage.engine.dispose()  # the file can be copied now
    return result


def _result(study, fixed, settings, storage_dir, study_path, elapsed, kept) -> SearchResult:
    from optuna.trial import TrialState

    rows, curves = [], []
    for t in study.get_trials(deepcopy=False):
        hist = t.user_attrs.get("history", [])
        row = {
            "trial": t.number,
            "state": t.state.name.lower(),
            # optuna gives a pruned trial its last intermediate value: last_val_auprc here
            "val_auprc": t.value if t.state == TrialState.COMPLETE else None,
            "stopped": t.user_attrs.get("stopped", ""),
            "epochs_run": len(hist),
            "best_epoch": t.user_attrs.get("best_epoch"),
            "last_val_auprc": hist[-1]["val_auprc_smoothed"] if hist else None,
            "mc_samples_predict": t.user_attrs.get("mc_samples_predict"),
            "seconds": t.user_attrs.get("seconds"),
            **t.params,
        }
        if "retry_of" in t.user_attrs:
            row["retry_of"] = t.user_attrs["retry_of"]
        rows.append(row)
        for h in hist:
            curves.append(
                {
                    "trial": t.number,
                    "state": row["state"],
                    **{
                        k: h.get(k)
                        for k in ("epoch", "loss", "val_auprc", "val_auprc_smoothed", "lr")
                    },
                }
            )
    trials = pd.DataFrame(rows)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(
            "MGP-TCN search: no trial finished within the budget "
            f"({len(trials)} trials, {elapsed / 60:.1f} min); raise budget_minutes or trials"
        )
    best = max(complete, key=lambda t: (t.value, -t.number))
    params = {**fixed, **{k: _py(v) for k, v in best.params.items()}}
    mc = best.user_attrs.get("mc_samples_predict")
    params["mc_samples_predict"] = None if mc is None else int(mc)
    model = None
    if not settings.refit:
        model = kept.get("model") if kept.get("trial") == best.number else None
        saved = storage_dir / BEST_MODEL if storage_dir is not None else None
        if (
            model is None
            and saved is not None
            and saved.exists()
            and study.user_attrs.get("best_model_trial") == best.number
        ):
            model = MGPTCNClassifier.load(saved)
    return SearchResult(
        best_params=params,
        best_value=float(best.value),
        model=model,
        trials=trials,
        curves=pd.DataFrame(curves),
        study_path=study_path,
        elapsed_seconds=elapsed,
    )
