"""The embedded synthetic MIMIC-III-format database: determinism, schema, physiology, designed
onsets recovered by the real label code, parameter validation and atomic output."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep.concepts import variables as V
from data_prep.observations import observations_from_extracted
from data_prep.sepsis3 import LabelParams, derive_labels
from data_prep.sources import mimic3, synthetic
from data_prep.sources.synthetic import COLUMNS, KINDS, SyntheticParams, generate

SHARED = Path(
    os.environ.get(
        "SEPSIS_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)
DEMO = SHARED / "mimic3-demo"
N = 120


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("syn") / "raw"
    summary = generate(raw, SyntheticParams(n_patients=N, seed=3), progress=False)
    assert summary["groups"]["septic"] == 12 and summary["rows"]["ICUSTAYS"] == N
    return raw


@pytest.fixture(scope="module")
def extracted(db, tmp_path_factory) -> Path:
    ext = tmp_path_factory.mktemp("syn_ext") / "extracted"
    rep = mimic3.extract(db, ext, mimic3.ReaderParams(), progress=False)
    # every event row belongs to a known stay and inside it: nothing silently dropped
    for table in ("CHARTEVENTS", "OUTPUTEVENTS", "LABEVENTS", "INPUTEVENTS_MV", "INPUTEVENTS_CV"):
        dropped = {k: v for k, v in rep.tables[table].dropped.items() if k != "itemid_not_needed"}
        assert not dropped, (table, dropped)
    return ext


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.endswith(".csv.gz")}


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    p = SyntheticParams(n_patients=60, seed=7)
    generate(tmp_path / "a", p, progress=False)
    generate(tmp_path / "b", p, progress=False)
    generate(tmp_path / "c", SyntheticParams(n_patients=60, seed=8), progress=False)
    a, b, c = _bytes(tmp_path / "a"), _bytes(tmp_path / "b"), _bytes(tmp_path / "c")
    assert set(a) == {f"{t}.csv.gz" for t in COLUMNS}
    assert a == b
    assert a["CHARTEVENTS.csv.gz"] != c["CHARTEVENTS.csv.gz"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a" / "ground_truth.parquet"),
        pd.read_parquet(tmp_path / "b" / "ground_truth.parquet"),
    )


def test_blocks_are_independent_of_n(tmp_path):
    """The first block's patients do not depend on how many blocks follow (seeded per block)."""
    generate(
        tmp_path / "small",
        SyntheticParams(n_patients=30, seed=1, septic_fraction=0.0, confounder_fraction=0.0),
        progress=False,
    )
    generate(
        tmp_path / "large",
        SyntheticParams(n_patients=40, seed=1, septic_fraction=0.0, confounder_fraction=0.0),
        progress=False,
    )
    s = pd.read_csv(tmp_path / "small" / "ICUSTAYS.csv.gz")
    la = pd.read_csv(tmp_path / "large" / "ICUSTAYS.csv.gz")
    pd.testing.assert_frame_equal(s, la.iloc[:30])


@pytest.mark.parametrize("table", [t for t in COLUMNS])
def test_schema_names_and_types(db, table):
    path = db / f"{table}.csv.gz"
    with gzip.open(path, "rt") as fh:
        header = fh.readline().rstrip("\n").split(",")
    assert header == list(COLUMNS[table])
    demo = DEMO / f"{table}.csv.gz"
    if demo.exists():  # same columns, same order as the real release (demo is lower case)
        with gzip.open(demo, "rt") as fh:
            assert [c.upper() for c in fh.readline().rstrip("\n").split(",")] == header
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert len(df) > 0
    for col, kind in KINDS[table].items():
        vals = df[col][df[col] != ""]
        if col in ("ROW_ID", "SUBJECT_ID", "ITEMID"):
            assert len(vals) == len(df), f"{table}.{col} has empty values"
        if kind == "int":
            assert vals.str.fullmatch(r"-?\d+").all(), (
                f"{table}.{col}: not integers: {vals.head().tolist()}"
            )
        elif kind == "float":
            pd.to_numeric(vals, errors="raise")
        elif kind == "ts":
            assert vals.str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").all(), f"{table}.{col}"
            pd.to_datetime(vals, format="%Y-%m-%d %H:%M:%S")
    assert df["ROW_ID"].astype(int).is_unique


def test_consistent_patients_admissions_stays(db):
    pat = pd.read_csv(db / "PATIENTS.csv.gz", parse_dates=["DOB", "DOD"])
    adm = pd.read_csv(db / "ADMISSIONS.csv.gz", parse_dates=["ADMITTIME", "DISCHTIME", "DEATHTIME"])
    icu = pd.read_csv(db / "ICUSTAYS.csv.gz", parse_dates=["INTIME", "OUTTIME"])
    m = icu.merge(adm, on=["SUBJECT_ID", "HADM_ID"], how="left").merge(
        pat, on="SUBJECT_ID", how="left"
    )
    assert m["ADMITTIME"].notna().all() and m["DOB"].notna().all()
    assert (m["ADMITTIME"] <= m["INTIME"]).all() and (m["INTIME"] < m["OUTTIME"]).all()
    assert (m["OUTTIME"] <= m["DISCHTIME"]).all()
    assert set(icu["DBSOURCE"]) == {"carevue", "metavision"}
    assert set(pat["GENDER"]) == {"M", "F"}
    died = m["HOSPITAL_EXPIRE_FLAG"] == 1
    assert died.any() and (~died).any()
    assert m.loc[died, "DEATHTIME"].notna().all() and m.loc[~died, "DEATHTIME"].isna().all()
    los_h = (icu["OUTTIME"] - icu["INTIME"]).dt.total_seconds() / 3600
    assert los_h.min() >= 4 and los_h.max() > 10 * 24  # hours to weeks
    np.testing.assert_allclose(icu["LOS"], los_h / 24, atol=1e-3)


def test_extraction_keeps_every_event_row(extracted):
    """The `extracted` fixture's check (no event row of the generated tables dropped), run
    on its own while the tests reading the events wait for the consumers."""
    stays = pd.read_parquet(extracted / "stays.parquet")
    chart = pd.read_parquet(extracted / "events" / "chartevents.parquet")
    assert len(stays) == N and set(chart["stay_id"]) == set(stays["stay_id"])
    assert stays["weight_kg"].notna().all()


def test_physiology_inside_plausible_ranges(db, extracted):
    stays = pd.read_parquet(extracted / "stays.parquet")
    assert stays["age"].between(18, 91.4).all() and stays["weight_kg"].notna().all()
    obs, dropped = observations_from_extracted(extracted, stays, progress=False)
    assert sum(dropped["out_of_range"].values()) == 0, dropped["out_of_range"]
    assert sum(dropped["missing_value"].values()) == 0
    for name, g in obs.groupby("variable", observed=True):
        var = V.VARIABLES_BY_NAME[name]
        assert g["value"].between(var.low, var.high).all(), name
    med = obs.groupby("variable", observed=True)["value"].median()
    assert 70 < med["heart_rate"] < 100 and 70 < med["mbp"] < 95 and 36 < med["temperature"] < 38
    assert (
        120 < med["platelets"] < 350
        and 0.4 < med["creatinine"] < 1.6
        and 12 < med["resp_rate"] < 24
    )
    # irregular sampling: vitals about hourly with gaps, labs hours apart
    hr = (
        obs[obs["variable"] == "heart_rate"]
        .groupby("stay_id")["hour"]
        .apply(lambda h: np.diff(np.sort(h)))
    )
    gaps = np.concatenate(hr.to_list())
    assert 0.9 < np.median(gaps) <= 1.0 and (gaps > 1.5).mean() > 0.05
    plt = (
        obs[obs["variable"] == "platelets"]
        .groupby("stay_id")["hour"]
        .apply(lambda h: np.diff(np.sort(h)))
    )
    lab_gaps = np.concatenate(plt.to_list())
    assert np.median(lab_gaps) >= 4
    # heart rate is autocorrelated within a stay (not white noise)
    h = obs[obs["variable"] == "heart_rate"].sort_values(["stay_id", "hour"])
    x = h["value"].to_numpy() - h.groupby("stay_id")["value"].transform("mean").to_numpy()
    same = h["stay_id"].to_numpy()[1:] == h["stay_id"].to_numpy()[:-1]
    assert np.corrcoef(x[1:][same], x[:-1][same])[0, 1] > 0.3
    # blood gases mostly in ventilated patients
    gt = pd.read_parquet(db / "ground_truth.parquet")
    gas_stays = set(obs.loc[obs["variable"] == "po2", "stay_id"])
    vent = set(gt.loc[gt["ventilated"], "stay_id"])
    assert len(gas_stays & vent) > 0.6 * len(gas_stays)


def test_designed_onsets_are_derived(db, extracted):
    _, onsets, _ = derive_labels(extracted, LabelParams(), progress=False)
    gt = pd.read_parquet(db / "ground_truth.parquet")
    m = gt.merge(onsets[["stay_id", "onset_hour"]], on="stay_id", how="left")
    sep = m[m["group"] == "septic"]
    diff = (sep["onset_hour"] - sep["designed_onset_hour"]).abs()
    assert len(sep) == 12
    assert (diff <= 2).mean() >= 0.8, sep[
        ["stay_id", "designed_onset_hour", "onset_hour", "triggers"]
    ]
    others = m[m["group"] != "septic"]
    assert others["onset_hour"].notna().mean() <= 0.05
    # the infection-only confounders do have suspected infection, just no organ failure
    inf = onsets[onsets["stay_id"].isin(gt.loc[gt["group"] == "infection", "stay_id"])]
    assert inf["si_time"].notna().sum() >= 0.8 * (gt["group"] == "infection").sum()


def test_signal_strength_zero_removes_drift(tmp_path):
    """Septic heart rate rises over the hours before onset, and not when signal_strength = 0."""
    rises = {}
    for s in (0.0, 3.0):
        raw = tmp_path / f"s{s}"
        generate(
            raw,
            SyntheticParams(
                n_patients=80,
                septic_fraction=0.5,
                confounder_fraction=0.0,
                signal_strength=s,
                seed=5,
            ),
            progress=False,
        )
        gt = pd.read_parquet(raw / "ground_truth.parquet")
        ce = pd.read_csv(
            raw / "CHARTEVENTS.csv.gz",
            usecols=["ICUSTAY_ID", "ITEMID", "CHARTTIME", "VALUENUM"],
            parse_dates=["CHARTTIME"],
        )
        icu = pd.read_csv(
            raw / "ICUSTAYS.csv.gz", usecols=["ICUSTAY_ID", "INTIME"], parse_dates=["INTIME"]
        )
        ce = ce[ce["ITEMID"].isin([211, 220045])].merge(icu, on="ICUSTAY_ID")
        ce["hour"] = (ce["CHARTTIME"] - ce["INTIME"]).dt.total_seconds() / 3600
        ce = ce.merge(
            gt[["stay_id", "designed_onset_hour"]], left_on="ICUSTAY_ID", right_on="stay_id"
        )
        ce = ce[ce["designed_onset_hour"] >= 30]
        rel = ce["hour"] - ce["designed_onset_hour"]
        late = ce[rel.between(-3, 0)].groupby("stay_id")["VALUENUM"].mean()
        early = ce[rel.between(-30, -24)].groupby("stay_id")["VALUENUM"].mean()
        rises[s] = float((late - early).dropna().mean())
    assert rises[3.0] > rises[0.0] + 10
    assert abs(rises[0.0]) < 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_patients": 0}, "synthetic.n_patients: expected an integer >= 1, got 0"),
        ({"n_patients": 2.5}, "synthetic.n_patients: expected an integer >= 1, got 2.5"),
        (
            {"septic_fraction": 1.5},
            "synthetic.septic_fraction: expected a number in [0, 1], got 1.5",
        ),
        (
            {"metavision_fraction": -0.1},
            "synthetic.metavision_fraction: expected a number in [0, 1], got -0.1",
        ),
        (
            {"confounder_fraction": 0.5},
            "synthetic.septic_fraction + 2 * confounder_fraction: expected <= 1",
        ),
        (
            {"signal_strength": -1.0},
            "synthetic.signal_strength: expected a number in [0, 10], got -1.0",
        ),
        (
            {"signal_strength": float("nan")},
            "synthetic.signal_strength: expected a number in [0, 10]",
        ),
        ({"seed": -3}, "synthetic.seed: expected an integer >= 0, got -3"),
    ],
)
def test_params_validation(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as e:
        generate(tmp_path / "x", SyntheticParams(**kwargs), progress=False)
    assert message in str(e.value)
    assert not (tmp_path / "x").exists()
    SyntheticParams().validate()


def test_interrupted_generation_leaves_nothing_that_looks_whole(tmp_path, monkeypatch):
    """The generate stage owns atomicity (one mechanism: the stage's temporary folder): an
    interrupted regeneration leaves the previous database as it was, and a first generation
    that fails leaves no folder at all."""
    from sepsis import pipeline
    from sepsis.config import load_config

    def cfg(n, seed, data):
        return load_config(
            None,
            [
                f"data_dir={tmp_path / data}",
                f"output_dir={tmp_path / 'run'}",
                f"synthetic={{n_patients: {n}, seed: {seed}}}",
            ],
        )

    pipeline.generate(cfg(20, 0, "db"), progress=False)
    out = tmp_path / "db"
    before = _bytes(out)
    calls = {"n": 0}
    real = synthetic._simulate_stay

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 270:  # fails in the second block, after the first was flushed to disk
            raise RuntimeError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_simulate_stay", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        pipeline.generate(cfg(300, 1, "db"), progress=False)
    assert _bytes(out) == before  # the previous database is untouched
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["db"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary folder left
    calls["n"] = 0
    with pytest.raises(RuntimeError):
        pipeline.generate(cfg(300, 1, "fresh"), progress=False)
    assert not (tmp_path / "fresh").exists()


def test_chunked_labelling_equals_single_chunk(extracted, monkeypatch, tmp_path):
    """The per-chunk spill path (several chunks) reproduces the one-chunk labels exactly."""
    import data_prep.sepsis3 as S3

    one = derive_labels(extracted, LabelParams(), progress=False)
    monkeypatch.setattr(S3, "CHUNK_STAYS", 7)
    monkeypatch.setattr(S3._StayChunks, "IN_MEMORY_ROWS", 0)  # spilled, not partitioned in memory
    n_chunks = []
    real_init = S3._StayChunks.__init__

    spills = []
    real_enter = S3._StayChunks.__enter__

    def spy(self, *args):
        real_init(self, *args)
        n_chunks.append(self.n_chunks)

    def spy_enter(self):
        out = real_enter(self)
        spills.append(Path(self.tmp.name).parent)
        return out

    monkeypatch.setattr(S3._StayChunks, "__init__", spy)
    monkeypatch.setattr(S3._StayChunks, "__enter__", spy_enter)
    many = derive_labels(extracted, LabelParams(), progress=False, spill_dir=tmp_path)
    assert n_chunks and n_chunks[0] > 2  # several chunks, spilled
    assert spills == [tmp_path]  # into the caller's folder, not the extracted tables'
    assert list(tmp_path.iterdir()) == []  # and removed
    pd.testing.assert_frame_equal(one[0], many[0])
    pd.testing.assert_frame_equal(one[1], many[1])
    assert one[2] == many[2]
    assert many[1]["onset_hour"].notna().sum() >= 10
