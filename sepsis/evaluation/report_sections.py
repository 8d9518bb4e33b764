"""The report's sections: the header, regimes, cohort, labels, results, curves, training,
search, online and configuration blocks, built from the evaluation and its context."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sepsis.evaluation.report_render import _Block, _fmt
from sepsis.evaluation.report_tables import (
    cohort_table,
    metric_table,
    paired_summary,
    spread_table,
)

PAPER_ANCHOR = (
    "Paper anchor (Moor et al., MLHC 2019, arXiv 1902.01659; MIMIC-III, MetaVision stays, "
    "~570 cases and ~5,600 matched controls, prevalence ~9%): AUPRC 7 h before onset was "
    "0.25 for MGP-RNN, 0.35 for MGP-TCN and 0.40 for DTW-KNN. Those numbers come from different "
    "data and labels; use them as an order of magnitude, not as a target to match."
)

HOW_TO_READ = (
    "How to read this: every learner scores each test stay once per horizon h, using only data "
    "up to h hours before the case's sepsis onset (controls: the matched case's onset hour). "
    "AUPRC (average precision) is the main metric because cases are rare; a random score has "
    "AUPRC equal to the prevalence, printed beside it, and AUROC 0.5. Each cell is the mean over "
    "the split seeds; the bracket is the stay-level bootstrap 95% interval of one split averaged "
    "over seeds, so it shows test-set sampling noise, not the spread between splits (given "
    "separately). Paired differences compare two learners on the same stays and resamples; an "
    "interval that excludes 0 means the difference is unlikely to be test-set noise."
)

REGIME_TEXT = {
    "per_horizon": "per-horizon: one model trained per horizon on windows ending at onset - h",
    "train_once": "train-once: one model trained at horizon 0, then applied at every horizon",
}


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _title(ctx: dict) -> str:
    if ctx.get("title"):
        return str(ctx["title"])
    name = ctx.get("config_name", ctx.get("name"))
    return "Sepsis early-warning evaluation" + (f": {name}" if name else "")


def _attrition_extras(full: Any) -> list[_Block]:
    """Matching ratio, variables kept and per-variable dropped values from attrition.json, when present."""
    if not isinstance(full, dict):
        return []
    out: list[_Block] = []
    m = full.get("matching")
    if isinstance(m, dict) and m:
        keys = ("cases", "controls", "final_ratio", "cases_short", "seed")
        out.append(
            _Block(
                "p",
                "Matching: "
                + ", ".join(
                    f"{k} {_fmt(m[k], 2) if k == 'final_ratio' else m[k]}" for k in keys if k in m
                ),
            )
        )
    v = full.get("variables")
    if isinstance(v, dict) and "kept" in v:
        dropped = v.get("dropped") or []
        out.append(
            _Block(
                "p",
                f"Variables kept: {len(v['kept'])} ({', '.join(map(str, v['kept']))}); "
                f"dropped for fewer than {v.get('min_observations', '?')} observations: "
                f"{len(dropped)}{' (' + ', '.join(map(str, dropped)) + ')' if dropped else ''}.",
            )
        )
    src = full.get("source_attrition")
    if isinstance(src, list) and src and all(isinstance(r, dict) for r in src):
        out.append(_Block("table", pd.DataFrame(src), "Source reader exclusions"))
    dv = full.get("dropped_values")
    if isinstance(dv, dict) and dv:
        rows = [
            {"variable": k, **(val if isinstance(val, dict) else {"dropped": val})}
            for k, val in dv.items()
        ]
        out.append(
            _Block(
                "table",
                pd.DataFrame(rows),
                "Values dropped per variable (outside range, unit, ...)",
            )
        )
    return out


def _blocks(predictions, metrics, summary, diffs, figs, ctx, onset_hours) -> list[_Block]:
    B = _Block
    blocks = [B("h1", _title(ctx))]
    name = ctx.get("config_name", ctx.get("name", "n/a"))
    header = [
        f"Run time: {ctx.get('run_time') or _now()}",
        f"Config: {name} (hash {ctx.get('config_hash', 'n/a')})",
        f"Data: {ctx.get('data_source', ctx.get('source', 'n/a'))}",
    ]
    if ctx.get("external"):
        header.append(
            f"External evaluation of the models of {ctx.get('models_run', 'another run')}"
        )
    blocks.append(B("p", " | ".join(header)))
    if ctx.get("labels_note"):
        if ctx.get("labels_warning"):
            blocks.append(B("h2", "WARNING: non-standard labels"))
        blocks.append(B("p", ctx["labels_note"]))
    missing = ctx.get("missing_units")
    if isinstance(missing, pd.DataFrame) and len(missing):
        blocks.append(B("h2", "INCOMPLETE: training units missing from this report"))
        blocks.append(
            B(
                "p",
                f"{len(missing)} planned training units had no current result when this report "
                "was made (evaluated with --partial); their rows are absent from every table "
                "and plot below. Run `sepsis train` to finish them, then `sepsis report` again.",
            )
        )
        blocks.append(B("table", missing))
    command = ctx.get("command", "n/a")
    blocks.append(
        B("p", "Commands that produced this run:" if isinstance(command, dict) else "Command:")
    )
    if isinstance(command, dict):
        command = "\n".join(f"{stage}: {cmd}" for stage, cmd in command.items()) or "n/a"
    blocks.append(B("pre", str(command)))
    walls = ctx.get("wall_seconds")
    if isinstance(walls, dict) and walls:
        blocks.append(
            B(
                "p",
                "Wall time per stage: "
                + ", ".join(f"{k} {_fmt(v, 1)} s" for k, v in walls.items()),
            )
        )
    blocks.append(B("p", HOW_TO_READ))
    blocks.append(B("p", PAPER_ANCHOR))

    # which results are which
    blocks.append(B("h2", "Training regimes and data"))
    regimes = sorted(predictions["regime"].unique()) if len(predictions) else []
    learners = sorted(predictions["learner"].unique()) if len(predictions) else []
    for r in regimes:
        ls = sorted(predictions.loc[predictions["regime"] == r, "learner"].unique())
        blocks.append(B("p", f"{REGIME_TEXT.get(r, r)} - learners: {', '.join(ls)}"))
    ext = (
        predictions.loc[predictions["external"].astype(bool), "learner"].unique()
        if len(predictions)
        else []
    )
    blocks.append(
        B(
            "p",
            "External validation results (trained on one source, tested on another): "
            + (
                ", ".join(sorted(ext))
                if len(ext)
                else "none; all results are internal test splits."
            ),
        )
    )
    if len(metrics):
        seeds = sorted(int(s) for s in metrics["seed"].unique())
        blocks.append(
            B(
                "p",
                f"Split seeds: {seeds}; learners: {', '.join(learners)}; horizons: "
                f"{sorted(int(h) for h in metrics['horizon'].unique())}.",
            )
        )
        miss = metrics.groupby("learner")[["n_missing_score", "n"]].sum()
        for lrn, r in miss.iterrows():
            if r["n_missing_score"] == r["n"]:
                blocks.append(
                    B(
                        "p",
                        f"{lrn}: no scores at all (e.g. the data source has no SOFA); shown as n/a.",
                    )
                )
            elif r["n_missing_score"]:
                blocks.append(
                    B(
                        "p",
                        f"{lrn}: {int(r['n_missing_score'])} of {int(r['n'])} test predictions had no "
                        "score (NaN) and were left out of its metrics.",
                    )
                )

    # cohort
    blocks.append(B("h2", "Cohort"))
    ctab = ctx.get("cohort_table")
    if ctab is None and ctx.get("cohort") is not None and ctx.get("splits") is not None:
        ctab = cohort_table(ctx["cohort"], ctx["splits"])
    blocks.append(
        B(
            "table",
            ctab if ctab is not None else pd.DataFrame(),
            "Cases, controls and prevalence per split",
        )
    )
    att = ctx.get("attrition")
    if att:
        cols = ["step", "removed", "remaining", "cases", "controls", "detail"]
        adf = pd.DataFrame([{c: a.get(c, "") for c in cols} for a in att])
        blocks.append(B("table", adf, "Attrition (each exclusion in order)"))
    blocks.extend(_attrition_extras(ctx.get("attrition_full")))

    # labels
    if onset_hours is not None or "sofa_components" in figs:
        blocks.append(B("h2", "Label statistics"))
        if onset_hours is not None:
            h = onset_hours[np.isfinite(onset_hours)]
            if len(h):
                q = np.percentile(h, [25, 50, 75])
                blocks.append(
                    B(
                        "p",
                        f"Onset hour after ICU admission over {len(h)} cases: median {q[1]:.1f} h "
                        f"(IQR {q[0]:.1f}-{q[2]:.1f} h), min {h.min():.1f} h, max {h.max():.1f} h.",
                    )
                )
            blocks.append(B("img", figs["onset_hours"], "Onset hour distribution"))
        if "sofa_components" in figs:
            blocks.append(B("img", figs["sofa_components"], "SOFA components at onset"))

    # results
    blocks.append(B("h2", "AUPRC by horizon"))
    blocks.append(
        B(
            "table",
            metric_table(summary, "auprc"),
            "AUPRC: mean over split seeds [bootstrap 95% CI]; columns are hours before onset",
        )
    )
    blocks.append(
        B("table", spread_table(summary, "auprc"), "AUPRC spread over split seeds: ±std (min-max)")
    )
    blocks.append(B("img", figs["auprc_vs_horizon"], "AUPRC vs horizon"))
    blocks.append(B("h2", "AUROC by horizon"))
    blocks.append(
        B(
            "table",
            metric_table(summary, "auroc"),
            "AUROC: mean over split seeds [bootstrap 95% CI]; columns are hours before onset",
        )
    )
    blocks.append(
        B("table", spread_table(summary, "auroc"), "AUROC spread over split seeds: ±std (min-max)")
    )
    blocks.append(B("img", figs["auroc_vs_horizon"], "AUROC vs horizon"))

    blocks.append(B("h2", "Paired differences between learners"))
    blocks.append(
        B(
            "p",
            "Same stays, same bootstrap resamples, per split seed; per-seed rows are in "
            "paired_differences.csv.",
        )
    )
    blocks.append(B("table", paired_summary(diffs), "Metric(A) - metric(B)"))

    blocks.append(B("h2", "Curves"))
    names = {
        "pr": "Precision-recall curves",
        "roc": "ROC curves",
        "calibration": "Calibration (reliability diagram)",
    }
    for prefix, name in names.items():
        for k in figs:
            if k.startswith(prefix + "_"):
                blocks.append(B("img", figs[k], f"{name}, {k.split('_')[-1][:-1]} h before onset"))

    if "training_curves" in figs:
        blocks.append(B("h2", "Training curves"))
        blocks.append(
            B("img", figs["training_curves"], "Training loss and validation AUPRC per epoch")
        )
        for k in figs:
            if k.startswith("training_curves_"):
                learner = k[len("training_curves_") :]
                blocks.append(B("img", figs[k], f"{learner}: training loss and validation AUPRC"))
    blocks.extend(_tuning_blocks(ctx, figs))

    util = ctx.get("utility")
    if util is not None and len(util):
        blocks.append(B("h2", "PhysioNet 2019 utility score"))
        blocks.append(
            B(
                "p",
                "Normalised challenge utility (1 = optimal alarms 12 h to 3 h around onset, "
                "0 = never alarm; false alarms cost 0.05 per hour).",
            )
        )
        blocks.append(B("table", pd.DataFrame(util), ""))

    online = ctx.get("online")
    if isinstance(online, dict) and len(online.get("metrics", [])):
        from sepsis.evaluation import online_report as orep

        om = online["metrics"]
        blocks.append(B("h2", "Online evaluation (every ICU hour)"))
        blocks.append(B("p", orep.ONLINE_TEXT.format(far=float(om["false_alarm_rate"].iloc[0]))))
        if orep.counts_text(online.get("counts", {})):
            blocks.append(B("p", orep.counts_text(online["counts"])))
        blocks.append(
            B("table", orep.side_by_side(om, summary), "Case-control vs online, same h0 models")
        )
        blocks.append(B("table", orep.online_table(om), "Online metrics (test split)"))
        for k, cap in (
            ("online_utility", "Validation utility vs alarm threshold (dot: chosen)"),
            ("online_warning", "Hours of warning before onset"),
            ("online_trajectories", "Example risk trajectories"),
        ):
            if k in figs:
                blocks.append(B("img", figs[k], cap))

    cfg = ctx.get("config")
    if isinstance(cfg, dict) and cfg:
        import json

        blocks.append(B("h2", "Configuration"))
        blocks.append(B("pre", json.dumps(cfg, indent=2, default=str, sort_keys=True)))

    notes = ctx.get("notes") or []
    if notes:
        blocks.append(B("h2", "Notes"))
        for n in notes:
            blocks.append(B("p", str(n)))
    return blocks


def _tuning_blocks(ctx: dict, figs: dict) -> list[_Block]:
    """The hyperparameter search and the DTW-KNN per-variable sections (when present)."""
    from sepsis.evaluation import tuning

    B = _Block
    out: list[_Block] = []
    best, trials = ctx.get("search_best"), ctx.get("search_trials")
    if best or (trials is not None and len(trials)):
        out.append(B("h2", "Hyperparameter search"))
        out.append(
            B(
                "p",
                "Optuna TPE over the MGP-TCN space, each trial scored by validation AUPRC "
                "(training and validation splits only; test stays never reach the search). "
                "The pruner stops trials whose smoothed per-epoch validation AUPRC falls "
                "behind the others; a trial still running at the wall-time budget stops like "
                "early stopping (stopped = budget). 'refit: no' means the best trial's own "
                "model is the learner's model.",
            )
        )
        if best:
            out.append(B("table", tuning.search_summary(best), "Searches and best parameters"))
        for k in figs:
            if k.startswith("search_"):
                out.append(B("img", figs[k], "Validation AUPRC per epoch of every trial"))
        if trials is not None and len(trials):
            out.append(
                B("table", tuning.trials_table(trials), "Every trial (pruned ones included)")
            )
    va = ctx.get("variable_auprc")
    if va is not None and len(va):
        out.append(B("h2", "Per-variable validation AUPRC (DTW-KNN)"))
        out.append(
            B(
                "p",
                "Each variable's own k-NN classifier scored on the validation split at its "
                "chosen k, band and weighting (mean over units). lift = AUPRC / prevalence; "
                f"below {tuning.UNINFORMATIVE_LIFT} a variable is flagged: 'too sparse to "
                "help' when most validation series are flat (never observed in the window, "
                "or one value carried forward), else 'no better than chance'. weight = its "
                "share in the learned combination (equal for the plain mean).",
            )
        )
        for learner in sorted(va["learner"].unique()):
            out.append(B("table", tuning.variable_table(va, learner), learner))
    return out
