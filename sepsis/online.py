"""Online evaluation (`sepsis evaluate --online`): every learner scores every ICU hour.

The case-control protocol scores one window per stay; here, for the validation and test
patients of each split seed, every scored hour t of every eligible stay gets the window
ending at t (`data_prep.online_windows`, the training window rule, nothing after t).

* Stays: every stay with hourly rows and observations, age >= cohort.min_age and (MIMIC)
  the cohort's dbsource, including those the matched cohort left out (controls not drawn,
  cases with an early onset); exclusions are counted.
* Splits: a cohort patient keeps the cohort's split; the other patients are split with
  `data_prep.cohort.patient_splits` (same fractions and seed, stratified by having a septic
  stay), so no cohort patient ever moves.
* Hours: labels_hourly hours >= online.min_hour; a septic stay stops at the challenge's
  t_sepsis + dt_late (t_sepsis = first labelled hour + 6; the utility of later hours is 0),
  unless online.score_after_onset.
* Labels: the challenge's shifted label ``hour >= onset - 6``; on PhysioNet this is the
  file's SepsisLabel column, on MIMIC sources it comes from our Sepsis-3 onsets.
* Models: each learner's train-once h0 model of the seed (else per-horizon h0); the
  threshold is chosen on validation hours only. Optionally logreg/gbm are also fitted on
  online windows of the training split (every hour a training example, subsampled).

Outputs (`<output_dir>/evaluation-online/`): predictions.parquet (hourly, val and test),
metrics.csv, thresholds.csv, utility_curves.csv, plots/*.png.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_prep import sources
from sepsis.evaluation.utility import UtilityParams

log = logging.getLogger(__name__)

ONLINE_DIR = "evaluation-online"
LABEL_SHIFT = 6  # the challenge labels 6 h before onset (= -UtilityParams.dt_optimal)


@dataclass(frozen=True)
class OnlineParams:
    """YAML section `online`."""

    learners: tuple[str, ...] | None = None  # None: every trained learner (not sofa)
    min_hour: int = 1  # first ICU hour scored
    # False: a septic stay stops at t_sepsis + dt_late (later hours have utility 0 either way);
    # True: every hour to the end of the stay, so an export lines up row by row with the
    # challenge's own .psv files (their SepsisLabel can serve as the scorer's labels)
    score_after_onset: bool = False
    max_stays: dict[str, int] = field(default_factory=lambda: {"mgp_tcn": 300, "dtw_knn": 300})
    subsample_seed: int = 0  # the seeded subsample of val/test stays under max_stays
    false_alarm_rate: float = 0.05
    fit_online_baselines: bool = True
    baseline_max_windows: int = 20000  # training hours drawn per online baseline (seeded)
    batch_windows: int = 2048
    n_thresholds: int = 200
    n_bootstrap: int = 200
    bootstrap_seed: int = 0

    def validate(self) -> None:
        from sepsis.config import LEARNERS

        for name in self.learners or ():
            if name not in LEARNERS or name == "sofa":
                raise ValueError(f"online.learners: unknown or untrained learner '{name}'")
        for name, n in self.max_stays.items():
            if n < 1:
                raise ValueError(f"online.max_stays.{name}: expected >= 1, got {n}")
        if self.min_hour < 0:
            raise ValueError("online.min_hour: expected >= 0")
        if not 0 < self.false_alarm_rate < 1:
            raise ValueError("online.false_alarm_rate: expected 0 < rate < 1")
        for key in ("baseline_max_windows", "batch_windows", "n_thresholds"):
            if getattr(self, key) < 2:
                raise ValueError(f"online.{key}: expected >= 2")
        if self.n_bootstrap < 0:
            raise ValueError("online.n_bootstrap: expected >= 0")


# ------------------------------------------------------------------------------- data


def all_observations(cfg, stays: pd.DataFrame, progress: bool = False) -> pd.DataFrame:
    """Every stay's observations: prepared/observations.parquet holds only the cohort windows."""
    from data_prep.observations import observations_from_extracted
    from sepsis.pipeline import PipelineError

    extracted = cfg.output_dir / "extracted"
    if not (extracted / "manifest.json").exists():
        raise PipelineError(
            f"online: no extracted tables at {extracted} (every stay's observations are read "
            "from there): run `sepsis prepare` first"
        )
    obs, _ = observations_from_extracted(extracted, stays, progress=progress)
    return obs


def online_hours(
    stays: pd.DataFrame,
    onsets: pd.DataFrame,
    labels_hourly: pd.DataFrame,
    obs_stays: np.ndarray,
    cohort_params,
    min_hour: int,
    dt_late: float = UtilityParams.dt_late,
    source_columns: tuple[str, ...] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """(hours, exclusion counts): one row per scored hour (stay_id, patient_id, hour, label,
    onset), stays and hours as in the module docstring. `source_columns`: the stay columns
    the source declares (the dbsource filter applies only when it declares dbsource, as in
    the cohort; None: it applies)."""

    s = stays.set_index("stay_id")
    counts: dict[str, int] = {"stays": int(len(s))}
    keep = s["age"] >= cohort_params.min_age
    counts["age"] = int((~keep).sum())
    if cohort_params.dbsource != "all" and (source_columns is None or "dbsource" in source_columns):
        other = s["dbsource"] != cohort_params.dbsource
        counts["dbsource"] = int((keep & other).sum())
        keep &= ~other
    no_obs = ~s.index.isin(obs_stays)
    counts["no observations"] = int((keep & no_obs).sum())
    keep &= ~no_obs
    ids = s.index[keep]
    on = onsets.drop_duplicates("stay_id").set_index("stay_id")["onset_hour"].astype(float)
    h = labels_hourly.loc[labels_hourly["stay_id"].isin(ids), ["stay_id", "hour"]]
    h = h[h["hour"] >= min_hour].sort_values(["stay_id", "hour"], kind="stable")
    counts["no hour >= min_hour"] = int(len(ids) - h["stay_id"].nunique())
    h = h.reset_index(drop=True)
    onset = h["stay_id"].map(on).to_numpy(float)
    hour = h["hour"].to_numpy(float)
    label = np.isfinite(onset) & (hour >= onset - LABEL_SHIFT)
    h["label"] = label.astype(np.int8)
    # the scorer's t_sepsis = first labelled hour + 6; a stay labelled from its first row
    # (PhysioNet: onset before the data) gets that as its onset too
    first_lab = pd.Series(np.where(label, hour, np.inf)).groupby(h["stay_id"]).transform("min")
    t_sepsis = first_lab.to_numpy() + LABEL_SHIFT
    h["onset"] = np.where(np.isfinite(onset), np.where(onset >= 0, onset, t_sepsis), np.nan)
    keep_h = ~np.isfinite(t_sepsis) | (hour <= t_sepsis + dt_late)
    counts["septic hours after t_sepsis + dt_late"] = int((~keep_h).sum())
    h = h[keep_h].reset_index(drop=True)
    h["patient_id"] = h["stay_id"].map(s["patient_id"]).astype(np.int64)
    counts["scored stays"] = int(h["stay_id"].nunique())
    counts["scored hours"] = int(len(h))
    return h, counts


def online_splits(hours: pd.DataFrame, cohort: pd.DataFrame, splits: pd.DataFrame, fractions):
    """stay_id, seed, split for every stay of `hours` (module docstring); cohort stays keep theirs."""
    from data_prep.cohort import patient_splits

    stay_pat = hours.drop_duplicates("stay_id")[["stay_id", "patient_id"]]
    septic = hours.groupby("stay_id")["onset"].first().notna()
    stay_pat = stay_pat.assign(septic=stay_pat["stay_id"].map(septic).to_numpy())
    frames = []
    for seed in sorted(splits["seed"].unique()):
        sp = splits[splits["seed"] == seed].merge(cohort[["stay_id", "patient_id"]], on="stay_id")
        by_pat = sp.drop_duplicates("patient_id").set_index("patient_id")["split"]
        split = stay_pat["patient_id"].map(by_pat)
        new = stay_pat[split.isna()]
        pats = new.groupby("patient_id")["septic"].max().rename("has_case").reset_index()
        extra = patient_splits(pats, tuple(fractions), int(seed)) if len(pats) else pd.Series()
        split = split.fillna(stay_pat["patient_id"].map(extra))
        frames.append(
            pd.DataFrame({"stay_id": stay_pat["stay_id"], "seed": int(seed), "split": split})
        )
    return pd.concat(frames, ignore_index=True)


def _stats(norm: pd.DataFrame, variables: tuple[str, ...], seed: int):
    nm = norm[norm["seed"] == seed]
    nm = nm.set_index(nm["variable"].astype(str))
    mean = nm["mean"].reindex(list(variables)).to_numpy(float)
    std = nm["std"].reindex(list(variables)).to_numpy(float)
    return mean, np.where(std > 0, std, 1.0)


def score_hours(model, windows, rows: pd.DataFrame, mean, std, batch: int) -> np.ndarray:
    """Class-1 probability of `model` for the windows ending at rows' (stay_id, hour), batched."""
    from data_prep.online_windows import batches

    sid, hour = rows["stay_id"].to_numpy(np.int64), rows["hour"].to_numpy(float)
    cut = windows.irregular if model.view == "irregular" else windows.grid
    out = np.empty(len(rows))
    for sl in batches(len(rows), batch):
        out[sl] = model.predict_proba(cut(sid[sl], hour[sl], mean, std))[:, 1]
    return out


def model_dir(models: Path, learner: str, seed: int) -> Path | None:
    """The h0 model of `learner` for `seed`: train-once first, else per-horizon."""
    for regime in ("train_once", "per_horizon"):
        d = models / learner / regime / "h0" / f"seed{seed}" / "model"
        if d.exists():
            return d
    return None


def subsample_stays(ids: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """At most n stays, seeded; sorted."""
    ids = np.unique(ids)
    if n is None or len(ids) <= n:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, n, replace=False))


def _training_hours(h: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most n seeded training hours (every hour is an example), in (stay, hour) order."""
    tr = h[h["split"] == "train"]
    if len(tr) > n:
        tr = tr.iloc[np.sort(np.random.default_rng(seed).choice(len(tr), n, replace=False))]
    return tr


# ------------------------------------------------------------------------------- stage


def _units(cfg, models: Path, op: OnlineParams, seeds) -> tuple[list, list[str]]:
    """The current h0 model of each learner and seed; missing or stale ones are listed
    (a unit trained with another config or cohort is never scored as if it were this one)."""
    from sepsis.config import LEARNERS
    from sepsis.manifest import stage_fingerprint
    from sepsis.pipeline import Unit, _unit_stage

    trained = set(cfg.train.per_horizon) | set(cfg.train.train_once)
    names = op.learners or tuple(n for n in LEARNERS if n != "sofa" and n in trained)
    prepared_fp = stage_fingerprint(cfg.output_dir / "prepared")
    found, missing = [], []
    for seed in seeds:
        for name in names:
            d = model_dir(models, name, seed)
            if d is None:
                missing.append(f"{name} seed {seed}")
                continue
            unit = Unit(name, d.parts[-4], 0, int(seed))
            reason = _unit_stage(cfg, unit, models, prepared_fp).stale_reason()
            if reason is not None:
                missing.append(f"{name} seed {seed} ({reason})")
            else:
                found.append((name, int(seed), d))
    return found, missing


def evaluate_online(cfg, force: bool = False, progress: bool = True) -> Path:
    """Score every eligible hour of the val/test stays with every learner (module docstring)."""
    from sepsis.runlock import output_lock, run_lock

    with run_lock(output_lock(cfg.output_dir), f"run folder {cfg.output_dir}"):
        return _evaluate_online(cfg, force, progress)


def _evaluate_online(cfg, force: bool, progress: bool) -> Path:
    from sepsis.config import split_seeds
    from sepsis.manifest import Stage, stage_fingerprint
    from sepsis.pipeline import PipelineError, _asdict

    prepared, models = cfg.output_dir / "prepared", cfg.output_dir / "models"
    if not (prepared / "manifest.json").exists():
        raise PipelineError(f"no prepared cohort at {prepared}: run `sepsis prepare` first")
    op: OnlineParams = cfg.online
    seeds = split_seeds(cfg)
    units, missing = _units(cfg, models, op, seeds)
    baselines = _online_baselines(cfg, op)
    if not units and not baselines:
        raise PipelineError(
            f"online: no h0 model under {models} ({', '.join(missing)}): run `sepsis train` first"
        )
    fp = {"prepared": stage_fingerprint(prepared)}
    for name, seed, d in units:
        fp[f"{name}/seed{seed}"] = stage_fingerprint(d.parent)
    conf = {"online": _asdict(op), "utility": _asdict(UtilityParams()), "seeds": list(seeds)}
    conf["baselines"] = {b: cfg.learners.get(b, {}) for b in baselines}
    out = cfg.output_dir / ONLINE_DIR
    stage = Stage("evaluate-online", out, conf, inputs=fp, force=force)
    if stage.is_current():
        log.info("evaluate --online: %s is current, skipped", out)
        return out
    counts: dict[str, Any] = {"missing_models": missing}
    with stage.writing(counts) as tmp:
        result = _run(cfg, op, seeds, units, baselines, progress, counts)
        write_outputs(tmp, result, cfg)
    return out


def _online_baselines(cfg, op: OnlineParams) -> list[str]:
    if not op.fit_online_baselines:
        return []
    trained = set(cfg.train.per_horizon) | set(cfg.train.train_once)
    wanted = set(op.learners) if op.learners else trained
    return [b for b in ("logreg", "gbm") if b in trained and b in wanted]


def _run(cfg, op, seeds, units, baselines, progress, counts) -> dict[str, pd.DataFrame]:
    from data_prep import io
    from data_prep.dataset import CohortDataset
    from data_prep.online_windows import OnlineWindows
    from sepsis.config import _learner_classes
    from sepsis.pipeline import make_learner

    prepared = cfg.output_dir / "prepared"
    ds = CohortDataset.load(prepared)
    stays = pd.read_parquet(prepared / "stays.parquet")
    onsets = pd.read_parquet(prepared / "onsets.parquet", columns=["stay_id", "onset_hour"])
    labels = pd.read_parquet(prepared / "labels_hourly.parquet", columns=["stay_id", "hour"])
    norm = io.read_parquet(prepared / "normalisation.parquet", io.NORMALISATION)
    t0 = time.time()
    obs = all_observations(cfg, stays, progress=progress)
    obs = obs[obs["variable"].astype(str).isin(ds.variables)]
    windows = OnlineWindows(obs, ds.variables, ds.window_hours)
    counts["observations_seconds"] = round(time.time() - t0, 1)
    hours, excl = online_hours(
        stays,
        onsets,
        labels,
        windows.stay_ids,
        cfg.cohort,
        op.min_hour,
        dt_late=np.inf if op.score_after_onset else UtilityParams.dt_late,
        source_columns=sources.get(cfg.source).attributes,
    )
    counts["exclusions"] = excl
    sp = online_splits(hours, ds.cohort, ds.splits, cfg.cohort.split_fractions)
    in_cohort = set(ds.stay_id.tolist())
    counts["stays_outside_cohort"] = int(len(set(hours["stay_id"]) - in_cohort))
    classes = _learner_classes()
    res: dict[str, list] = {"predictions": [], "metrics": [], "curves": [], "alarms": []}
    for seed in seeds:
        mean, std = _stats(norm, ds.variables, seed)
        h = hours.assign(
            split=hours["stay_id"].map(sp[sp["seed"] == seed].set_index("stay_id")["split"])
        )
        jobs = [(n, "case-control", classes[n].load(d)) for n, s, d in units if s == seed]
        for name in baselines:
            tr = _training_hours(h, op.baseline_max_windows, op.subsample_seed + seed)
            if tr["label"].nunique() < 2:
                log.warning("online baseline %s seed %d: one class in training hours", name, seed)
                continue
            model = make_learner(cfg, name, seed, progress=False)
            model.fit(windows.grid(tr["stay_id"], tr["hour"], mean, std), tr["label"].to_numpy())
            jobs.append((name, "online", model))
        for name, training, model in jobs:
            rows = _eval_rows(h, op.max_stays.get(name), op.subsample_seed + seed)
            t1 = time.time()
            rows["score"] = score_hours(model, windows, rows, mean, std, op.batch_windows)
            wall = time.time() - t1
            rows = rows.assign(learner=name, training=training, seed=np.int32(seed))
            _evaluate(
                rows,
                op,
                wall,
                res,
                n_eligible=int(h.loc[h["split"] == "test", "stay_id"].nunique()),
            )
            log.info(
                "online: %s (%s) seed %d: %d hours in %.1f s", name, training, seed, len(rows), wall
            )
    return {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in res.items()} | {
        "hours": hours,
        "splits": sp,
    }


def _eval_rows(h: pd.DataFrame, max_stays: int | None, seed: int) -> pd.DataFrame:
    parts = []
    for split in ("val", "test"):
        ids = subsample_stays(h.loc[h["split"] == split, "stay_id"].to_numpy(), max_stays, seed)
        parts.append(h[h["stay_id"].isin(ids)])
    return pd.concat(parts, ignore_index=True)


def _evaluate(
    rows: pd.DataFrame, op: OnlineParams, wall: float, res: dict, n_eligible: int
) -> None:
    """Threshold on val, metrics on test; appends to `res`."""
    from sepsis.evaluation.online_metrics import _Stays, choose_threshold, online_metrics

    key = {k: rows[k].iloc[0] for k in ("learner", "training", "seed")}
    val, test = rows[rows["split"] == "val"], rows[rows["split"] == "test"]
    thr, u_val, curve = choose_threshold(val, op.n_thresholds)
    m = online_metrics(
        test, thr, op.false_alarm_rate, op.n_bootstrap, op.bootstrap_seed + int(key["seed"])
    )
    m.update(key)
    m.update(
        {
            "val_utility": u_val,
            "n_val_stays": int(val["stay_id"].nunique()),
            "n_eligible_test_stays": n_eligible,
            "subsampled": bool(m["n_stays"] < n_eligible),
            "windows_per_second": len(rows) / max(wall, 1e-9),
        }
    )
    res["metrics"].append(pd.DataFrame([m]))
    res["curves"].append(curve.assign(split="val", **key))
    res["predictions"].append(rows.assign(alarm=(rows["score"] >= thr).astype(np.int8)))
    st = _Stays(test.sort_values(["stay_id", "hour"], kind="stable"), thr, UtilityParams())
    res["alarms"].append(
        pd.DataFrame(
            {"stay_id": test["stay_id"].unique(), "septic": st.septic, "warning_hours": st.warning}
        ).assign(**key)
    )


def write_outputs(tmp: Path, result: dict[str, pd.DataFrame], cfg) -> None:
    """predictions.parquet, metrics.csv, thresholds.csv, utility_curves.csv, stay_alarms.csv, plots."""
    from sepsis.evaluation import online_plots

    preds = result["predictions"]
    keep = ["learner", "training", "seed", "split", "stay_id", "patient_id", "hour", "label",
            "onset", "score", "alarm"]  # fmt: skip
    preds[keep].to_parquet(tmp / "predictions.parquet", index=False)
    metrics = result["metrics"]
    metrics.to_csv(tmp / "metrics.csv", index=False)
    thr_cols = ["learner", "training", "seed", "threshold", "val_utility", "n_val_stays"]
    metrics[thr_cols].to_csv(tmp / "thresholds.csv", index=False)
    result["curves"].to_csv(tmp / "utility_curves.csv", index=False)
    result["alarms"].to_csv(tmp / "stay_alarms.csv", index=False)
    result["splits"].to_parquet(tmp / "splits.parquet", index=False)
    online_plots.write_plots(tmp / "plots", preds, metrics, result["curves"], result["alarms"])


# ------------------------------------------------------------------------------- export


def export_physionet2019(
    cfg, learner: str, seed: int, out: Path, training: str = "case-control"
) -> int:
    """Write `out/predictions/p<stay>.psv` (PredictedProbability|PredictedLabel) and
    `out/labels/p<stay>.psv` (SepsisLabel) for the test stays; returns the number of stays.

    The official scorer then runs as
    ``python evaluate_sepsis_score.py out/labels out/predictions``.
    """
    from sepsis.pipeline import PipelineError

    ev = cfg.output_dir / ONLINE_DIR
    if not (ev / "manifest.json").exists():
        raise PipelineError(f"no online evaluation at {ev}: run `sepsis evaluate --online` first")
    p = pd.read_parquet(ev / "predictions.parquet")
    sel = p[(p["learner"] == learner) & (p["seed"] == seed) & (p["training"] == training)]
    sel = sel[sel["split"] == "test"].sort_values(["stay_id", "hour"], kind="stable")
    if sel.empty:
        have = sorted(set(zip(p["learner"], p["training"], p["seed"], strict=True)))
        raise PipelineError(
            f"no online test predictions for {learner} ({training}) seed {seed}; have {have}"
        )
    pred_dir, lab_dir = Path(out) / "predictions", Path(out) / "labels"
    pred_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for sid, g in sel.groupby("stay_id", sort=True):
        name = f"p{int(sid):06d}.psv"
        body = "".join(
            f"{s!r}|{int(a)}\n" for s, a in zip(g["score"].astype(float), g["alarm"], strict=True)
        )
        (pred_dir / name).write_text("PredictedProbability|PredictedLabel\n" + body)
        (lab_dir / name).write_text("SepsisLabel\n" + "".join(f"{int(v)}\n" for v in g["label"]))
        n += 1
    (Path(out) / "README.txt").write_text(
        f"{learner} ({training}), split seed {seed}, {n} test stays of {cfg.name}.\n"
        "Score with the challenge's code (physionetchallenges/evaluation-2019):\n"
        "  python evaluate_sepsis_score.py labels predictions\n"
    )
    return n
