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

import base64
import html
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sepsis.evaluation import plots
from sepsis.evaluation.metrics import paired_differences

log = logging.getLogger(__name__)

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

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #4477aa;padding-bottom:.2em}h2{margin-top:1.8em;color:#234}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#eef2f7}
td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555}code,pre{background:#f4f4f4;padding:.1em .3em}
pre{padding:.6em;overflow-x:auto}.note{color:#555;font-size:.9em}
"""


@dataclass
class _Block:
    kind: str  # h1 | h2 | p | pre | table | img
    content: Any
    caption: str = ""


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not np.isfinite(xf):
        return "n/a"
    return f"{xf:.{digits}f}"


def _write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def _write_text(path: Path, text: str) -> Path:
    return _write_bytes(path, text.encode("utf-8"))


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    return _write_text(path, df.to_csv(index=False))


def _row_label(learner: str, regime: str, external: bool) -> str:
    lab = f"{learner} ({regime.replace('_', '-')})"
    return lab + " [external]" if bool(external) else lab


def metric_table(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Learner x horizon table of strings: "mean [ci_low, ci_high]", plus a prevalence row for AUPRC."""
    if len(summary) == 0:
        return pd.DataFrame({"learner": []})
    horizons = sorted(summary["horizon"].unique())
    rows = []
    for (learner, regime, external), g in summary.groupby(
        ["learner", "regime", "external"], sort=True
    ):
        g = g.set_index("horizon")
        row = {
            "learner (regime)": _row_label(learner, regime, external),
            "seeds": int(g["n_seeds"].max()),
        }
        for h in horizons:
            if h in g.index and np.isfinite(g.loc[h, f"{metric}_mean"]):
                r = g.loc[h]
                row[f"{h} h"] = (
                    f"{_fmt(r[f'{metric}_mean'])} "
                    f"[{_fmt(r[f'{metric}_ci_low'])}, {_fmt(r[f'{metric}_ci_high'])}]"
                )
            else:
                row[f"{h} h"] = "n/a"
        rows.append(row)
    if metric == "auprc":
        prev = summary.groupby("horizon")["prevalence"].mean()
        rows.append(
            {
                "learner (regime)": "prevalence (random score)",
                "seeds": "",
                **{f"{h} h": _fmt(prev.get(h)) for h in horizons},
            }
        )
    return pd.DataFrame(rows)


def spread_table(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Learner x horizon table of the spread over split seeds: "std (min-max)"."""
    if len(summary) == 0:
        return pd.DataFrame({"learner": []})
    horizons = sorted(summary["horizon"].unique())
    rows = []
    for (learner, regime, external), g in summary.groupby(
        ["learner", "regime", "external"], sort=True
    ):
        g = g.set_index("horizon")
        row = {"learner (regime)": _row_label(learner, regime, external)}
        for h in horizons:
            if h in g.index and np.isfinite(g.loc[h, f"{metric}_mean"]):
                r = g.loc[h]
                row[f"{h} h"] = (
                    f"±{_fmt(r[f'{metric}_std'])} "
                    f"({_fmt(r[f'{metric}_min'])}-{_fmt(r[f'{metric}_max'])})"
                )
            else:
                row[f"{h} h"] = "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def cohort_table(cohort: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Cases, controls and prevalence per (seed, split) from cohort.parquet and splits.parquet."""
    m = splits.merge(cohort[["stay_id", "label"]], on="stay_id", how="left", validate="many_to_one")
    if m["label"].isna().any():
        raise ValueError(f"splits: {int(m['label'].isna().sum())} stay_ids are not in the cohort")
    out = m.groupby(["seed", "split"], sort=True)["label"].agg(cases="sum", n="count").reset_index()
    out["controls"] = out["n"] - out["cases"]
    out["prevalence"] = out["cases"] / out["n"]
    order = {"train": 0, "val": 1, "test": 2}
    out = out.sort_values(["seed", "split"], key=lambda s: s.map(order) if s.name == "split" else s)
    return out[["seed", "split", "cases", "controls", "prevalence"]].reset_index(drop=True)


def _df_to_strings(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(_fmt)
        else:
            out[c] = out[c].map(
                lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            )
    return out


def paired_summary(diffs: pd.DataFrame) -> pd.DataFrame:
    """Paired differences aggregated over seeds: mean diff, mean CI, seeds with p < 0.05."""
    if len(diffs) == 0:
        return pd.DataFrame()
    g = diffs.groupby(
        ["metric", "regime", "external", "horizon", "learner_a", "learner_b"], sort=True
    )
    out = g.agg(
        seeds=("seed", "nunique"),
        diff=("diff", "mean"),
        low=("low", "mean"),
        high=("high", "mean"),
        significant=("p_value", lambda p: int((p < 0.05).sum())),
    ).reset_index()
    out["regime"] = out["regime"] + np.where(out["external"].astype(bool), " [external]", "")
    out["A - B"] = out["learner_a"] + " - " + out["learner_b"]
    out["95% CI (mean over seeds)"] = (
        "[" + out["low"].map(_fmt) + ", " + out["high"].map(_fmt) + "]"
    )
    out["seeds with p<0.05"] = out["significant"].astype(str) + " of " + out["seeds"].astype(str)
    out["diff"] = out["diff"].map(_fmt)
    return out[
        [
            "metric",
            "regime",
            "horizon",
            "A - B",
            "diff",
            "95% CI (mean over seeds)",
            "seeds with p<0.05",
        ]
    ]


def _md_table(df: pd.DataFrame) -> str:
    if df is None or len(df) == 0:
        return "_(none)_\n"
    s = _df_to_strings(df)
    head = "| " + " | ".join(str(c) for c in s.columns) + " |"
    sep = "| " + " | ".join("---" for _ in s.columns) + " |"
    body = [
        "| " + " | ".join(v.replace("|", "\\|") for v in row) + " |"
        for row in s.itertuples(index=False)
    ]
    return "\n".join([head, sep, *body]) + "\n"


def _html_table(df: pd.DataFrame) -> str:
    if df is None or len(df) == 0:
        return "<p class='note'>(none)</p>"
    s = _df_to_strings(df)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in s.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in s.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _render_md(blocks: list[_Block], out_dir: Path) -> str:
    parts = []
    for b in blocks:
        if b.kind == "h1":
            parts.append(f"# {b.content}\n")
        elif b.kind == "h2":
            parts.append(f"## {b.content}\n")
        elif b.kind == "p":
            parts.append(f"{b.content}\n")
        elif b.kind == "pre":
            parts.append(f"```\n{b.content}\n```\n")
        elif b.kind == "table":
            if b.caption:
                parts.append(f"**{b.caption}**\n")
            parts.append(_md_table(b.content))
        elif b.kind == "img":
            rel = Path(b.content).relative_to(out_dir).as_posix()
            parts.append(f"![{b.caption}]({rel})\n")
    return "\n".join(parts)


def _render_html(blocks: list[_Block], title: str) -> str:
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>"
    ]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            parts.append(f"<{b.kind}>{html.escape(str(b.content))}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{html.escape(str(b.content))}</p>")
        elif b.kind == "pre":
            parts.append(f"<pre>{html.escape(str(b.content))}</pre>")
        elif b.kind == "table":
            if b.caption:
                parts.append(f"<p><b>{html.escape(b.caption)}</b></p>")
            parts.append(_html_table(b.content))
        elif b.kind == "img":
            data = base64.b64encode(Path(b.content).read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(b.caption, quote=True)}' "
                f"src='data:image/png;base64,{data}'><figcaption>{html.escape(b.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


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


def format_summary_table(
    summary: pd.DataFrame, metrics: tuple[str, ...] = ("auprc", "auroc")
) -> str:
    """Plain-text aligned table of mean metric per learner x horizon, for the end of a CLI run."""
    if summary is None or len(summary) == 0:
        return "(no results)"
    horizons = sorted(int(h) for h in summary["horizon"].unique())
    lines = []
    for metric in metrics:
        rows = [["learner (regime)", "seeds"] + [f"{h}h" for h in horizons]]
        for (learner, regime, external), g in summary.groupby(
            ["learner", "regime", "external"], sort=True
        ):
            g = g.set_index("horizon")
            rows.append(
                [_row_label(learner, regime, external), str(int(g["n_seeds"].max()))]
                + [_fmt(g.loc[h, f"{metric}_mean"]) if h in g.index else "n/a" for h in horizons]
            )
        if metric == "auprc":
            prev = summary.groupby("horizon")["prevalence"].mean()
            rows.append(["prevalence", ""] + [_fmt(prev.get(h)) for h in horizons])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        title = f"{metric.upper()} (mean over split seeds; columns = hours before onset)"
        lines.append(title)
        for j, r in enumerate(rows):
            cells = [r[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
