"""Report figures (matplotlib, Agg canvas, no pyplot global state); each function writes one PNG.

Every function takes the data and an output path, writes the PNG atomically (temporary
file + rename) and returns the path. Learners keep the same colour in every figure
(`learner_colours`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

SOFA_COMPONENTS = ("resp", "coag", "liver", "cardio", "cns", "renal")
_DPI = 110


def learner_colours(learners: Iterable[str]) -> dict[str, tuple]:
    """A fixed colour per learner name (tab10 in sorted order)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(sorted(set(learners)))}


def _series_label(
    learner: str, regime: str | None = None, external: bool | None = None, regimes: int = 1
) -> str:
    label = learner
    if regime is not None and regimes > 1:
        label += f" ({regime.replace('_', '-')})"
    if external:
        label += " [external]"
    return label


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=_DPI)
    tmp.replace(path)
    return path


def _empty(ax, text: str) -> None:
    ax.text(
        0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.4"
    )
    ax.set_xticks([])
    ax.set_yticks([])


def plot_metric_vs_horizon(
    summary: pd.DataFrame, metric: str, path: str | Path, title: str | None = None
) -> Path:
    """Mean metric over seeds vs hours before onset, one line per learner/regime, CI band shaded.

    The band is the per-seed bootstrap 95% interval averaged over seeds (summary columns
    `<metric>_ci_low/_ci_high`). On AUPRC plots the prevalence (the AUPRC of a random
    score) is a dashed grey line.
    """
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    colours = learner_colours(summary["learner"]) if len(summary) else {}
    regimes = summary["regime"].nunique() if len(summary) else 1
    styles = {"per_horizon": "-", "train_once": "--"}
    plotted = 0
    for (learner, regime, external), g in summary.groupby(
        ["learner", "regime", "external"], sort=True
    ):
        g = g.sort_values("horizon")
        y = g[f"{metric}_mean"].to_numpy(dtype=float)
        if not np.isfinite(y).any():
            continue  # e.g. SOFA increase without SOFA data: shown as n/a in the tables
        x = g["horizon"].to_numpy()
        c = colours[learner]
        ax.plot(
            x,
            y,
            styles.get(regime, "-"),
            marker="o",
            color=c,
            lw=2,
            label=_series_label(learner, regime, external, regimes),
        )
        lo, hi = (
            g[f"{metric}_ci_low"].to_numpy(dtype=float),
            g[f"{metric}_ci_high"].to_numpy(dtype=float),
        )
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
        plotted += 1
    if metric == "auprc" and len(summary):
        prev = summary.groupby("horizon")["prevalence"].mean()
        ax.plot(
            prev.index,
            prev.to_numpy(),
            ls=(0, (6, 3)),  # dashed, finer than the train-once learner lines
            color="0.3",
            lw=1.6,
            label="prevalence (random score)",
        )
    elif metric == "auroc":
        ax.axhline(0.5, ls=":", color="0.35", lw=1.5, label="random score")
    if not plotted:
        _empty(ax, "no results")
    else:
        ax.set_xlabel("hours before (pseudo-)onset")
        ax.set_ylabel(f"{metric.upper()} (mean over seeds)")
        ax.invert_xaxis()  # onset on the right, as time runs
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="best")
    ax.set_title(title or f"{metric.upper()} by prediction horizon (band: bootstrap 95% CI)")
    return _save(fig, path)


def _pick_seed(pred: pd.DataFrame, seed: int | None) -> tuple[pd.DataFrame, int | None]:
    if seed is None and len(pred):
        seed = int(pred["seed"].min())
    return pred[pred["seed"] == seed], seed


def plot_curves(
    predictions: pd.DataFrame,
    horizon: int,
    path: str | Path,
    kind: str = "pr",
    seed: int | None = None,
) -> Path:
    """Precision-recall (`kind="pr"`) or ROC (`kind="roc"`) curves of every learner at one horizon.

    Uses one split seed (default: the smallest) so each curve is one model's test set.
    """
    if kind not in ("pr", "roc"):
        raise ValueError(f"kind: expected 'pr' or 'roc', got {kind!r}")
    fig = Figure(figsize=(6.0, 5.2))
    ax = fig.add_subplot(1, 1, 1)
    pred, seed = _pick_seed(predictions[predictions["horizon"] == horizon], seed)
    colours = learner_colours(predictions["learner"]) if len(predictions) else {}
    regimes = pred["regime"].nunique() if len(pred) else 1
    plotted = 0
    prev = None
    for (learner, regime, external), g in pred.groupby(
        ["learner", "regime", "external"], sort=True
    ):
        g = g[np.isfinite(g["score"].to_numpy(dtype=float))]
        y, s = g["y_true"].to_numpy(), g["score"].to_numpy(dtype=float)
        if len(y) == 0 or not 0 < y.sum() < len(y):
            continue
        ls = "-" if regime == "per_horizon" else "--"
        label = _series_label(learner, regime, external, regimes)
        if kind == "pr":
            p, r, _ = precision_recall_curve(y, s)
            ax.step(r, p, where="post", ls=ls, color=colours[learner], lw=1.8, label=label)
            prev = y.mean()
        else:
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, ls=ls, color=colours[learner], lw=1.8, label=label)
        plotted += 1
    if not plotted:
        _empty(ax, f"no predictions at {horizon} h")
    else:
        if kind == "pr":
            ax.axhline(prev, ls=":", color="0.35", label=f"prevalence {prev:.3f}")
            ax.set_xlabel("recall (sensitivity)")
            ax.set_ylabel("precision (PPV)")
        else:
            ax.plot([0, 1], [0, 1], ":", color="0.35", label="random score")
            ax.set_xlabel("false positive rate (1 - specificity)")
            ax.set_ylabel("true positive rate (sensitivity)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="best")
    name = "Precision-recall" if kind == "pr" else "ROC"
    ax.set_title(f"{name} curves, {horizon} h before onset (split seed {seed})")
    return _save(fig, path)


def plot_calibration(
    predictions: pd.DataFrame,
    horizon: int,
    path: str | Path,
    n_bins: int = 10,
    seed: int | None = None,
) -> Path:
    """Reliability diagram at one horizon: observed case rate per bin of predicted score.

    Bins are quantiles of each learner's score (equal counts); only scores in [0, 1] are
    probabilities, other learners are skipped. Class-weighted training inflates scores, so
    points below the diagonal are expected and do not affect AUPRC/AUROC.
    """
    fig = Figure(figsize=(6.0, 5.2))
    ax = fig.add_subplot(1, 1, 1)
    pred, seed = _pick_seed(predictions[predictions["horizon"] == horizon], seed)
    colours = learner_colours(predictions["learner"]) if len(predictions) else {}
    plotted = 0
    for (learner, regime, external), g in pred.groupby(
        ["learner", "regime", "external"], sort=True
    ):
        s = g["score"].to_numpy(dtype=float)
        ok = np.isfinite(s)
        s, y = s[ok], g["y_true"].to_numpy()[ok]
        if len(s) < n_bins or s.min() < 0 or s.max() > 1:
            continue
        edges = np.unique(np.quantile(s, np.linspace(0, 1, n_bins + 1)))
        b = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, len(edges) - 2)
        mean_s = np.array([s[b == k].mean() for k in range(len(edges) - 1) if (b == k).any()])
        rate = np.array([y[b == k].mean() for k in range(len(edges) - 1) if (b == k).any()])
        ls = "-" if regime == "per_horizon" else "--"
        ax.plot(
            mean_s,
            rate,
            ls=ls,
            marker="o",
            color=colours[learner],
            label=_series_label(learner, regime, external),
        )
        plotted += 1
    ax.plot([0, 1], [0, 1], ":", color="0.35", label="perfect calibration")
    if not plotted:
        _empty(ax, "no probability scores")
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed fraction of cases (bin)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    ax.set_title(f"Calibration, {horizon} h before onset (seed {seed}, {n_bins} quantile bins)")
    return _save(fig, path)


def plot_training_curves(history: pd.DataFrame, path: str | Path) -> Path:
    """Training loss and validation AUPRC per epoch; one thin line per (learner, seed, horizon).

    `history` columns: learner, seed, horizon, epoch, loss, val_auprc (NaN allowed).
    The bold line per learner is the mean over its runs.
    """
    fig = Figure(figsize=(11.0, 4.4))
    axes = [fig.add_subplot(1, 2, k + 1) for k in range(2)]
    if history is None or len(history) == 0:
        for ax in axes:
            _empty(ax, "no training history")
        axes[0].set_title("Training loss")
        axes[1].set_title("Validation AUPRC")
        return _save(fig, path)
    colours = learner_colours(history["learner"])
    for ax, col, name in (
        (axes[0], "loss", "training loss"),
        (axes[1], "val_auprc", "validation AUPRC"),
    ):
        for learner, gl in history.groupby("learner", sort=True):
            if col not in gl or not gl[col].notna().any():
                continue
            run_keys = [k for k in ("regime", "seed", "horizon") if k in gl.columns]
            for _, g in gl.groupby(run_keys) if run_keys else [(None, gl)]:
                g = g.sort_values("epoch")
                ax.plot(g["epoch"], g[col], color=colours[learner], alpha=0.25, lw=0.8)
            m = gl.groupby("epoch")[col].mean()
            ax.plot(
                m.index, m.to_numpy(), color=colours[learner], lw=2.2, label=f"{learner} (mean)"
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name[0].upper() + name[1:] + " per epoch (thin: one seed x horizon)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
    return _save(fig, path)


def plot_search_curves(curves: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Validation AUPRC (smoothed, as the pruner saw it) per epoch of every search trial.

    `curves` columns: trial, state, epoch, val_auprc_smoothed (or val_auprc); one unit's
    trials. Complete trials are solid, pruned ones dashed, the best complete trial bold.
    """
    fig = Figure(figsize=(7.5, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    if curves is None or len(curves) == 0:
        _empty(ax, "no search trials")
        return _save(fig, path)
    col = "val_auprc_smoothed" if "val_auprc_smoothed" in curves else "val_auprc"
    last = curves.sort_values("epoch").groupby("trial").tail(1)
    done = last[last["state"] == "complete"]
    best = int(done.loc[done[col].idxmax(), "trial"]) if len(done) else None
    for trial, g in curves.groupby("trial", sort=True):
        g = g.sort_values("epoch")
        state = g["state"].iloc[0]
        if trial == best:
            ax.plot(g["epoch"], g[col], color="#cc3311", lw=2.4, label=f"best (trial {trial})")
        elif state == "complete":
            ax.plot(g["epoch"], g[col], color="#4477aa", lw=1.0, alpha=0.7)
        else:
            ax.plot(g["epoch"], g[col], color="0.5", lw=0.9, ls="--", alpha=0.7)
    ax.plot([], [], color="#4477aa", lw=1.0, label="complete")
    ax.plot([], [], color="0.5", lw=0.9, ls="--", label="pruned / failed")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation AUPRC" + (" (smoothed)" if col.endswith("smoothed") else ""))
    ax.set_title(title or "Search trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return _save(fig, path)


def plot_onset_hours(onset_hours: np.ndarray | pd.Series, path: str | Path, bins: int = 48) -> Path:
    """Histogram of cases' onset hour after ICU admission (first 10 days; later onsets in the last bar)."""
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    h = np.asarray(onset_hours, dtype=float)
    h = h[np.isfinite(h)]
    if len(h) == 0:
        _empty(ax, "no onsets")
    else:
        cap = 240.0
        ax.hist(
            np.minimum(h, cap),
            bins=np.linspace(0, cap, bins + 1),
            color="#4477aa",
            edgecolor="white",
        )
        ax.set_xlabel("onset hour after ICU admission (capped at 240 h)")
        ax.set_ylabel("cases")
        ax.grid(alpha=0.3, axis="y")
        ax.axvline(
            np.median(h),
            color="#cc3311",
            ls="--",
            label=f"median {np.median(h):.0f} h (n={len(h)})",
        )
        ax.legend(fontsize=9)
    ax.set_title("Sepsis-3 onset time distribution")
    return _save(fig, path)


def sofa_component_counts(onsets: pd.DataFrame) -> pd.Series:
    """Share of cases in which each SOFA component rose at onset, from `components_rose`."""
    rose = onsets["components_rose"].dropna().astype(str)
    rose = rose[rose.str.len() > 0]
    n = len(rose)
    counts = {
        c: int(rose.str.split(",").apply(lambda xs, c=c: c in [x.strip() for x in xs]).sum())
        for c in SOFA_COMPONENTS
    }
    return pd.Series({c: counts[c] / n if n else np.nan for c in SOFA_COMPONENTS}, name="share")


def plot_sofa_components(onsets: pd.DataFrame, path: str | Path) -> Path:
    """Bar chart of SOFA components at onset.

    With a `components_rose` column (onsets audit table): share of cases in which each
    component rose. Otherwise with `sofa_<component>` columns (labels at the onset hour):
    mean points per component.
    """
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    cols = [f"sofa_{c}" for c in SOFA_COMPONENTS]
    if "components_rose" in onsets.columns and onsets["components_rose"].notna().any():
        vals = sofa_component_counts(onsets)
        ylabel, title = "share of cases", "SOFA components that rose at onset"
    elif all(c in onsets.columns for c in cols) and len(onsets):
        vals = onsets[cols].mean().rename(index=dict(zip(cols, SOFA_COMPONENTS, strict=True)))
        ylabel, title = "mean points (0-4)", "SOFA components at onset (mean points)"
    else:
        vals = None
        title = "SOFA components at onset"
    if vals is None or not np.isfinite(vals.to_numpy(dtype=float)).any():
        _empty(ax, "no SOFA data (n/a)")
    else:
        bars = ax.bar(list(vals.index), vals.to_numpy(dtype=float), color="#228833")
        ax.bar_label(bars, fmt="%.2f", fontsize=9)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("organ system")
        ax.grid(alpha=0.3, axis="y")
    ax.set_title(title)
    return _save(fig, path)
