"""Adding a source is one reader module plus its mapping (issue 12).

A toy source (three stays written by the test as CSV, its own codes) is registered through
`data_prep.sources.register` with one mapping entry per concept (a copy of the shipped
dictionary with `toy:` blocks added); the pipeline's extract stage writes the events
contract through it, and the concept layer's SOFA and onsets come out as computed by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from data_prep import io as dio
from data_prep import sources
from data_prep.concepts import dictionary
from data_prep.sepsis3 import LabelParams, derive_labels
from data_prep.sources import Source

T0 = pd.Timestamp("2150-01-01 08:00")
TOY_CODES = {"platelets": "PLT", "creatinine": "CREA", "mbp": "MAP", "heart_rate": "HR"}


def _toy_dictionary(tmp: Path) -> dictionary.Dictionary:
    """The shipped dictionary plus one `toy` mapping entry per concept the toy source has."""
    raw = yaml.safe_load(dictionary.DICTIONARY_FILE.read_text())
    for concept, code in TOY_CODES.items():
        raw["concepts"][concept]["sources"]["toy"] = {"table": "measurements", "code": code}
    path = tmp / "dictionary.yaml"
    path.write_text(yaml.safe_dump(raw))
    return dictionary.load(path)


def _write_raw(folder: Path) -> None:
    folder.mkdir()
    pd.DataFrame(
        {
            "stay": [1, 2, 3],
            "patient": [11, 12, 13],
            "admission": [21, 22, 23],
            "age": [60, 70, 50],
            "sex": ["F", "M", "F"],
            "los_hours": [30, 30, 20],
        }
    ).to_csv(folder / "stays.csv", index=False)
    rows = [
        (1, 1.0, "PLT", 200),
        (1, 10.5, "PLT", 40),
        (1, 2.0, "HR", 80),
        (2, 1.0, "PLT", 200),
        (2, 10.5, "PLT", 40),
        (2, 2.0, "HR", 90),
        (3, 5.5, "CREA", 3.6),
        (3, 5.5, "MAP", 65),
        (3, 1.0, "HR", 100),
    ]
    pd.DataFrame(rows, columns=["stay", "hour", "code", "value"]).to_csv(
        folder / "measurements.csv", index=False
    )
    # stay 1: antibiotic at 9 h, culture at 9.5 h -> SI at 9 h; stay 3: SI at 4 h; stay 2 none
    pd.DataFrame(
        {
            "admission": [21, 21, 23, 23],
            "hour": [9.0, 9.5, 4.0, 4.2],
            "kind": ["antibiotic", "culture", "antibiotic", "culture"],
            "name": ["vancomycin", "BLOOD CULTURE", "cefepime", "URINE"],
        }
    ).to_csv(folder / "infection.csv", index=False)


def _toy_source(d: dictionary.Dictionary) -> Source:
    code_to_concept = {
        m.extra["code"]: c.name for c in d.concepts.values() for m in c.mappings("toy")
    }

    def extract(data_dir: Path, out_dir: Path, options, progress: bool = True) -> dict:
        st = pd.read_csv(data_dir / "stays.csv")
        stays = pd.DataFrame(
            {
                "stay_id": st["stay"],
                "patient_id": st["patient"],
                "hadm_id": st["admission"],
                "source": "toy",
                "intime": T0,
                "outtime": T0 + pd.to_timedelta(st["los_hours"], "h"),
                "los_hours": st["los_hours"].astype(float),
                "age": st["age"].astype(float),
                "gender": st["sex"],
                "dbsource": None,
                "unit": None,
                "died": False,
                "has_chart": True,
                "weight_kg": np.nan,
            }
        )
        dio.write_parquet(stays, out_dir / "stays.parquet", dio.EXTRACTED_STAYS)
        m = pd.read_csv(data_dir / "measurements.csv")
        known = m["code"].isin(code_to_concept)
        m = m[known]
        events = pd.DataFrame(
            {
                "stay_id": m["stay"],
                "time": T0 + pd.to_timedelta(m["hour"], "h"),
                "concept": m["code"].map(code_to_concept),
                "value": m["value"].astype(float),
                "end_time": pd.NaT,
                "text": None,
            }
        )
        dio.write_parquet(events, out_dir / "events" / "measurements.parquet", dio.EVENTS)
        inf = pd.read_csv(data_dir / "infection.csv")
        adm = pd.DataFrame(
            {
                "patient_id": inf["admission"] - 10,
                "hadm_id": inf["admission"],
                "time": T0 + pd.to_timedelta(inf["hour"], "h"),
                "concept": inf["kind"],
                "text": inf["name"],
                "time_source": np.where(inf["kind"] == "antibiotic", "administration", "charted"),
            }
        )
        dio.write_parquet(adm, out_dir / "admission_events.parquet", dio.ADMISSION_EVENTS)
        return {"measurements_unknown_code": int((~known).sum())}

    return Source(
        name="toy",
        description="a toy source written by a test",
        extract=extract,
        inputs=lambda data_dir: sorted(Path(data_dir).glob("*.csv")),
    )


@pytest.fixture
def toy(tmp_path):
    d = _toy_dictionary(tmp_path)
    sources.register(_toy_source(d))
    yield d
    sources.unregister("toy")


def test_a_toy_source_plugs_in_through_the_registry(toy, tmp_path):
    from sepsis import pipeline
    from sepsis.config import load_config

    _write_raw(tmp_path / "raw")
    assert "toy" in sources.names()
    cfg = load_config(
        None, ["source=toy", f"data_dir={tmp_path / 'raw'}", f"output_dir={tmp_path / 'run'}"]
    )
    extracted = pipeline.extract(cfg, progress=False)
    ev = pd.read_parquet(extracted / "events")
    assert sorted(ev["concept"].astype(str).unique()) == [
        "creatinine",
        "heart_rate",
        "mbp",
        "platelets",
    ]

    labels, onsets, _ = derive_labels(extracted, LabelParams(), progress=False)
    on = onsets.set_index("stay_id")["onset_hour"]
    # stay 1: platelets 40 at 10.5 h (coagulation 3) inside the SI window -> onset hour 10
    assert on[1] == 10
    # stay 2: the same SOFA rise without suspected infection -> no onset
    assert np.isnan(on[2])
    # stay 3: creatinine 3.6 (renal 3) + MAP 65 (cardio 1) at 5.5 h, SI at 4 h -> onset 5
    assert on[3] == 5
    lab = labels.set_index(["stay_id", "hour"])
    assert lab.loc[(1, 9), "sofa"] == 0 and lab.loc[(1, 10), "sofa_coag"] == 3
    assert lab.loc[(3, 5), "sofa_renal"] == 3 and lab.loc[(3, 5), "sofa_cardio"] == 1
    assert lab.loc[(3, 5), "sofa"] == 4
    assert bool(lab.loc[(1, 10), "sepsis"]) and not bool(lab.loc[(1, 9), "sepsis"])


def test_unknown_source_is_refused_naming_the_known_ones(tmp_path):
    from sepsis.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="physionet2019"):
        load_config(None, ["source=nosuch", f"data_dir={tmp_path}"])


def test_dictionary_refuses_an_item_in_two_concepts(tmp_path):
    raw = yaml.safe_load(dictionary.DICTIONARY_FILE.read_text())
    raw["concepts"]["sbp"]["sources"]["mimic3"]["ids"].append(220045)  # heart rate's item
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(dictionary.DictionaryError, match="220045.*heart_rate.*sbp"):
        dictionary.load(path)
