"""The online evaluation's figures: utility vs threshold, hours of warning, risk trajectories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sepsis.evaluation.plots import _empty, _save, learner_colours


def _name(learner: str, training: str) -> str:
    return learner if training == "case-control" else f"{learner} (online-trained)"


def plot_utility_vs_threshold(curves: pd.DataFrame, metrics: pd.DataFrame, path: Path) -> Path:
    """Validation utility per alarm threshold (first split seed); dots = chosen thresholds."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    if curves.empty:
        _empty(ax, "no online predictions")
        return _save(fig, path)
    seed = int(curves["seed"].min())
    col = learner_colours(curves["learner"])
    for (learner, training), g in curves[curves["seed"] == seed].groupby(["learner", "training"]):
        g = g[np.isfinite(g["threshold"])]
        ls = "-" if training == "case-control" else "--"
        ax.plot(
            g["threshold"], g["utility"], ls, color=col[learner], label=_name(learner, training)
        )
        m = metrics[
            (metrics["learner"] == learner)
            & (metrics["training"] == training)
            & (metrics["seed"] == seed)
        ]
        if len(m) and np.isfinite(m["threshold"].iloc[0]):
            ax.plot(m["threshold"], m["val_utility"], "o", color=col[learner])
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("alarm threshold (score)")
    ax.set_ylabel("normalised utility (validation)")
    ax.set_title(f"Utility vs threshold, split seed {seed}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_warning_hours(alarms: pd.DataFrame, path: Path) -> Path:
    """Hours of warning before onset of the septic test stays warned at the chosen threshold."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    sep = alarms[alarms["septic"].astype(bool)] if len(alarms) else alarms
    groups = [] if sep.empty else list(sep.groupby(["learner", "training"]))
    data = [g["warning_hours"].dropna().to_numpy() for _, g in groups]
    if not any(len(d) for d in data):
        _empty(ax, "no septic test stay warned before onset")
        return _save(fig, path)
    ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=True)
    ax.set_xticks(np.arange(1, len(groups) + 1))
    ax.set_xticklabels(
        [
            f"{_name(lt[0], lt[1])}\n{len(d)}/{len(g)} warned"
            for (lt, g), d in zip(groups, data, strict=True)
        ],
        fontsize=7,
    )
    ax.set_ylabel("hours of warning before onset")
    ax.set_title("Hours of warning (test stays, all split seeds)")
    return _save(fig, path)


def plot_trajectories(preds: pd.DataFrame, metrics: pd.DataFrame, path: Path, n: int = 3) -> Path:
    """Risk score per hour of a few septic and non-septic test stays (best learner by utility)."""
    fig = Figure(figsize=(9, 5))
    test = preds[preds["split"] == "test"] if len(preds) else preds
    if test.empty or metrics.empty:
        _empty(fig.add_subplot(1, 1, 1), "no online predictions")
        return _save(fig, path)
    ok = metrics[np.isfinite(metrics["utility"])]
    best = (ok if len(ok) else metrics).sort_values("utility", ascending=False).iloc[0]
    sel = test[
        (test["learner"] == best["learner"])
        & (test["training"] == best["training"])
        & (test["seed"] == best["seed"])
    ]
    septic = sel.groupby("stay_id")["onset"].first().notna()
    rng = np.random.default_rng(0)
    for row, flag in enumerate((True, False)):
        ids = septic.index[septic == flag].to_numpy()
        ids = np.sort(rng.choice(ids, min(n, len(ids)), replace=False)) if len(ids) else ids
        for j in range(n):
            ax = fig.add_subplot(2, n, row * n + j + 1)
            if j >= len(ids):
                _empty(ax, "no stay")
                continue
            g = sel[sel["stay_id"] == ids[j]]
            ax.plot(g["hour"], g["score"], color="C3" if flag else "C0", lw=1.2)
            ax.axhline(best["threshold"], color="0.5", ls="--", lw=0.8)
            if flag:
                ax.axvline(g["onset"].iloc[0], color="k", lw=0.8)
            ax.set_title(f"{'septic' if flag else 'non-septic'} stay {ids[j]}", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(
        f"Risk trajectories: {_name(best['learner'], best['training'])}, seed {int(best['seed'])} "
        "(dashed: threshold, black: onset)",
        fontsize=9,
    )
    return _save(fig, path)


def write_plots(
    plot_dir: Path, preds: pd.DataFrame, metrics: pd.DataFrame, curves: pd.DataFrame, alarms
) -> dict[str, Path]:
    plot_dir = Path(plot_dir)
    return {
        "online_utility": plot_utility_vs_threshold(
            curves, metrics, plot_dir / "utility_vs_threshold.png"
        ),
        "online_warning": plot_warning_hours(alarms, plot_dir / "warning_hours.png"),
        "online_trajectories": plot_trajectories(preds, metrics, plot_dir / "trajectories.png"),
    }
