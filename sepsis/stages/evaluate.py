"""The evaluate and report stages: metrics with bootstrap CIs over the current training
units (or another run's models applied to this cohort: external validation), and the
report's context (cohort, attrition, labels, timings)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd

from sepsis.config import RunConfig
from sepsis.manifest import PipelineError, Stage, stage_fingerprint
from sepsis.stages.common import _asdict, _locked, _source
from sepsis.stages.train import (
    Unit,
    _describe_units,
    _pred_frame,
    _view,
    collect_histories,
    collect_predictions,
    plan_units,
    unfinished_units,
)


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
