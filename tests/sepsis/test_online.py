"""Online evaluation: every-hour windows, utility metrics, val-only threshold, export round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from data_prep.dataset import CohortDataset
from data_prep.online_windows import OnlineWindows
from sepsis.config import ConfigError, load_config
from sepsis.evaluation.online_metrics import choose_threshold, online_metrics
from sepsis.evaluation.utility import best_predictions, challenge_labels, utility_score
from sepsis.online import OnlineParams, _evaluate

VARS = ("heart_rate", "resp_rate", "temperature")


def _random_obs(n_stays: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_stays):
        k = rng.integers(5, 80)
        rows.append(
            pd.DataFrame(
                {
                    "stay_id": 100 + s,
                    # fractional hours, some before intime (negative) and exact integer hours
                    "hour": np.r_[rng.uniform(-3, 70, k - 3), [0.0, 5.0, 12.0]],
                    "variable": rng.choice(VARS, k),
                    "value": rng.normal(80, 10, k),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_online_windows_never_contain_data_after_their_hour():
    obs = _random_obs()
    W = 10
    ow = OnlineWindows(obs, VARS, W)
    sid = np.repeat(np.arange(100, 107), 40)  # 106 has no observations at all
    hour = np.tile(np.arange(0, 40), 7).astype(float)
    mean, std = np.zeros(3), np.ones(3)
    v = ow.irregular(sid, hour, mean, std)
    v.validate()
    assert (v.times[v.mask] <= 0).all()
    # exactly the observations of [max(0, t - W), t], none later, none missing
    for i in range(len(sid)):
        o = obs[(obs["stay_id"] == sid[i]) & (obs["variable"].isin(VARS))]
        inside = o[(o["hour"] >= max(0.0, hour[i] - W)) & (o["hour"] <= hour[i])]
        assert v.mask[i].sum() == len(inside), i
        got = np.sort(v.times[i][v.mask[i]] + hour[i])
        assert np.allclose(got, np.sort(inside["hour"].to_numpy()), atol=1e-4)
    assert v.mask[sid == 106].sum() == 0
    g = ow.grid(sid, hour, mean, std)
    g.validate()
    assert (g.lengths == np.minimum(W, hour) + 1).all()


def test_online_windows_equal_the_h0_training_windows():
    obs = _random_obs()
    cohort = pd.DataFrame(
        {
            "stay_id": np.arange(100, 106),
            "patient_id": np.arange(100, 106),
            "label": np.int8([1, 0, 1, 0, 0, 1]),
            "onset_hour": [20.0, 33.0, 9.0, 50.0, 15.0, 61.0],
            "matched_case": [100, 100, 102, 102, 105, 105],
        }
    )
    splits = pd.DataFrame({"stay_id": cohort["stay_id"], "seed": 0, "split": "train"})
    norm = pd.DataFrame(
        {"seed": 0, "variable": list(VARS), "mean": [80.0, 79.0, 81.0], "std": [10.0, 9.0, 0.0]}
    )
    norm["n"] = 5
    W = 12
    ds = CohortDataset(cohort, splits, norm, obs, window_hours=W)
    ow = OnlineWindows(obs, ds.variables, W)
    mean, std = ds._stats(0)
    for h in (0,):  # training windows at h > 0 start at onset - W, not onset - h - W
        iv, _ = ds.irregular(h, "train", 0)
        gv, _ = ds.grid(h, "train", 0)
        t = cohort["onset_hour"].to_numpy() - h
        ov = ow.irregular(iv.stay_id, t, mean, std)
        for f in ("times", "var_idx", "values", "mask", "grid_len"):
            assert np.array_equal(getattr(ov, f), getattr(iv, f)), (h, f)
        og = ow.grid(iv.stay_id, t, mean, std)
        assert np.array_equal(og.X, gv.X, equal_nan=True)


def _hours_frame(labels: list[np.ndarray], scores: list[np.ndarray]) -> pd.DataFrame:
    rows = []
    for k, (lab, sc) in enumerate(zip(labels, scores, strict=True)):
        onset = float(np.argmax(lab) + 6) if lab.any() else np.nan
        rows.append(
            pd.DataFrame(
                {
                    "stay_id": k,
                    "hour": np.arange(len(lab)),
                    "label": lab,
                    "score": sc,
                    "onset": onset,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_online_utility_of_known_prediction_vectors():
    septic = challenge_labels(20, 10)  # labelled from row 4, t_sepsis = 10
    healthy = np.zeros(10, np.int8)
    labels = [septic, healthy]

    def util(scores):
        return online_metrics(_hours_frame(labels, scores), 0.5, n_resamples=0)["utility"]

    assert util([np.zeros(20), np.zeros(10)]) == 0.0
    assert util([best_predictions(septic).astype(float), np.zeros(10)]) == pytest.approx(1.0)
    # by hand: one alarm at d = 0 gains 1/3 - (-4/3) = 5/3; best - inaction = 22/3 + 10 = 52/3;
    # one false alarm on the healthy stay costs 0.05
    one = np.zeros(20)
    one[10] = 1
    fa = np.zeros(10)
    fa[3] = 1
    assert util([one, np.zeros(10)]) == pytest.approx(5 / 52)
    assert util([one, fa]) == pytest.approx((5 / 3 - 0.05) / (52 / 3))
    m = online_metrics(_hours_frame(labels, [one, fa]), 0.5, n_resamples=30)
    assert m["false_alarms_per_100_days"] == pytest.approx(2400 * 1 / 30)  # 1 episode, 30 hours
    assert m["warning_hours_median"] == 0.0  # first alarm at the onset hour
    assert m["utility_low"] - 1e-12 <= m["utility"] <= m["utility_high"] + 1e-12


def test_threshold_is_chosen_without_test_data():
    rng = np.random.default_rng(1)
    parts = []
    for split, n in (("val", 30), ("test", 30)):
        labs = [challenge_labels(30, rng.integers(8, 40)) for _ in range(n)]
        scores = [lab * rng.uniform(0.3, 1, 30) + rng.uniform(0, 0.6, 30) for lab in labs]
        f = _hours_frame(labs, scores)
        f["stay_id"] += 0 if split == "val" else 1000
        parts.append(f.assign(split=split))
    rows = pd.concat(parts, ignore_index=True).assign(learner="x", training="t", seed=0)
    op = OnlineParams(n_bootstrap=0)

    def run(r):
        res = {"metrics": [], "curves": [], "predictions": [], "alarms": []}
        _evaluate(r, op, 1.0, res, n_eligible=30)
        return res["metrics"][0].iloc[0]

    a = run(rows)
    perturbed = rows.copy()
    test = perturbed["split"] == "test"
    perturbed.loc[test, "score"] = rng.uniform(0, 1, test.sum())
    perturbed.loc[test, "label"] = 1 - perturbed.loc[test, "label"]
    b = run(perturbed)
    assert a["threshold"] == b["threshold"] and a["val_utility"] == b["val_utility"]
    assert a["utility"] != b["utility"]  # the test data did change, only not the threshold
    thr, u, _ = choose_threshold(rows[rows["split"] == "val"])
    assert thr == a["threshold"] and u == a["val_utility"]


def test_online_splits_keep_cohort_patients_and_split_the_others_by_patient():
    from sepsis.online import _training_hours, online_splits

    # stays 1-4 in the cohort (patients 10, 11); 5 is patient 10's second stay; 6-45 are new
    cohort = pd.DataFrame({"stay_id": [1, 2, 3, 4], "patient_id": [10, 11, 11, 12]})
    splits = pd.DataFrame({"stay_id": [1, 2, 3, 4] * 2, "seed": [0] * 4 + [1] * 4}).assign(
        split=["train", "test", "test", "val", "val", "train", "train", "test"]
    )
    sid = np.r_[1:6, 6:46]
    pid = np.r_[[10, 11, 11, 12, 10], 100 + np.arange(40) // 2]  # new patients with 2 stays
    hours = pd.DataFrame({"stay_id": sid, "patient_id": pid, "hour": 1.0, "label": 0})
    hours["onset"] = np.where(sid % 7 == 0, 20.0, np.nan)
    sp = online_splits(hours, cohort, splits, (0.5, 0.25, 0.25))
    for seed in (0, 1):
        s = sp[sp["seed"] == seed].set_index("stay_id")["split"]
        ref = splits[splits["seed"] == seed].set_index("stay_id")["split"]
        assert (s[ref.index] == ref).all()  # no cohort stay moves
        assert s[5] == s[1]  # a cohort patient's other stay follows the patient
        new = hours[hours["stay_id"] >= 6]
        new = new.assign(split=new["stay_id"].map(s).to_numpy())
        assert new.groupby("patient_id")["split"].nunique().max() == 1  # by patient
        assert set(new["split"]) == {"train", "val", "test"}
        assert s.notna().all()
    h = hours.assign(split=hours["stay_id"].map(sp[sp["seed"] == 0].set_index("stay_id")["split"]))
    tr = _training_hours(h, 5, 0)
    assert len(tr) == 5 and (tr["split"] == "train").all()


def test_online_config_section_is_validated(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "x", "source": "synthetic", "data_dir": str(tmp_path)}))
    assert load_config(cfg).online.false_alarm_rate == 0.05
    with pytest.raises(ConfigError, match="online.false_alarm_rate"):
        load_config(cfg, ["online.false_alarm_rate=2"])
    with pytest.raises(ConfigError, match="online.max_stay"):
        load_config(cfg, ["online.max_stay=3"])


# ----------------------------------------------------------------- a small synthetic run

SMALL = {
    "synthetic": {"n_patients": 160, "seed": 3, "signal_strength": 2.5},
    "cohort": {
        "split_seeds": [0],
        "dbsource": "all",
        "split_fractions": [0.5, 0.2, 0.3],
        "min_variable_observations": 20,
        "horizons": [0],
        "control_ratio": 2,  # leaves controls out of the cohort: they must be scored too
    },
    "train": {"per_horizon": ["logreg"], "train_once": [], "horizons": [0]},
    "online": {"n_bootstrap": 20, "baseline_max_windows": 3000},
    "evaluate": {"n_bootstrap": 20},
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from sepsis import pipeline
    from sepsis.cli import main

    tmp = tmp_path_factory.mktemp("online")
    data = {"name": "small", "source": "synthetic", "data_dir": str(tmp / "db")}
    data["output_dir"] = str(tmp / "runs" / "small")
    data.update(SMALL)
    path = tmp / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    pipeline.prepare(cfg, progress=False)
    pipeline.train(cfg, progress=False)
    assert main(["report", "--online", "--no-progress", "--config", str(path)]) == 0
    return tmp, path, cfg


def test_every_hour_of_every_eligible_stay_is_scored(small_run):
    _, _, cfg = small_run
    ev = cfg.output_dir / "evaluation-online"
    p = pd.read_parquet(ev / "predictions.parquet")
    cohort = pd.read_parquet(cfg.output_dir / "prepared" / "cohort.parquet")
    assert set(p["training"]) == {"case-control", "online"}
    lr = p[(p["learner"] == "logreg") & (p["training"] == "case-control")]
    assert not set(lr["stay_id"]) <= set(cohort["stay_id"])  # stays outside the cohort too
    # cohort stays keep the cohort's split
    sp = pd.read_parquet(cfg.output_dir / "prepared" / "splits.parquet")
    got = lr.drop_duplicates("stay_id").set_index("stay_id")["split"]
    ref = sp.set_index("stay_id")["split"].reindex(got.index).dropna()
    assert len(ref) and (got[ref.index] == ref).all()
    # every hour from min_hour on, consecutive; septic stays end at t_sepsis + 3
    lh = pd.read_parquet(cfg.output_dir / "prepared" / "labels_hourly.parquet")
    last = lh.groupby("stay_id")["hour"].max()
    for sid, g in lr.groupby("stay_id"):
        hrs = g["hour"].to_numpy()
        assert hrs[0] == cfg.online.min_hour and (np.diff(hrs) == 1).all()
        if g["label"].any():
            assert hrs[-1] == min(last[sid], g["hour"][g["label"] == 1].min() + 9)
        else:
            assert hrs[-1] == last[sid]
    m = pd.read_csv(ev / "metrics.csv")
    assert len(m) == 2 and m["utility"].between(-5, 1).all() and m["auroc"].between(0, 1).all()
    report = (cfg.output_dir / "reports" / "report.md").read_text()
    assert "Online evaluation" in report and "PhysioNet 2019 utility score" in report
    assert "outside the matched cohort" in report and "No h0 model" not in report


def test_export_round_trips_and_matches_the_in_process_utility(small_run):
    from sepsis.cli import main

    tmp, path, cfg = small_run
    out = tmp / "export"
    args = ["export-predictions", "--config", str(path), "--learner", "logreg", "--out", str(out)]
    assert main(args + ["--seed", "0"]) == 0
    files = sorted((out / "predictions").glob("p*.psv"), key=lambda f: int(f.stem[1:]))
    p = pd.read_parquet(cfg.output_dir / "evaluation-online" / "predictions.parquet")
    test = p[
        (p["learner"] == "logreg") & (p["training"] == "case-control") & (p["split"] == "test")
    ]
    assert len(files) == test["stay_id"].nunique()
    labels, alarms = [], []
    for f in files:
        pred = pd.read_csv(f, sep="|")
        lab = pd.read_csv(out / "labels" / f.name, sep="|")
        assert list(pred.columns) == ["PredictedProbability", "PredictedLabel"]
        assert list(lab.columns) == ["SepsisLabel"] and len(lab) == len(pred)
        g = test[test["stay_id"] == int(f.stem[1:])]
        assert np.array_equal(pred["PredictedProbability"].to_numpy(), g["score"].to_numpy())
        labels.append(lab["SepsisLabel"].to_numpy())
        alarms.append(pred["PredictedLabel"].to_numpy())
    m = pd.read_csv(cfg.output_dir / "evaluation-online" / "metrics.csv")
    want = m[(m["learner"] == "logreg") & (m["training"] == "case-control")]["utility"].iloc[0]
    assert utility_score(labels, alarms) == want
    assert main(args + ["--seed", "7"]) == 1  # no such seed: a clear error, not a traceback


def test_export_before_online_evaluation_is_a_clear_error(tmp_path, capsys):
    from sepsis.cli import main

    cfg = tmp_path / "c.yaml"
    data = {"name": "x", "source": "synthetic", "data_dir": str(tmp_path / "db")}
    data["output_dir"] = str(tmp_path / "run")
    cfg.write_text(yaml.safe_dump(data))
    args = ["export-predictions", "--config", str(cfg), "--learner", "gbm", "--out", "o"]
    assert main(args) == 1
    assert "sepsis evaluate --online" in capsys.readouterr().err
    assert not Path("o").exists()


@pytest.mark.realdata
def test_physionet_online_labels_are_the_files_sepsis_label():
    """Real set A, first 300 files: every ICU row scored, label == SepsisLabel (incl. stays
    positive from their first row); the cap keeps septic rows up to t_sepsis + dt_late."""
    import io
    import os
    import zipfile

    from data_prep.cohort import CohortParams
    from data_prep.sources.physionet2019 import read_physionet2019
    from sepsis.online import online_hours

    root = Path(
        os.environ.get("SEPSIS_SHARED_DATA", Path(__file__).parents[2] / ".." / "shared" / "data")
    )
    zpath = root / "physionet2019" / "training_setA.zip"
    if not zpath.exists():
        pytest.skip(f"PhysioNet 2019 training set A not found at {zpath}")
    t = read_physionet2019(zpath, progress=False, limit=300)
    params = CohortParams(dbsource="all", min_age=0)
    obs_stays = t.observations["stay_id"].unique()
    full, _ = online_hours(t.stays, t.onsets, t.labels_hourly, obs_stays, params, 0, dt_late=1e9)
    capped, counts = online_hours(t.stays, t.onsets, t.labels_hourly, obs_stays, params, 0)
    with zipfile.ZipFile(zpath) as z:
        names = sorted(m for m in z.namelist() if m.endswith(".psv"))[:300]
        raw = {int(Path(m).stem[1:]): pd.read_csv(io.BytesIO(z.read(m)), sep="|") for m in names}
    n_start = 0
    for sid, g in full.groupby("stay_id"):
        d = raw[sid]
        np.testing.assert_array_equal(g["hour"].to_numpy(), d["ICULOS"].to_numpy())
        np.testing.assert_array_equal(g["label"].to_numpy(), d["SepsisLabel"].to_numpy())
        n_start += int(d["SepsisLabel"].iloc[0] == 1)
        c = capped[capped["stay_id"] == sid]
        if d["SepsisLabel"].any():
            first = d["ICULOS"][d["SepsisLabel"] == 1].min()
            assert c["hour"].max() == min(first + 9, d["ICULOS"].max())
        else:
            assert len(c) == len(d)
    assert n_start > 0 and counts["scored stays"] == full["stay_id"].nunique()


@pytest.mark.realdata
def test_physionet_export_lines_up_with_the_challenge_files(tmp_path):
    """300 real set A files end to end (prepare, logreg h0, --online, export): with
    score_after_onset the exported files have the original rows and SepsisLabel."""
    import os
    import zipfile

    from sepsis import pipeline
    from sepsis.cli import main

    root = Path(
        os.environ.get("SEPSIS_SHARED_DATA", Path(__file__).parents[2] / ".." / "shared" / "data")
    )
    zpath = root / "physionet2019" / "training_setA.zip"
    if not zpath.exists():
        pytest.skip(f"PhysioNet 2019 training set A not found at {zpath}")
    src = tmp_path / "psv"
    src.mkdir()
    with zipfile.ZipFile(zpath) as z:
        names = sorted(m for m in z.namelist() if m.endswith(".psv"))[:300]
        for m in names:
            (src / Path(m).name).write_bytes(z.read(m))
    data = {
        "name": "pn",
        "source": "physionet2019",
        "data_dir": str(src),
        "output_dir": str(tmp_path / "run"),
        "cohort": {"dbsource": "all", "split_seeds": [0], "split_fractions": [0.5, 0.2, 0.3]},
        "train": {"per_horizon": ["logreg"], "train_once": [], "horizons": [0]},
        "online": {"n_bootstrap": 5, "score_after_onset": True, "fit_online_baselines": False},
    }
    data["cohort"]["min_variable_observations"] = 20
    data["cohort"]["horizons"] = [0]
    path = tmp_path / "pn.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    pipeline.prepare(cfg, progress=False)
    pipeline.train(cfg, progress=False)
    assert main(["evaluate", "--online", "--no-progress", "--config", str(path)]) == 0
    out = tmp_path / "export"
    assert (
        main(
            ["export-predictions", "--config", str(path), "--learner", "logreg", "--out", str(out)]
        )
        == 0
    )
    files = sorted((out / "predictions").glob("p*.psv"))
    assert files
    for f in files:
        orig = pd.read_csv(src / f.name, sep="|")
        pred = pd.read_csv(f, sep="|")
        lab = pd.read_csv(out / "labels" / f.name, sep="|")
        assert len(pred) == len(orig)
        np.testing.assert_array_equal(lab["SepsisLabel"].to_numpy(), orig["SepsisLabel"].to_numpy())


def test_normalisation_is_taken_per_split_seed():
    """With several split seeds each seed's training-split statistics are used (a run with
    three seeds crashed: the index was taken from every seed's rows)."""
    from sepsis.online import _stats

    norm = pd.DataFrame(
        {
            "seed": [0, 0, 1, 1],
            "variable": ["hr", "temp", "hr", "temp"],
            "mean": [80.0, 37.0, 90.0, 38.0],
            "std": [10.0, 0.0, 12.0, 1.0],
        }
    )
    mean, std = _stats(norm, ("temp", "hr"), 1)
    assert mean.tolist() == [38.0, 90.0] and std.tolist() == [1.0, 12.0]
    mean, std = _stats(norm, ("temp", "hr"), 0)
    assert mean.tolist() == [37.0, 80.0] and std.tolist() == [1.0, 10.0]  # std 0 -> 1
