"""The evaluation report: metrics.csv, report.md and a self-contained report.html.

`write_report(out_dir, predictions, metrics, summary, context)` renders one list of
blocks (headings, paragraphs, tables, figures) twice: as Markdown (figures linked as
`plots/*.png`) and as HTML with every figure embedded as a base64 PNG and inline CSS, so
the HTML file has no external reference and can be mailed or archived on its own.
Every file is written atomically (temporary file + rename).

`context` keys (all optional unless said):
  title, run_time, command, config_hash, config_name, data_source: strings for the header;
  attrition: list of dicts {step, removed, remaining, cases, controls[, detail]};
  cohort_table: DataFrame (split[, seed], cases, controls) - or cohort (stay_id, label,
    onset_hour) plus splits (stay_id, seed, split) DataFrames, from which it is computed;
  onsets: the onsets audit DataFrame (onset_hour, components_rose);
  sofa_at_onset: DataFrame with sofa_<component> columns at the onset hour of each case;
  history: training history DataFrame (learner, seed, horizon, epoch, loss, val_auprc);
    a figure per learner when several learners have one;
  search_trials, search_curves, search_best, variable_auprc: hyperparameter search and
    DTW-KNN per-variable tables (`sepsis.evaluation.tuning.tuning_context`);
  utility: DataFrame of PhysioNet 2019 utility scores (rendered as given; filled from
    `online` when absent);
  online: {"metrics": evaluation-online/metrics.csv, "plots": {key: png}} (the online section);
  n_resamples (default 1000), bootstrap_seed (default 0): for the paired differences;
  notes: list of extra strings shown under "Notes";
  missing_units: DataFrame (learner, regime, horizon, seed, reason) of planned training
    units absent from the evaluation (--partial); shown first, as a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sepsis.evaluation import plots
from sepsis.evaluation.metrics import paired_differences
from sepsis.evaluation.report_render import _render_html, _render_md, _write_csv, _write_text
from sepsis.evaluation.report_sections import _blocks, _title
from sepsis.evaluation.report_tables import (  # noqa: F401  (re-exported)
    cohort_table,
    format_summary_table,
    metric_table,
    paired_summary,
    spread_table,
)

log = logging.getLogger(__name__)


def _pick_horizons(present: list[int], wanted: tuple[int, ...] = (0, 7)) -> list[int]:
    """The horizons to show curves for: 0 and 7 when present, else the nearest available."""
    if not present:
        return []
    out = []
    for w in wanted:
        h = min(present, key=lambda p: abs(p - w))
        if h not in out:
            out.append(h)
    return out


def write_report(
    out_dir: str | Path,
    predictions: pd.DataFrame,
    metrics: pd.DataFrame,
    summary: pd.DataFrame,
    context: dict | None = None,
) -> dict[str, Path]:
    """Write metrics.csv, summary.csv, paired_differences.csv, plots/*.png, report.md, report.html.

    `metrics` is `metrics_table(predictions)`, `summary` is `summarise_over_seeds(metrics)`;
    `context` is described in the module docstring. Returns {name: path} of every file written.
    """
    ctx = dict(context or {})
    out = Path(out_dir)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["metrics_csv"] = _write_csv(out / "metrics.csv", metrics)
    paths["summary_csv"] = _write_csv(out / "summary.csv", summary)

    present = sorted(int(h) for h in predictions["horizon"].unique()) if len(predictions) else []
    curve_h = _pick_horizons(present)
    n_res = int(ctx.get("n_resamples", 1000))
    bseed = int(ctx.get("bootstrap_seed", 0))
    given = ctx.get("paired_differences")
    diffs = (
        given  # already computed by the evaluate stage
        if isinstance(given, pd.DataFrame)
        else pd.concat(
            [
                paired_differences(predictions, tuple(curve_h), m, n_resamples=n_res, seed=bseed)
                for m in ("auprc", "auroc")
            ],
            ignore_index=True,
        )
        if curve_h
        else pd.DataFrame()
    )
    paths["paired_csv"] = _write_csv(out / "paired_differences.csv", diffs)

    # figures
    figs: dict[str, Path] = {}
    figs["auprc_vs_horizon"] = plots.plot_metric_vs_horizon(
        summary, "auprc", plot_dir / "auprc_vs_horizon.png"
    )
    figs["auroc_vs_horizon"] = plots.plot_metric_vs_horizon(
        summary, "auroc", plot_dir / "auroc_vs_horizon.png"
    )
    for h in curve_h:
        figs[f"pr_{h}h"] = plots.plot_curves(predictions, h, plot_dir / f"pr_{h}h.png", kind="pr")
        figs[f"roc_{h}h"] = plots.plot_curves(
            predictions, h, plot_dir / f"roc_{h}h.png", kind="roc"
        )
    if curve_h:
        figs[f"calibration_{curve_h[0]}h"] = plots.plot_calibration(
            predictions, curve_h[0], plot_dir / f"calibration_{curve_h[0]}h.png"
        )
    history = ctx.get("history")
    if history is not None and len(history):
        figs["training_curves"] = plots.plot_training_curves(
            history, plot_dir / "training_curves.png"
        )
        if history["learner"].nunique() > 1:
            for learner, g in history.groupby("learner", sort=True):
                figs[f"training_curves_{learner}"] = plots.plot_training_curves(
                    g, plot_dir / f"training_curves_{learner}.png"
                )
    curves = ctx.get("search_curves")
    if curves is not None and len(curves):
        for (learner, regime, h, seed), g in curves.groupby(
            ["learner", "regime", "horizon", "seed"], sort=True
        ):
            name = f"search_{learner}_{regime}_h{h}_seed{seed}"
            figs[name] = plots.plot_search_curves(
                g,
                plot_dir / f"{name}.png",
                f"{learner} ({regime.replace('_', '-')}, h{h}, seed {seed}): search trials",
            )
    onset_hours = _onset_hours(ctx)
    if onset_hours is not None:
        figs["onset_hours"] = plots.plot_onset_hours(onset_hours, plot_dir / "onset_hours.png")
    sofa_src = (
        ctx.get("sofa_at_onset") if ctx.get("sofa_at_onset") is not None else _case_onsets(ctx)
    )
    if sofa_src is not None:
        figs["sofa_components"] = plots.plot_sofa_components(
            sofa_src, plot_dir / "sofa_components.png"
        )
    online = ctx.get("online")
    if isinstance(online, dict):
        import shutil

        # copied next to the other plots so report.md links stay inside the report folder
        for k, src in online.get("plots", {}).items():
            figs[k] = Path(shutil.copyfile(src, plot_dir / Path(src).name))
        if ctx.get("utility") is None and len(online.get("metrics", [])):
            from sepsis.evaluation.online_report import utility_table

            ctx["utility"] = utility_table(online["metrics"])
    paths.update({f"plot_{k}": v for k, v in figs.items()})

    blocks = _blocks(predictions, metrics, summary, diffs, figs, ctx, onset_hours)
    title = _title(ctx)
    paths["report_md"] = _write_text(out / "report.md", _render_md(blocks, out))
    paths["report_html"] = _write_text(out / "report.html", _render_html(blocks, title))
    log.info("report written to %s (%d files)", out, len(paths))
    return paths


def _case_onsets(ctx: dict) -> pd.DataFrame | None:
    """The onsets audit rows of the cohort's cases (all rows when no cohort is given)."""
    onsets, cohort = ctx.get("onsets"), ctx.get("cohort")
    if onsets is None:
        return None
    if (
        cohort is not None
        and {"stay_id", "label"} <= set(cohort.columns)
        and "stay_id" in onsets.columns
    ):
        return onsets[onsets["stay_id"].isin(cohort.loc[cohort["label"] == 1, "stay_id"])]
    return onsets


def _onset_hours(ctx: dict) -> np.ndarray | None:
    cohort = ctx.get("cohort")
    if cohort is not None and {"label", "onset_hour"} <= set(cohort.columns):
        return cohort.loc[cohort["label"] == 1, "onset_hour"].to_numpy(dtype=float)
    onsets = ctx.get("onsets")
    if onsets is not None and "onset_hour" in onsets.columns:
        return onsets["onset_hour"].to_numpy(dtype=float)
    return None
