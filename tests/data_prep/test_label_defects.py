"""Issue 14: label defects found against the MIMIC-III demo's raw records, one test each
(the date-only culture and the pre-ICU baseline are golden timelines in golden/timelines.yaml)."""

from __future__ import annotations

import pandas as pd
import pytest
from test_mimic3 import _copy
from test_sofa import GAS_T, ONE_HOUR, at, run

from data_prep.concepts import variables as V

VENT = V.VENT_ITEMIDS[0]


@pytest.mark.parametrize(
    "code,expected",
    [
        (None, 3),  # no specimen row: the gas is kept (most ICU gases are arterial)
        (V.SPECIMEN_CODES["ART"], 3),
        (V.SPECIMEN_CODES["VEN"], 0),  # venous pO2 61 is not a PaO2 (stay 292910)
        (V.SPECIMEN_CODES["MIX"], 0),
        (V.SPECIMEN_CODES["CENTRAL VENOUS"], 0),
        (0, 3),  # an unrecognised specimen text: kept and counted
    ],
)
def test_pao2_is_scored_only_from_arterial_or_untyped_draws(code, expected):
    # pO2 61 on FiO2 0.5, ventilated: P/F 122 -> 3
    lab = [(GAS_T, V.LAB_PO2, 61.0), (GAS_T - 1, V.LAB_FIO2, 50.0)]
    if code is not None:
        lab.append((GAS_T, V.LAB_SPECIMEN_TYPE, float(code)))
    chart = [(GAS_T - 1, VENT, None, "Servo")]
    df, counts = run(los=12, chart=chart, lab=lab, params=ONE_HOUR)
    assert at(df, int(GAS_T), "sofa_resp") == expected
    if expected == 0:
        assert counts["pao2_non_arterial_dropped"] == 1
    else:
        assert counts.get("pao2_non_arterial_dropped", 0) == 0


def test_specimen_of_another_draw_does_not_type_the_gas():
    lab = [
        (GAS_T, V.LAB_PO2, 61.0),
        (GAS_T - 1, V.LAB_FIO2, 50.0),
        (GAS_T - 0.5, V.LAB_SPECIMEN_TYPE, float(V.SPECIMEN_CODES["VEN"])),
    ]
    df, counts = run(los=12, chart=[(GAS_T - 1, VENT, None, "Servo")], lab=lab, params=ONE_HOUR)
    assert at(df, int(GAS_T), "sofa_resp") == 3
    assert counts["pao2_specimen_unknown_kept"] == 1


def test_reader_codes_specimen_text_into_valuenum(tmp_path):
    """LABEVENTS 50800 rows carry text (ART/VEN/...) and no VALUENUM: the reader keeps them
    as numeric codes next to the gas so that SOFA can type the draw."""
    from data_prep.sources.mimic3 import ReaderParams, extract

    raw = _copy(tmp_path)
    with open(raw / "LABEVENTS.csv", "a") as fh:
        fh.write("901,1,101,50800,2150-01-02 12:00:00,VEN,,,\n")
        fh.write("902,1,101,50800,2150-01-02 13:00:00, art ,,,\n")
        fh.write("903,1,101,50800,2150-01-02 14:00:00,OTHER,,,\n")
    extract(raw, tmp_path / "out", ReaderParams(), progress=False)
    got = pd.read_parquet(tmp_path / "out" / "lab.parquet")
    spec = got.loc[got["itemid"] == V.LAB_SPECIMEN_TYPE].sort_values("time")["valuenum"]
    assert spec.tolist() == [V.SPECIMEN_CODES["VEN"], V.SPECIMEN_CODES["ART"], 0]
