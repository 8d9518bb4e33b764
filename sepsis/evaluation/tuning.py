"""What the report shows about tuning: search trials and best parameters, the trials'
learning curves, and DTW-KNN's per-variable validation AUPRC.

`tuning_context(models_dir)` reads the files the train stage writes into each unit folder
(`search_trials.csv`, `search_curves.csv`, `search_best.json`, `variable_auprc.csv`) and
returns report context keys; `search_blocks` / `variable_blocks` turn them into tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

UNIT_KEYS = ["learner", "regime", "horizon", "seed"]
#: a variable whose validation AUPRC is below this multiple of the prevalence is flagged
UNINFORMATIVE_LIFT = 1.1


def _concat(files: list[Path]) -> pd.DataFrame:
    frames = [pd.read_csv(f) for f in files if f.stat().st_size]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def tuning_context(models_dir: Path) -> dict[str, Any]:
    """Report context keys `search_trials`, `search_curves`, `search_best`, `variable_auprc`
    (only those with content) from the unit folders under `models_dir`."""
    models_dir = Path(models_dir)
    if not models_dir.exists():
        return {}
    out: dict[str, Any] = {}
    for key, name in (
        ("search_trials", "search_trials.csv"),
        ("search_curves", "search_curves.csv"),
        ("variable_auprc", "variable_auprc.csv"),
    ):
        df = _concat(sorted(models_dir.rglob(name)))
        if len(df):
            out[key] = df
    best = [json.loads(f.read_text()) for f in sorted(models_dir.rglob("search_best.json"))]
    if best:
        out["search_best"] = best
    return out


def search_summary(best: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per searched unit: trials by state, minutes, best AUPRC and parameters."""
    rows = []
    for b in best:
        s = b.get("settings", {})
        p = b.get("best_params", {})
        searched = sorted(
            set(p)
            & {
                "levels",
                "kernel_size",
                "hidden",
                "batch_size",
                "lr",
                "l2",
                "dropout",
                "n_mc_samples",
                "mc_samples_predict",
            }
        )
        rows.append(
            {
                **{k: b.get(k) for k in UNIT_KEYS},
                "trials": ", ".join(f"{v} {k}" for k, v in sorted(b.get("trials", {}).items())),
                "budget": f"{s.get('trials')} trials"
                + (f", {s['budget_minutes']} min" if s.get("budget_minutes") else ""),
                "minutes": b.get("search_minutes"),
                "best val AUPRC": b.get("best_val_auprc"),
                "refit": "yes" if b.get("refit") else "no (best trial's model)",
                "best parameters": ", ".join(f"{k}={_short(p[k])}" for k in searched),
            }
        )
    return pd.DataFrame(rows)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def trials_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Every trial (pruned and failed ones too), in a fixed column order."""
    first = UNIT_KEYS + [
        "trial",
        "state",
        "val_auprc",
        "last_val_auprc",
        "stopped",
        "epochs_run",
        "best_epoch",
        "mc_samples_predict",
        "seconds",
    ]
    cols = [c for c in first if c in trials.columns]
    rest = [c for c in trials.columns if c not in cols and c != "retry_of"]
    out = trials[cols + rest].sort_values(UNIT_KEYS + ["trial"]).reset_index(drop=True)
    if {"mc_samples_predict", "n_mc_samples"} <= set(out.columns):
        # None = the trial's own training count
        out["mc_samples_predict"] = out["mc_samples_predict"].fillna(out["n_mc_samples"])
    text = out.astype(object)
    for c in out.columns:
        v = out[c]
        if not pd.api.types.is_numeric_dtype(v) or c in ("val_auprc", "last_val_auprc"):
            continue
        whole = v.dropna()
        if c == "seconds" or (len(whole) and (whole == whole.round()).all()):
            text[c] = [("" if pd.isna(x) else str(int(round(x)))) for x in v]
        else:  # lr, l2, dropout: 3 significant digits, not 3 decimals
            text[c] = [("" if pd.isna(x) else f"{x:.3g}") for x in v]
    return text


def variable_table(va: pd.DataFrame, learner: str) -> pd.DataFrame:
    """Per variable of one learner: validation AUPRC (mean over its units), lift over the
    prevalence, share of flat series, combination weight, the settings chosen, a flag."""
    g = va[va["learner"] == learner].groupby("variable", sort=False)
    df = pd.DataFrame(
        {
            "val AUPRC": g["auprc"].mean(),
            "prevalence": g["prevalence"].mean(),
            "flat share": g["flat_fraction"].mean(),
            "weight": g["combine_weight"].mean(),
            "k": g["k"].agg(lambda s: "/".join(map(str, sorted(set(s))))),
            "radius": g["radius"].agg(
                lambda s: "/".join(sorted({"full" if pd.isna(r) else str(int(r)) for r in s}))
            ),
            "weighting": g["weights"].agg(lambda s: "/".join(sorted(set(s)))),
            "units": g.size(),
        }
    )
    df.insert(2, "lift", df["val AUPRC"] / df["prevalence"])
    df["note"] = np.where(
        df["lift"] < UNINFORMATIVE_LIFT,
        np.where(df["flat share"] > 0.5, "too sparse to help", "no better than chance"),
        "",
    )
    return df.sort_values("val AUPRC", ascending=False).reset_index()
