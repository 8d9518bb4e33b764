"""The report's tables: metric and spread per learner x horizon, cohort per split, paired
differences over seeds, and the plain-text summary printed at the end of a CLI run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sepsis.evaluation.report_render import _fmt


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
