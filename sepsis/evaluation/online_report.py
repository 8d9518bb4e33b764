"""Tables of the report's "Online evaluation" section, from evaluation-online/metrics.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ONLINE_TEXT = (
    "Online protocol: every learner scores every ICU hour of every validation and test stay "
    "(the window ending at that hour, nothing later), including stays the matched cohort left "
    "out. Labels are the challenge's shifted labels (1 from 6 h before onset). The alarm "
    "threshold maximises the normalised utility on the validation hours and is then applied "
    "to test. Sensitivity is per septic stay (an alarm before onset) at the threshold that lets "
    "{far:.0%} of non-septic test stays alarm; hours of warning = onset - first alarm; false "
    "alarms = alarm episodes starting on a label-0 hour, per 100 patient-days. Brackets: "
    "stay-level bootstrap 95% intervals, averaged over split seeds. 'online-trained' rows are "
    "baselines fitted on every training hour instead of one window per stay."
)

_METRICS = (
    ("utility", "utility"),
    ("auroc", "hourly AUROC"),
    ("auprc", "hourly AUPRC"),
    ("sensitivity_at_far", "sensitivity"),
    ("false_alarms_per_100_days", "false alarms / 100 d"),
)


def _cell(g: pd.DataFrame, m: str) -> str:
    v, lo, hi = g[m].mean(), g[f"{m}_low"].mean(), g[f"{m}_high"].mean()
    if not np.isfinite(v):
        return "n/a"
    if m == "false_alarms_per_100_days":
        return f"{v:.1f} [{lo:.1f}-{hi:.1f}]"
    return f"{v:.3f} [{lo:.3f}-{hi:.3f}]"


def _name(learner: str, training: str) -> str:
    return learner if training == "case-control" else f"{learner} (online-trained)"


def online_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Learner x online metric: mean over split seeds [mean bootstrap interval]."""
    rows = []
    for (learner, training), g in metrics.groupby(["learner", "training"], sort=True):
        row = {"learner": _name(learner, training), "seeds": int(g["seed"].nunique())}
        row.update({label: _cell(g, m) for m, label in _METRICS})
        med = g["warning_hours_median"].mean()
        row["warning h, median (IQR)"] = (
            f"{med:.1f} ({g['warning_hours_q1'].mean():.1f}-{g['warning_hours_q3'].mean():.1f})"
            if np.isfinite(med)
            else "n/a"
        )
        row["test stays"] = f"{int(g['n_stays'].iloc[0])}" + (
            " (subsample)" if g["subsampled"].any() else ""
        )
        rows.append(row)
    return pd.DataFrame(rows)


def side_by_side(metrics: pd.DataFrame, summary: pd.DataFrame | None) -> pd.DataFrame:
    """Case-control AUROC/AUPRC at 0 h (the same h0 models) beside the online metrics."""
    rows = []
    cc = summary if summary is not None else pd.DataFrame()
    for (learner, training), g in metrics.groupby(["learner", "training"], sort=True):
        row = {"learner": _name(learner, training)}
        s = cc[(cc["learner"] == learner) & (cc["horizon"] == 0)] if len(cc) else cc
        if "external" in s:
            s = s[~s["external"].astype(bool)]
        if len(s) and training == "case-control":
            s = s.sort_values("regime", key=lambda r: r != "train_once").iloc[0]
            row["case-control AUROC (0 h)"] = f"{s['auroc_mean']:.3f}"
            row["case-control AUPRC (0 h)"] = f"{s['auprc_mean']:.3f}"
            row["case-control prevalence"] = f"{s['prevalence']:.3f}"
        else:
            row.update({k: "-" for k in ("case-control AUROC (0 h)", "case-control AUPRC (0 h)",
                                         "case-control prevalence")})  # fmt: skip
        row["online AUROC"] = f"{g['auroc'].mean():.3f}"
        row["online AUPRC"] = f"{g['auprc'].mean():.3f}"
        row["online prevalence (hours)"] = f"{g['prevalence_hours'].mean():.3f}"
        row["utility"] = f"{g['utility'].mean():.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def utility_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per learner and split seed: the validation-chosen threshold and the test utility."""
    out = metrics[["learner", "training", "seed", "threshold", "val_utility", "utility"]].copy()
    out["utility"] = [
        f"{u:.3f} [{lo:.3f}-{hi:.3f}]"
        for u, lo, hi in zip(
            metrics["utility"], metrics["utility_low"], metrics["utility_high"], strict=True
        )
    ]
    out["learner"] = [_name(a, b) for a, b in zip(out["learner"], out["training"], strict=True)]
    out = out.drop(columns="training").rename(
        columns={"val_utility": "validation utility", "utility": "test utility [95% CI]"}
    )
    return out.round(3)


def online_context(online_dir: Path) -> dict | None:
    """The report context of an online evaluation folder, or None when there is none."""
    online_dir = Path(online_dir)
    if not (online_dir / "manifest.json").exists():
        return None
    metrics = pd.read_csv(online_dir / "metrics.csv")
    plots = {
        k: online_dir / "plots" / f
        for k, f in (
            ("online_utility", "utility_vs_threshold.png"),
            ("online_warning", "warning_hours.png"),
            ("online_trajectories", "trajectories.png"),
        )
        if (online_dir / "plots" / f).exists()
    }
    import json

    man = json.loads((online_dir / "manifest.json").read_text())
    counts = dict(man.get("counts", {}), wall_seconds=man.get("wall_seconds"))
    return {"metrics": metrics, "plots": plots, "counts": counts}


def counts_text(counts: dict) -> str:
    """One sentence on what was scored: stays, hours, those outside the cohort, exclusions."""
    ex = dict(counts.get("exclusions", {}))
    if not ex:
        return ""
    scored, hours = ex.pop("scored stays", "?"), ex.pop("scored hours", "?")
    total = ex.pop("stays", "?")
    parts = ", ".join(f"{k}: {v}" for k, v in ex.items())
    text = (
        f"{scored} of {total} stays scored ({hours} hours over all splits; "
        f"{counts.get('stays_outside_cohort', '?')} outside the matched cohort); removed: {parts}."
    )
    if counts.get("wall_seconds") is not None:
        text += f" Wall time of the online stage: {float(counts['wall_seconds']):.0f} s."
    if counts.get("missing_models"):
        text += " No h0 model for: " + ", ".join(counts["missing_models"]) + "."
    return text
