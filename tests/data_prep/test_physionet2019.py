"""PhysioNet 2019 reader: hand-written .psv fixtures (zip and folder) with worked expectations."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep import io as dio
from data_prep.sources.physionet2019 import (
    COLUMNS,
    ONSET_BEFORE_DATA,
    SOFA_UNKNOWN,
    PhysioNetFormatError,
    PhysioNetParams,
    read_physionet2019,
)

HEADER = "|".join(COLUMNS)
SKIP = PhysioNetParams(on_bad_rows="skip-and-count")


def row(iculos: int, label: int = 0, *, age=60.0, gender=1, unit1=1, unit2=0, **vals) -> str:
    """One data line: every variable NaN unless given in `vals` (PhysioNet column names)."""
    d = dict.fromkeys(COLUMNS, "NaN")
    d.update(
        {
            "Age": age,
            "Gender": gender,
            "Unit1": unit1,
            "Unit2": unit2,
            "HospAdmTime": -1.5,
            "ICULOS": iculos,
            "SepsisLabel": label,
        }
    )
    d.update(vals)
    return "|".join(str(d[c]) for c in COLUMNS)


def psv(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


# Stay 1: not septic, MICU male, HR at hours 1 and 2, Temp 50 (out of range) at hour 2.
# Stay 2: septic, first label at ICULOS 4 -> onset 10; SICU female; FiO2 40 (% -> 0.40).
# Stay 3: septic from its first row (ICULOS 2) -> flagged, onset_hour = ONSET_BEFORE_DATA.
# Stay 12: no unit, NaN gender.
FILES = {
    "p000001.psv": psv(row(1, HR=80), row(2, HR=90, Temp=50), row(3, Temp=37.2)),
    "p000002.psv": psv(
        *[
            row(h, int(h >= 4), gender=0, unit1=0, unit2=1, FiO2=0.5 if h == 1 else "NaN")
            for h in range(1, 4)
        ],
        row(4, 1, gender=0, unit1=0, unit2=1, FiO2=40),
        *[row(h, 1, gender=0, unit1=0, unit2=1) for h in range(5, 13)],
    ),
    "p000003.psv": psv(row(2, 1, HR=100), row(3, 1, HR=300.5), row(4, 1)),
    "p000012.psv": psv(row(1, gender="NaN", unit1="NaN", unit2="NaN", age=17.5, EtCO2=30)),
}


def write_dir(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def write_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("training_setA/", "")
        for name, text in files.items():
            z.writestr(f"training_setA/{name}", text)
    return path


@pytest.fixture(params=["zip", "dir", "dir-with-zip"])
def source(request, tmp_path) -> Path:
    if request.param == "zip":
        return write_zip(tmp_path / "set.zip", FILES)
    if request.param == "dir":
        return write_dir(tmp_path / "psv", FILES)
    (tmp_path / "holder").mkdir()
    write_zip(tmp_path / "holder" / "training_setA.zip", FILES)
    return tmp_path / "holder"


def test_worked_example(source):
    t = read_physionet2019(source, progress=False)
    st = t.stays.set_index("stay_id")
    assert list(st.index) == [1, 2, 3, 12]
    assert (st["patient_id"] == st.index).all()
    assert st["gender"].tolist()[:3] == ["M", "F", "M"] and pd.isna(st.loc[12, "gender"])
    assert (
        st.loc[1, "unit"] == "MICU" and st.loc[2, "unit"] == "SICU" and pd.isna(st.loc[12, "unit"])
    )
    assert st["los_hours"].tolist() == [3.0, 12.0, 4.0, 1.0]
    assert st.loc[12, "age"] == 17.5
    assert (st["outtime"] - st["intime"]).dt.total_seconds().tolist() == [
        3 * 3600,
        12 * 3600,
        4 * 3600,
        3600,
    ]
    assert (
        st["source"].eq("physionet2019").all()
        and st["dbsource"].isna().all()
        and st["died"].isna().all()
    )
    assert st["positive_at_start"].tolist() == [False, False, True, False]

    on = t.onsets.set_index("stay_id")["onset_hour"]
    assert np.isnan(on[1]) and np.isnan(on[12])
    assert on[2] == 4 + 6
    assert on[3] == ONSET_BEFORE_DATA

    lab = t.labels_hourly
    assert len(lab) == 3 + 12 + 3 + 1
    s2 = lab[lab["stay_id"] == 2]
    assert s2["hour"].tolist() == list(range(1, 13))
    assert s2.loc[s2["sepsis"], "hour"].tolist() == [10, 11, 12]  # hour >= onset 10
    assert lab.loc[lab["stay_id"] == 3, "sepsis"].all()
    assert not lab.loc[lab["stay_id"].isin([1, 12]), "sepsis"].any()
    assert (lab["sofa"] == SOFA_UNKNOWN).all() and not lab["si_window"].any()

    obs = t.observations
    got = {(r.stay_id, r.hour, str(r.variable)): r.value for r in obs.itertuples()}
    assert got == {
        (1, 1.0, "heart_rate"): 80.0,
        (1, 2.0, "heart_rate"): 90.0,
        (1, 3.0, "temperature"): 37.2,
        (2, 1.0, "fio2"): 0.5,
        (2, 4.0, "fio2"): 0.40,
        (3, 2.0, "heart_rate"): 100.0,  # 300.5 > 300: dropped
        (12, 1.0, "etco2"): 30.0,
    }
    assert t.dropped_values == {"temperature": 1, "heart_rate": 1}
    att = {r["step"]: r["count"] for r in t.source_attrition}
    assert att["stays"] == 4 and att["rows"] == 19 and att["stays with SepsisLabel 1"] == 2
    assert att["stays positive from the first row"] == 1 and att["members read"] == 4
    assert t.diagnoses.empty and list(t.diagnoses.columns) == ["hadm_id"]
    # every table fits its declared schema
    dio.to_table(t.stays.drop(columns="positive_at_start"), dio.STAYS)
    dio.to_table(t.onsets, dio.ONSETS)
    dio.to_table(t.labels_hourly, dio.LABELS_HOURLY)
    dio.to_table(t.observations, dio.OBSERVATIONS)


def test_limit_reads_first_members_by_name(tmp_path):
    t = read_physionet2019(write_zip(tmp_path / "s.zip", FILES), progress=False, limit=2)
    assert t.stays["stay_id"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="limit"):
        read_physionet2019(tmp_path / "s.zip", progress=False, limit=0)


def test_cohort_excludes_positive_at_start(tmp_path):
    """Stays positive from the first row never become cases or controls."""
    from data_prep.cohort import CohortParams, build_cohort

    files = {
        f"p{i:06d}.psv": psv(*[row(h, HR=70 + h) for h in range(1, 30)]) for i in range(10, 40)
    }
    files["p000001.psv"] = psv(*[row(h, int(h >= 5), HR=90) for h in range(1, 30)])  # onset 11
    files["p000002.psv"] = psv(*[row(h, 1, HR=90) for h in range(1, 30)])  # positive at start
    t = read_physionet2019(write_dir(tmp_path / "d", files), progress=False)
    cohort, _splits, _norm, att = build_cohort(
        t.stays,
        t.onsets,
        t.diagnoses,
        t.observations,
        CohortParams(dbsource="all", min_variable_observations=1, split_seeds=(0,)),
    )
    assert cohort.loc[cohort["label"] == 1, "stay_id"].tolist() == [1]
    assert 2 not in set(cohort["stay_id"])
    step = next(s for s in att["steps"] if s["step"] == "onset outside stay")
    assert step["removed_cases"] == 1
    assert cohort.loc[cohort["stay_id"] == 1, "onset_hour"].item() == 11.0


def test_params_validate():
    with pytest.raises(ValueError, match="on_bad_rows"):
        PhysioNetParams(on_bad_rows="ignore").validate()


@pytest.mark.parametrize(
    "text, match",
    [
        (
            psv(row(1), header=HEADER.replace("Temp", "Temperature")),
            r"p000005\.psv: line 1 \(header\): column 3 is 'Temperature', expected 'Temp'",
        ),
        (
            psv(row(1), row(2) + "|7"),
            r"p000005\.psv: line 3 \(data row 2\): expected 41 '\|'-separated fields, got 42",
        ),
        (
            psv(row(1), row(2, HR="abc")),
            r"p000005\.psv: line 3 \(data row 2\): column 'HR' = 'abc', expected a number",
        ),
        (
            psv(row(1), row(1)),
            r"p000005\.psv: line 3 \(data row 2\): column 'ICULOS' = 1\.0, expected greater",
        ),
        (
            psv(row(1, label=2)),
            r"p000005\.psv: line 2 \(data row 1\): column 'SepsisLabel' = 2\.0, expected 0 or 1",
        ),
        (
            psv(row("NaN")),
            r"p000005\.psv: line 2 \(data row 1\): column 'ICULOS' = nan, expected an integer",
        ),
    ],
)
def test_bad_input_names_file_row_column(tmp_path, text, match):
    files = {**FILES, "p000005.psv": text}
    src = write_zip(tmp_path / "bad.zip", files)
    with pytest.raises(PhysioNetFormatError, match=match):
        read_physionet2019(src, progress=False)


def test_skip_and_count(tmp_path):
    files = {
        **FILES,
        "p000005.psv": psv(row(1, HR=60), row(2, HR="x"), row(3, HR=61) + "|9", row(4, HR=62)),
        "p000006.psv": psv(row(1), header="HR|O2Sat"),
        "p000007.psv": psv(row(1, HR=70), row(1, HR=71), row(2, label=3), row(3, HR=72)),
        "p000008.psv": HEADER + "\n",
    }
    t = read_physionet2019(write_dir(tmp_path / "d", files), SKIP, progress=False)
    assert t.stays["stay_id"].tolist() == [1, 2, 3, 5, 7, 12]
    att = {r["step"]: r["count"] for r in t.source_attrition}
    assert att["bad rows skipped"] == 4
    assert att["files with a bad header skipped"] == 1
    assert att["files without rows"] == 1
    assert len(t.bad_rows) == 5 and any("p000006.psv: line 1 (header)" in m for m in t.bad_rows)
    o = t.observations
    assert o.loc[o["stay_id"] == 5, ["hour", "value"]].values.tolist() == [[1.0, 60.0], [4.0, 62.0]]
    assert o.loc[o["stay_id"] == 7, ["hour", "value"]].values.tolist() == [[1.0, 70.0], [3.0, 72.0]]
    assert t.labels_hourly.loc[t.labels_hourly["stay_id"] == 7, "hour"].tolist() == [1, 3]


def test_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_physionet2019(tmp_path / "nope.zip", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="exactly one .zip"):
        read_physionet2019(tmp_path / "empty", progress=False)


def _shared_zip() -> Path:
    root = Path(
        os.environ.get(
            "SEPSIS_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
        )
    )
    z = root / "physionet2019" / "training_setA.zip"
    if not z.exists():
        pytest.skip(f"PhysioNet 2019 training set A not found at {z} (set SEPSIS_SHARED_DATA)")
    return z


@pytest.mark.realdata
def test_real_zip_first_members_match_pandas():
    """First 500 members: counts and values agree with a per-file pandas read; labels round-trip."""
    from sepsis.evaluation.utility import challenge_labels

    zpath = _shared_zip()
    n = 500
    t = read_physionet2019(zpath, progress=False, limit=n)
    with zipfile.ZipFile(zpath) as z:
        names = sorted(m for m in z.namelist() if m.endswith(".psv"))[:n]
        raw = {int(Path(m).stem[1:]): pd.read_csv(io.BytesIO(z.read(m)), sep="|") for m in names}
    assert t.stays["stay_id"].tolist() == sorted(raw)
    assert len(t.labels_hourly) == sum(len(d) for d in raw.values())
    los = t.stays.set_index("stay_id")["los_hours"]
    onset = t.onsets.set_index("stay_id")["onset_hour"]
    start = t.stays.set_index("stay_id")["positive_at_start"]
    n_obs_expected = 0
    for sid, d in raw.items():
        assert los[sid] == d["ICULOS"].max()
        lab = d["SepsisLabel"].to_numpy()
        assert start[sid] == (lab[0] == 1)
        if lab.any() and not lab[0]:
            first = int(np.argmax(lab))
            assert onset[sid] == d["ICULOS"].iloc[first] + 6
            # the true onset, as a row index, reproduces the challenge label vector
            np.testing.assert_array_equal(
                challenge_labels(len(lab), onset[sid] - d["ICULOS"].iloc[0]), lab
            )
        elif not lab.any():
            assert np.isnan(onset[sid])
        n_obs_expected += int(d[["HR", "O2Sat", "Temp", "MAP"]].notna().to_numpy().sum())
    o = t.observations
    n_obs = int(o["variable"].astype(str).isin(["heart_rate", "spo2", "temperature", "mbp"]).sum())
    dropped = sum(t.dropped_values.get(v, 0) for v in ("heart_rate", "spo2", "temperature", "mbp"))
    assert n_obs + dropped == n_obs_expected
    lab_rows = t.labels_hourly
    assert int(lab_rows["sepsis"].sum()) > 0
