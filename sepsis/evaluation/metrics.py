"""Ranking metrics (AUPRC, AUROC), stay-level bootstrap intervals and the metrics table.

The bootstrap is vectorised: a resample of the stays is a vector of multiplicities
(how often each stay was drawn), so the scores are sorted ONCE, tied scores are grouped
once, and a whole batch of resamples is evaluated with a few matrix operations
(`np.add.reduceat` over the tie groups, then cumulative sums). The per-resample values are
identical to scikit-learn's `average_precision_score` / `roc_auc_score` evaluated on the
resampled arrays (tests check this), because a resample's distinct thresholds are a
subset of the original's and a tie group absent from the resample contributes nothing.

`metric` arguments accept "auprc" / "auroc" (fast path) or any callable `f(y, s) -> float`
(slow path: one call per resample).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

log = logging.getLogger(__name__)

MetricArg = str | Callable[[np.ndarray, np.ndarray], float]

PREDICTION_COLUMNS = (
    "learner",
    "horizon",
    "seed",
    "stay_id",
    "y_true",
    "score",
    "regime",
    "external",
)
GROUP_COLUMNS = ["learner", "regime", "external", "horizon", "seed"]
SUMMARY_KEYS = ["learner", "regime", "external", "horizon"]

# Resamples evaluated per matrix batch: bounds memory at ~batch x n x 8 bytes per array.
_MAX_BATCH_CELLS = 4_000_000


def _check_binary(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    s = np.asarray(s, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"y and scores must be 1-D of equal length, got {y.shape} and {s.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"y must be binary 0/1, got values {np.unique(y)[:5]}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} non-finite values")
    return y.astype(np.int64), s


def auprc(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve, step-wise); NaN without positives."""
    y, s = _check_binary(y, s)
    if y.sum() == 0:
        return float("nan")
    return float(average_precision_score(y, s))


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve; NaN unless both classes are present."""
    y, s = _check_binary(y, s)
    if y.sum() == 0 or y.sum() == len(y):
        return float("nan")
    return float(roc_auc_score(y, s))


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"auprc": auprc, "auroc": auroc}


class _Ranked:
    """Scores sorted once (descending) and grouped into ties, for batched evaluation."""

    def __init__(self, y: np.ndarray, s: np.ndarray):
        self.order = np.argsort(-s, kind="mergesort")
        s_sorted = s[self.order]
        self.y_sorted = y[self.order].astype(np.float64)
        # start index of each tie group in sorted order
        self.starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])

    def group_counts(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positive and negative weight per tie group, for weight rows `w` (B, n) in ORIGINAL order."""
        ws = w[:, self.order].astype(np.float64)
        pos = ws * self.y_sorted
        neg = ws - pos
        if len(self.starts) < len(self.order):  # ties: sum within each group of equal scores
            pos = np.add.reduceat(pos, self.starts, axis=1)
            neg = np.add.reduceat(neg, self.starts, axis=1)
        return pos, neg


def _ap_from_groups(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Average precision per row from per-tie-group positive/negative weights (descending score)."""
    tp = np.cumsum(pos, axis=1)
    fp = np.cumsum(neg, axis=1)
    total = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        ap = (pos * precision).sum(axis=1) / total
    ap[total == 0] = np.nan
    return ap


def _auc_from_groups(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC AUC per row (Mann-Whitney with half credit for ties) from descending tie groups."""
    neg_above = np.cumsum(neg, axis=1) - neg  # negatives with strictly higher score
    n_pos = pos.sum(axis=1)
    n_neg = neg.sum(axis=1)
    # a positive beats every negative strictly below it, and half of those tied with it
    beats = pos * (n_neg[:, None] - neg_above - neg) + 0.5 * pos * neg
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = beats.sum(axis=1) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def _batched(metric: str, ranked: _Ranked, w: np.ndarray) -> np.ndarray:
    pos, neg = ranked.group_counts(w)
    return _ap_from_groups(pos, neg) if metric == "auprc" else _auc_from_groups(pos, neg)


def _resample_indices(
    y: np.ndarray, n_resamples: int, rng: np.random.Generator, stratified: bool
) -> np.ndarray:
    """(B, n) stay indices drawn with replacement; stratified keeps the case count fixed."""
    n = len(y)
    if not stratified:
        return rng.integers(0, n, size=(n_resamples, n))
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    parts = []
    if len(pos):
        parts.append(pos[rng.integers(0, len(pos), size=(n_resamples, len(pos)))])
    if len(neg):
        parts.append(neg[rng.integers(0, len(neg), size=(n_resamples, len(neg)))])
    return np.concatenate(parts, axis=1)


def _multiplicities(idx: np.ndarray, n: int) -> np.ndarray:
    """Turn (B, n_draw) indices into (B, n) counts of how often each stay was drawn."""
    b = idx.shape[0]
    flat = (idx + (np.arange(b) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n)


def _bootstrap_values(
    y: np.ndarray,
    scores: list[np.ndarray],
    metric: MetricArg,
    n_resamples: int,
    seed: int,
    stratified: bool,
) -> list[np.ndarray]:
    """Metric values over the same resamples for each score vector in `scores`."""
    return _bootstrap_matrix(y, scores, [metric], n_resamples, seed, stratified)[0]


def _bootstrap_matrix(
    y: np.ndarray,
    scores: list[np.ndarray],
    metrics: list[MetricArg],
    n_resamples: int,
    seed: int,
    stratified: bool,
) -> list[list[np.ndarray]]:
    """[metric][score] arrays of values over ONE set of resamples shared by all metrics and scores.

    The resamples depend only on (y, n_resamples, seed, stratified), so one metric computed
    alone or together with others gets identical values.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    out: list[list[list[np.ndarray]]] = [[[] for _ in scores] for _ in metrics]
    batch = max(1, min(n_resamples, _MAX_BATCH_CELLS // max(n, 1)))
    for m in metrics:
        if isinstance(m, str) and m not in _METRICS:
            raise ValueError(f"metric: expected one of {sorted(_METRICS)} or a callable, got {m!r}")
    ranked = [_Ranked(y, s) for s in scores] if any(isinstance(m, str) for m in metrics) else []
    done = 0
    while done < n_resamples:
        b = min(batch, n_resamples - done)
        idx = _resample_indices(y, b, rng, stratified)
        w = _multiplicities(idx, n) if ranked else None
        for k, s in enumerate(scores):
            groups = ranked[k].group_counts(w) if ranked else None
            for mi, m in enumerate(metrics):
                if isinstance(m, str):
                    f = _ap_from_groups if m == "auprc" else _auc_from_groups
                    out[mi][k].append(f(*groups))
                    continue
                vals = np.empty(b)
                for j in range(b):
                    yy = y[idx[j]]
                    vals[j] = m(yy, s[idx[j]]) if 0 < yy.sum() < len(yy) else np.nan
                out[mi][k].append(vals)
        done += b
    return [[np.concatenate(v) for v in per_metric] for per_metric in out]


def _point(metric: MetricArg, y: np.ndarray, s: np.ndarray) -> float:
    if isinstance(metric, str):
        if metric not in _METRICS:
            raise ValueError(
                f"metric: expected one of {sorted(_METRICS)} or a callable, got {metric!r}"
            )
        return _METRICS[metric](y, s)
    return float(metric(y, s))


def _percentiles(vals: np.ndarray, alpha: float, what: str) -> tuple[float, float]:
    ok = vals[np.isfinite(vals)]
    if len(ok) < len(vals):
        # resamples with a single class have no AUPRC/AUROC: counted, not hidden
        log.warning(
            "%s: %d of %d bootstrap resamples undefined (one class only); ignored",
            what,
            len(vals) - len(ok),
            len(vals),
        )
    if len(ok) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    y: np.ndarray,
    s: np.ndarray,
    metric: MetricArg = "auprc",
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    stratified: bool = True,
) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap (1 - alpha) interval over stays: (point, low, high).

    `stratified` resamples cases and controls separately, so every resample keeps the
    observed prevalence (and both classes). NaN triple when the metric is undefined.
    """
    y, s = _check_binary(y, s)
    point = _point(metric, y, s)
    if not np.isfinite(point) or n_resamples <= 0:
        return point, float("nan"), float("nan")
    (vals,) = _bootstrap_values(y, [s], metric, n_resamples, seed, stratified)
    lo, hi = _percentiles(vals, alpha, str(metric))
    return point, lo, hi


def bootstrap_cis(
    y: np.ndarray,
    s: np.ndarray,
    metrics: tuple[str, ...] = ("auprc", "auroc"),
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    stratified: bool = True,
) -> dict[str, tuple[float, float, float]]:
    """`bootstrap_ci` for several metrics over one shared set of resamples (faster, same values)."""
    y, s = _check_binary(y, s)
    res = {m: (_point(m, y, s), float("nan"), float("nan")) for m in metrics}
    todo = [m for m in metrics if np.isfinite(res[m][0])]
    if not todo or n_resamples <= 0:
        return res
    vals = _bootstrap_matrix(y, [s], todo, n_resamples, seed, stratified)
    for m, v in zip(todo, vals, strict=True):
        res[m] = (res[m][0], *_percentiles(v[0], alpha, str(m)))
    return res


def paired_bootstrap_diff(
    y: np.ndarray,
    s_a: np.ndarray,
    s_b: np.ndarray,
    metric: MetricArg = "auprc",
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    stratified: bool = True,
) -> tuple[float, float, float, float]:
    """metric(a) - metric(b) on the same stays, with a paired bootstrap interval and p-value.

    Both learners are evaluated on the SAME resamples. Returns (diff, low, high, p_value),
    p_value two-sided: 2 * min(share of resampled differences <= 0, share >= 0), capped at 1.
    """
    y, s_a = _check_binary(y, s_a)
    _, s_b = _check_binary(y, s_b)
    diff = _point(metric, y, s_a) - _point(metric, y, s_b)
    if not np.isfinite(diff) or n_resamples <= 0:
        return diff, float("nan"), float("nan"), float("nan")
    va, vb = _bootstrap_values(y, [s_a, s_b], metric, n_resamples, seed, stratified)
    d = va - vb
    d = d[np.isfinite(d)]
    lo, hi = _percentiles(d, alpha, f"paired {metric}")
    if len(d) == 0:
        return diff, lo, hi, float("nan")
    p = min(1.0, 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    return float(diff), lo, hi, p


def check_predictions(predictions: pd.DataFrame, where: str = "predictions") -> None:
    """Raise ValueError naming the column and row when `predictions` breaks the contract."""
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"{where}: missing columns {missing}; expected {list(PREDICTION_COLUMNS)}")
    bad = ~predictions["y_true"].isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{where}: column y_true row {i} = {predictions['y_true'].iloc[i]!r}, expected 0 or 1"
        )
    bad_regime = ~predictions["regime"].isin(["per_horizon", "train_once"])
    if bad_regime.any():
        i = int(np.flatnonzero(bad_regime.to_numpy())[0])
        raise ValueError(
            f"{where}: column regime row {i} = {predictions['regime'].iloc[i]!r}, "
            "expected 'per_horizon' or 'train_once'"
        )
    dup = predictions.duplicated(GROUP_COLUMNS + ["stay_id"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(
            f"{where}: row {i} repeats stay_id {predictions['stay_id'].iloc[i]} within "
            f"(learner, regime, external, horizon, seed); each stay must be scored once"
        )


def metrics_table(
    predictions: pd.DataFrame,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per (learner, regime, external, horizon, seed) with AUPRC/AUROC and bootstrap CIs.

    Columns: the group keys, n, n_pos, prevalence, n_missing_score, auprc, auprc_low,
    auprc_high, auroc, auroc_low, auroc_high. Rows with a NaN score are excluded from the
    metrics and counted in n_missing_score (all NaN -> NaN metrics, shown as "n/a").
    """
    from tqdm.auto import tqdm

    check_predictions(predictions)
    rows = []
    groups = predictions.groupby(GROUP_COLUMNS, sort=True, dropna=False)
    for keys, g in tqdm(
        groups, total=groups.ngroups, desc="metrics", unit="group", disable=not progress
    ):
        y_all = g["y_true"].to_numpy().astype(np.int64)
        s_all = g["score"].to_numpy(dtype=np.float64)
        ok = np.isfinite(s_all)
        n_missing = int((~ok).sum())
        if n_missing and ok.any():
            log.warning(
                "%s: %d of %d scores are NaN; excluded from the metrics and counted in n_missing_score",
                dict(zip(GROUP_COLUMNS, keys, strict=True)),
                n_missing,
                len(s_all),
            )
        y, s = y_all[ok], s_all[ok]
        row = dict(zip(GROUP_COLUMNS, keys, strict=True))
        row.update(
            n=len(y_all),
            n_pos=int(y_all.sum()),
            prevalence=float(y_all.mean()) if len(y_all) else np.nan,
            n_missing_score=n_missing,
        )
        if len(y) and 0 < y.sum() < len(y):
            cis = bootstrap_cis(
                y, s, ("auprc", "auroc"), n_resamples=n_resamples, seed=seed, alpha=alpha
            )
        else:
            cis = {name: (float("nan"),) * 3 for name in ("auprc", "auroc")}
        for name, (point, lo, hi) in cis.items():
            row.update({name: point, f"{name}_low": lo, f"{name}_high": hi})
        rows.append(row)
    cols = GROUP_COLUMNS + [
        "n",
        "n_pos",
        "prevalence",
        "n_missing_score",
        "auprc",
        "auprc_low",
        "auprc_high",
        "auroc",
        "auroc_low",
        "auroc_high",
    ]
    return pd.DataFrame(rows, columns=cols)


def summarise_over_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, min, max over split seeds per (learner, regime, external, horizon).

    Also `*_ci_low` / `*_ci_high`: the per-seed bootstrap 95% bounds averaged over seeds
    (the typical interval of one split, not an interval for the mean), and the mean
    prevalence and test-set size. std is the sample std (ddof=1); NaN with one seed.
    """
    rows = []
    for keys, g in table.groupby(SUMMARY_KEYS, sort=True, dropna=False):
        row = dict(zip(SUMMARY_KEYS, keys, strict=True))
        row.update(
            n_seeds=int(g["seed"].nunique()),
            n_mean=float(g["n"].mean()),
            prevalence=float(g["prevalence"].mean()),
        )
        for m in ("auprc", "auroc"):
            v = g[m].to_numpy(dtype=float)
            fin = v[np.isfinite(v)]
            row[f"{m}_mean"] = float(fin.mean()) if len(fin) else np.nan
            row[f"{m}_std"] = float(fin.std(ddof=1)) if len(fin) > 1 else np.nan
            row[f"{m}_min"] = float(fin.min()) if len(fin) else np.nan
            row[f"{m}_max"] = float(fin.max()) if len(fin) else np.nan
            row[f"{m}_ci_low"] = (
                float(np.nanmean(g[f"{m}_low"])) if g[f"{m}_low"].notna().any() else np.nan
            )
            row[f"{m}_ci_high"] = (
                float(np.nanmean(g[f"{m}_high"])) if g[f"{m}_high"].notna().any() else np.nan
            )
        rows.append(row)
    cols = (
        SUMMARY_KEYS
        + ["n_seeds", "n_mean", "prevalence"]
        + [
            f"{m}_{stat}"
            for m in ("auprc", "auroc")
            for stat in ("mean", "std", "min", "max", "ci_low", "ci_high")
        ]
    )
    return pd.DataFrame(rows, columns=cols)


def paired_differences(
    predictions: pd.DataFrame,
    horizons: tuple[int, ...] = (0, 7),
    metric: str = "auprc",
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired bootstrap differences between every pair of learners at the given horizons.

    Learners are paired within (regime, external, horizon, seed) on the stays both scored;
    one row per pair and seed: learner_a, learner_b, diff, low, high, p_value, n.
    """
    check_predictions(predictions)
    rows = []
    sub = predictions[predictions["horizon"].isin(horizons)]
    for keys, g in sub.groupby(["regime", "external", "horizon", "seed"], sort=True):
        wide = g.pivot(index="stay_id", columns="learner", values="score")
        y = g.drop_duplicates("stay_id").set_index("stay_id")["y_true"]
        learners = sorted(wide.columns)
        for i, a in enumerate(learners):
            for b in learners[i + 1 :]:
                both = wide[[a, b]].dropna()
                yy = y.loc[both.index].to_numpy().astype(np.int64)
                if len(yy) == 0 or not 0 < yy.sum() < len(yy):
                    continue
                d, lo, hi, p = paired_bootstrap_diff(
                    yy,
                    both[a].to_numpy(),
                    both[b].to_numpy(),
                    metric,
                    n_resamples=n_resamples,
                    seed=seed,
                )
                rows.append(
                    dict(
                        zip(["regime", "external", "horizon", "seed"], keys, strict=True),
                        metric=metric,
                        learner_a=a,
                        learner_b=b,
                        diff=d,
                        low=lo,
                        high=hi,
                        p_value=p,
                        n=len(yy),
                    )
                )
    return pd.DataFrame(
        rows,
        columns=[
            "regime",
            "external",
            "horizon",
            "seed",
            "metric",
            "learner_a",
            "learner_b",
            "diff",
            "low",
            "high",
            "p_value",
            "n",
        ],
    )
