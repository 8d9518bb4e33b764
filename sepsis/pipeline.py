"""The pipeline stages: generate -> prepare -> train -> evaluate -> report.

Each stage writes one folder under the run's output directory through `sepsis.manifest.Stage`
(temporary folder renamed into place, manifest with config hash and input hashes; skipped
when current). Training is split into one unit per (learner, regime, horizon, seed), each
its own stage folder, so an interrupted `make train` resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
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
from sepsis.manifest import PipelineError, Stage, hash_files, stage_fingerprint
from sepsis.runlock import data_lock, output_lock, run_lock

log = logging.getLogger(__name__)

REGIMES = ("per_horizon", "train_once")
CHECKPOINT = "checkpoint"  # inside a training unit's folder while it is being fitted
SEARCH = "search"  # a unit's hyperparameter study (kept in the finished folder too)


__all__ = ["PipelineError", "generate", "prepare", "train", "evaluate", "report"]


def _locked(fn):
    """Run a stage entry point holding the run folder's lock (one process per run folder)."""

    @functools.wraps(fn)
    def wrapper(cfg: RunConfig, *args, **kwargs):
        with run_lock(output_lock(cfg.output_dir), f"run folder {cfg.output_dir}"):
            return fn(cfg, *args, **kwargs)

    return wrapper


def _asdict(obj: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


# ---------------------------------------------------------------------------------------
# generate / prepare
# ---------------------------------------------------------------------------------------


def _source(cfg: RunConfig):
    from data_prep import sources

    try:
        return sources.get(cfg.source)
    except KeyError as err:
        raise PipelineError(str(err.args[0])) from None


def generate(cfg: RunConfig, force: bool = False, progress: bool = True) -> Path:
    """Write a generated source's raw data (the synthetic database) into `cfg.data_dir`
    (skipped if current)."""
    src = _source(cfg)
    if src.generate is None:
        raise PipelineError(f"generate: source '{cfg.source}' is read, not generated")
    params = cfg.sections[src.generator_section]
    stage = Stage("generate", cfg.data_dir, {src.generator_section: _asdict(params)}, force=force)
    with run_lock(data_lock(cfg.data_dir), f"data folder {cfg.data_dir}"):
        if stage.is_current():
            log.info("generate: %s is current, skipped", cfg.data_dir)
            return cfg.data_dir
        # a data_dir that holds anything but an earlier generate's own files is someone's
        # data: writing() refuses it before any work, and never moves or deletes it
        counts: dict[str, Any] = {}
        with stage.writing(counts) as tmp:
            report = src.generate(tmp, params, progress)
            counts.update(_report_counts(report))
    return cfg.data_dir


def _report_counts(report: Any) -> dict[str, Any]:
    if report is None:
        return {}
    if dataclasses.is_dataclass(report):
        return json.loads(json.dumps(dataclasses.asdict(report), default=str))
    if isinstance(report, dict):
        return json.loads(json.dumps(report, default=str))
    return {"report": str(report)}


def _reader_options(cfg: RunConfig):
    from data_prep.sources import ReaderOptions

    # one pre-ICU lookback: the reader keeps the pre-ICU data that the scored pre-ICU hours'
    # SOFA windows reach (LabelParams.data_lookback_hours), no more and no less
    return ReaderOptions(
        on_bad_rows=cfg.labels.on_bad_rows, lookback_hours=cfg.labels.data_lookback_hours
    )


def _inputs_fingerprint(cfg: RunConfig, src) -> str:
    """Fingerprint of exactly the raw files the source reads (other files ignored)."""
    try:
        files = src.inputs(cfg.data_dir)
    except FileNotFoundError as err:
        raise PipelineError(str(err)) from None
    return hash_files(files, cfg.data_dir)


def _rules_fingerprint(cfg: RunConfig, src) -> str:
    """Fingerprint of the rules an extraction follows: the concept dictionary and its data
    files (data_prep/concepts/*.yaml, *.csv, *.txt) and the source's own rule files."""
    import hashlib

    from data_prep.concepts import dictionary
    from sepsis.manifest import hash_file

    folder = dictionary.DICTIONARY_FILE.parent
    files = sorted(f for pat in ("*.yaml", "*.csv", "*.txt") for f in folder.glob(pat))
    files += sorted(src.rules(cfg.data_dir)) if src.rules else []
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.parent.name}/{f.name}".encode() + b"\0" + hash_file(f).encode())
    return h.hexdigest()[:16]


@_locked
def extract(cfg: RunConfig, force: bool = False, progress: bool = True) -> Path:
    """Read the source's raw data into the extracted-events contract (`extracted/`)."""
    src = _source(cfg)
    if src.generate is not None:
        generate(cfg, force=force, progress=progress)
    if not cfg.data_dir.exists():
        raise PipelineError(f"data_dir {cfg.data_dir} does not exist")
    options = _reader_options(cfg)
    out = cfg.output_dir / "extracted"
    stage = Stage(
        "extract",
        out,
        {"source": cfg.source, "reader": _asdict(options)},
        inputs={"tables": _inputs_fingerprint(cfg, src), "rules": _rules_fingerprint(cfg, src)},
        force=force,
    )
    if stage.is_current():
        log.info("extract: %s is current, skipped", out)
        return out
    counts: dict[str, Any] = {}
    with stage.writing(counts) as tmp:
        counts.update(_report_counts(src.extract(cfg.data_dir, tmp, options, progress)))
    return out


@_locked
def prepare(cfg: RunConfig, force: bool = False, progress: bool = True) -> Path:
    """Raw records -> Sepsis-3 labels -> matched cohort and windows (`prepared/`)."""
    from data_prep import io as dio
    from data_prep.cohort import prepare_from_tables, sepsis_admissions
    from data_prep.observations import observations_from_extracted
    from data_prep.sepsis3 import derive_labels

    src = _source(cfg)
    out = cfg.output_dir / "prepared"
    stage_cfg = {"source": cfg.source, "labels": _asdict(cfg.labels), "cohort": _asdict(cfg.cohort)}
    extracted = extract(cfg, force=force, progress=progress)
    inputs = {"extracted": stage_fingerprint(extracted)}
    stage = Stage("prepare", out, stage_cfg, inputs=inputs, force=force)
    if stage.is_current():
        log.info("prepare: %s is current, skipped", out)
        return out
    counts: dict[str, Any] = {}
    with stage.writing(counts) as tmp:
        extraction = json.loads((extracted / "manifest.json").read_text()).get("counts", {})
        if src.labels is None:
            labels_hourly, onsets, label_counts = derive_labels(
                extracted, cfg.labels, progress=progress, spill_dir=tmp
            )
            label_step = {"step": "sepsis-3 labels", "detail": label_counts}
        else:  # the source's own labels (PhysioNet 2019: the challenge's)
            labels_hourly = dio.read_parquet(
                extracted / "labels" / "labels_hourly.parquet", dio.LABELS_HOURLY
            )
            onsets = dio.read_parquet(extracted / "labels" / "onsets.parquet", dio.ONSETS)
            label_step = {"step": "labels", "detail": src.labels}
        stays = pd.read_parquet(extracted / "stays.parquet")
        observations, dropped = observations_from_extracted(extracted, stays, progress=progress)
        reader_steps = extraction.pop("steps", None) or []
        result = prepare_from_tables(
            stays=stays,
            onsets=onsets,
            labels_hourly=labels_hourly,
            diagnoses=sepsis_admissions(extracted),
            observations=observations,
            params=cfg.cohort,
            out_dir=tmp,
            dropped_values=dropped,
            source_attrition=[
                *reader_steps,
                label_step,
                {"step": "extraction", "detail": extraction},
            ],
            source_columns=src.attributes,
        )
        counts.update(_prepare_counts(result))
    return out


def _prepare_counts(attrition: dict) -> dict[str, Any]:
    """The headline numbers of a prepared cohort, for the manifest."""
    steps = attrition.get("steps", [])
    last = steps[-1] if steps else {}
    return {
        "cases": last.get("cases"),
        "controls": last.get("controls"),
        "remaining": last.get("remaining"),
        "prevalence": attrition.get("prevalence"),
        "split_counts": attrition.get("split_counts"),
    }


def describe_prepared(prepared: Path) -> str:
    """A short text summary of a prepared cohort (printed by `sepsis prepare`)."""
    cohort = pd.read_parquet(prepared / "cohort.parquet")
    n_case = int((cohort["label"] == 1).sum())
    n_ctrl = int((cohort["label"] == 0).sum())
    prev = n_case / max(len(cohort), 1)
    lines = [f"cohort: {n_case} cases, {n_ctrl} controls, prevalence {prev:.3f}"]
    att = prepared / "attrition.json"
    if att.exists():
        data = json.loads(att.read_text())
        steps = data.get("steps", data) if isinstance(data, dict) else data
        if isinstance(steps, list):
            lines.append("attrition:")
            for s in steps:
                if isinstance(s, dict) and "step" in s:
                    lines.append(
                        f"  {s['step']:<48} removed {s.get('removed', ''):>7}  remaining {s.get('remaining', ''):>7}"
                    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# evaluate / report
# ---------------------------------------------------------------------------------------


def _output_dir(cfg: RunConfig, stage: str, models_run: Path | None) -> Path:
    """`<output_dir>/<stage>`, or `<stage>-external-<run>` for another run's models."""
    return cfg.output_dir / (
        stage if models_run is None else f"{stage}-external-{Path(models_run).name}"
    )


@_locked
def evaluate(
    cfg: RunConfig,
    force: bool = False,
    progress: bool = True,
    models_run: Path | None = None,
    partial: bool = False,
) -> Path:
    """Metrics with bootstrap CIs for every learner, regime and horizon (`evaluation/`).

    Only current training units count: a unit that is missing (interrupted training) or
    stale (trained with another config or cohort) stops the evaluation with the list of
    such units, unless `partial`, when the evaluation and its report say what is missing.
    """
    from sepsis.evaluation.metrics import metrics_table, paired_differences, summarise_over_seeds

    models_dir = cfg.output_dir / "models"
    missing: list[tuple[Unit, str]] = []
    if models_run is not None:
        models_dir = _external_predictions(cfg, Path(models_run), progress=progress)
        units = None
    else:
        planned = plan_units(cfg)
        missing = unfinished_units(cfg)
        if missing and not partial:
            raise PipelineError(
                f"training is incomplete: {len(missing)} of {len(planned)} units have "
                f"no current result: {_describe_units(missing)}. Run `sepsis train --config "
                f"{cfg.config_file}` to finish them, or pass --partial to evaluate what exists "
                "(the report then lists what is missing)"
            )
        gone = {u for u, _ in missing}
        units = [u for u in planned if u not in gone]
    if not models_dir.exists():
        raise PipelineError(f"no trained models at {models_dir}: run `sepsis train` first")
    preds = collect_predictions(models_dir, units)
    if preds.empty:
        raise PipelineError(f"no predictions under {models_dir}: run `sepsis train` first")
    out = _output_dir(cfg, "evaluation", models_run)
    missing_rows = pd.DataFrame(
        [{**dataclasses.asdict(u), "reason": why} for u, why in missing],
        columns=["learner", "regime", "horizon", "seed", "reason"],
    )
    fp = {
        "predictions": str(pd.util.hash_pandas_object(preds, index=False).sum()),
        "missing_units": str(len(missing_rows)),
    }
    stage = Stage("evaluate", out, {"evaluate": _asdict(cfg.evaluate)}, inputs=fp, force=force)
    if stage.is_current():
        return out
    counts: dict[str, Any] = {}
    with stage.writing(counts) as tmp:
        table = metrics_table(
            preds, n_resamples=cfg.evaluate.n_bootstrap, seed=cfg.evaluate.bootstrap_seed
        )
        summary = summarise_over_seeds(table)
        diffs = paired_differences(
            preds, n_resamples=cfg.evaluate.n_bootstrap, seed=cfg.evaluate.bootstrap_seed
        )
        preds.to_parquet(tmp / "predictions.parquet", index=False)
        table.to_csv(tmp / "metrics.csv", index=False)
        summary.to_csv(tmp / "summary.csv", index=False)
        diffs.to_csv(tmp / "paired_differences.csv", index=False)
        missing_rows.to_csv(tmp / "missing_units.csv", index=False)
        counts.update(
            {
                "n_predictions": int(len(preds)),
                "n_metric_rows": int(len(table)),
                "missing_units": int(len(missing_rows)),
            }
        )
    from sepsis.evaluation.report import format_summary_table

    print(format_summary_table(summary))
    return out


@_locked
def report(cfg: RunConfig, force: bool = False, models_run: Path | None = None) -> Path:
    """Render report.md / report.html with tables and plots (`reports/`)."""
    from sepsis.evaluation.report import write_report

    ev = _output_dir(cfg, "evaluation", models_run)
    if not (ev / "manifest.json").exists():
        raise PipelineError(f"no evaluation at {ev}: run `sepsis evaluate` first")
    out = _output_dir(cfg, "reports", models_run)
    from sepsis.evaluation.online_report import online_context

    online = online_context(cfg.output_dir / "evaluation-online") if models_run is None else None
    inputs = {"evaluation": stage_fingerprint(ev)}
    if online is not None:
        inputs["online"] = stage_fingerprint(cfg.output_dir / "evaluation-online")
    stage = Stage("report", out, {"name": cfg.name}, inputs=inputs, force=force)
    if stage.is_current():
        return out
    preds = pd.read_parquet(ev / "predictions.parquet")
    metrics = pd.read_csv(ev / "metrics.csv")
    summary = pd.read_csv(ev / "summary.csv")
    context = report_context(cfg, ev, models_run)
    if online is not None:
        context["online"] = online
    with stage.writing({}) as tmp:
        write_report(tmp, preds, metrics, summary, context)
    return out


def report_context(cfg: RunConfig, ev: Path, models_run: Path | None) -> dict[str, Any]:
    """Everything the report shows besides the metrics: cohort, attrition, labels, timings."""
    prepared = cfg.output_dir / "prepared"
    ctx: dict[str, Any] = {
        "name": cfg.name,
        "source": cfg.source,
        "config_hash": cfg.section_hash(
            "source",
            "synthetic",
            "labels",
            "cohort",
            "train",
            "mgp_tcn_search",
            "mgp_tcn",
            "dtw_knn",
            "mgp_tcn_tuned",
            "dtw_knn_tuned",
            "logreg",
            "gbm",
            "evaluate",
        ),
        "config": cfg.to_dict(),
        "external": models_run is not None,
        "models_run": str(models_run) if models_run else None,
    }
    ctx["labels_note"], ctx["labels_warning"] = labels_note(cfg)
    ctx["command"] = _stage_commands(cfg)
    # the report is written after this, so its own stage is not counted
    walls = stage_wall_seconds(cfg.output_dir, STAGE_FOLDERS[:-1])
    ctx["wall_seconds"] = {k: round(v, 1) for k, v in walls.items()}
    if (prepared / "attrition.json").exists():
        att = json.loads((prepared / "attrition.json").read_text())
        ctx["attrition"] = att.get("steps", att) if isinstance(att, dict) else att
        ctx["attrition_full"] = att
    for name in ("cohort", "onsets", "splits"):
        f = prepared / f"{name}.parquet"
        if f.exists():
            ctx[name] = pd.read_parquet(f)
    hist = collect_histories(cfg.output_dir / "models")
    if not hist.empty:
        ctx["history"] = hist
    from sepsis.evaluation.tuning import tuning_context

    ctx.update(tuning_context(cfg.output_dir / "models"))
    diffs = ev / "paired_differences.csv"
    if diffs.exists():
        ctx["paired_differences"] = pd.read_csv(diffs)
    missing = ev / "missing_units.csv"
    if missing.exists() and missing.stat().st_size:
        frame = pd.read_csv(missing)
        if len(frame):
            ctx["missing_units"] = frame
    return ctx


def labels_note(cfg: RunConfig) -> tuple[str, bool]:
    """(whose labels a report shows, True when they are not the standard Sepsis-3 ones)."""
    src = _source(cfg)
    if src.labels is not None:
        return f"Labels: {src.labels}.", False
    if cfg.labels.suspected_infection == "antibiotics_only":
        return (
            "Labels: Sepsis-3 with suspected infection by the ANTIBIOTIC-ONLY rule "
            f"(labels.suspected_infection=antibiotics_only: an antibiotic with at least "
            f"{cfg.labels.abx_min_count} antibiotic events within "
            f"{cfg.labels.abx_count_window_hours:g} h; ricu si_mode 'abx'), because this dataset "
            "has no culture events. This is NOT the Seymour 2016 definition (antibiotics AND "
            "cultures): onsets and every number below are not comparable with runs that use it.",
            True,
        )
    return (
        "Labels: Sepsis-3 derived by this pipeline (suspected infection = antibiotics and "
        "cultures, Seymour 2016; SOFA rise >= 2 in the suspected-infection window).",
        False,
    )


def _stage_commands(cfg: RunConfig) -> dict[str, str]:
    out = {}
    for stage in ("prepared", "models", "evaluation"):
        for m in (
            sorted((cfg.output_dir / stage).rglob("manifest.json"))[:1]
            if (cfg.output_dir / stage).exists()
            else []
        ):
            out[stage] = json.loads(m.read_text()).get("command", "")
    return out


STAGE_FOLDERS = ("extracted", "prepared", "models", "evaluation", "reports")


def stage_wall_seconds(
    output_dir: Path, stages: tuple[str, ...] = STAGE_FOLDERS
) -> dict[str, float]:
    """Wall seconds per stage folder of a run: the sum over its manifests (training has one per unit)."""
    out: dict[str, float] = {}
    for stage in stages:
        d = Path(output_dir) / stage
        if d.exists():
            out[stage] = sum(
                json.loads(m.read_text()).get("wall_seconds", 0.0) for m in d.rglob("manifest.json")
            )
    return out


def _external_predictions(cfg: RunConfig, models_run: Path, progress: bool) -> Path:
    """Apply another run's fitted models to every stay of this config's cohort (external validation).

    The other run's training-split normalisation (per split seed) and variable set are used,
    so the models see inputs scaled exactly as in training; a variable this source lacks is
    never observed (the views impute it as 0, the training mean). Predictions carry
    `external = True` and go to `<output_dir>/external/<run name>/`.
    """
    from tqdm.auto import tqdm

    from data_prep.dataset import CohortDataset
    from sepsis.config import _learner_classes

    prepared = cfg.output_dir / "prepared"
    if not (prepared / "manifest.json").exists():
        raise PipelineError(
            f"no prepared cohort at {prepared}: run `sepsis prepare --config {cfg.config_file}` first"
        )
    norm = models_run / "prepared" / "normalisation.parquet"
    if not norm.exists():
        raise PipelineError(
            f"{models_run}: no prepared/normalisation.parquet; expected the output_dir of a trained run"
        )
    if models_run.resolve() == cfg.output_dir.resolve():
        raise PipelineError(
            "--models points at this run itself; external validation needs another run"
        )
    model_dirs = sorted(p.parent for p in (models_run / "models").glob("*/*/h*/seed*/model/"))
    if not model_dirs:
        raise PipelineError(
            f"{models_run}/models holds no fitted models: run `sepsis train` there first"
        )
    ds = CohortDataset.load(prepared, normalisation_override=norm)
    classes = _learner_classes()
    out_root = cfg.output_dir / "external" / models_run.name
    fp = {
        "models_run": stage_fingerprint(models_run / "prepared"),
        "prepared": stage_fingerprint(prepared),
    }
    for unit_dir in tqdm(model_dirs, desc="external", unit="model", disable=not progress):
        learner, regime, hdir, sdir = unit_dir.parts[-4:]
        unit = Unit(learner, regime, int(hdir[1:]), int(sdir[4:]))
        if learner not in classes:
            continue
        out = unit.folder(out_root)
        man = (
            json.loads((unit_dir / "manifest.json").read_text())
            if (unit_dir / "manifest.json").exists()
            else {}
        )
        stage = Stage(
            "external",
            out,
            {"unit": dataclasses.asdict(unit), "model_config": man.get("config_hash")},
            inputs=fp,
        )
        if stage.is_current():
            continue
        model = classes[learner].load(unit_dir / "model")
        horizons = [unit.horizon] if regime == "per_horizon" else list(cfg.train.horizons)
        with stage.writing({}) as tmp:
            rows = []
            for h in horizons:
                X, y = _view(ds, model.view, h, "all", unit.seed)
                rows.append(
                    _pred_frame(unit, h, X.stay_id, y, model.predict_proba(X)[:, 1], external=True)
                )
            pd.concat(rows, ignore_index=True).to_parquet(tmp / "predictions.parquet", index=False)
    return out_root
