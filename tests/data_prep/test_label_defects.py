"""Issue 14: label defects found against the MIMIC-III demo's raw records, one test each
(the date-only culture and the pre-ICU baseline are golden timelines in golden/timelines.yaml)."""

from __future__ import annotations

import pandas as pd
import pytest
from test_mimic3 import _copy
from test_sofa import GAS_T, ONE_HOUR, at, run

from data_prep.concepts.dictionary import concepts

VENT = "ventilation"
SPECIMEN_CODES = concepts()["blood_gas_specimen"].extra["codes"]


@pytest.mark.parametrize(
    "code,expected",
    [
        (None, 3),  # no specimen row: the gas is kept (most ICU gases are arterial)
        (SPECIMEN_CODES["ART"], 3),
        (SPECIMEN_CODES["VEN"], 0),  # venous pO2 61 is not a PaO2 (stay 292910)
        (SPECIMEN_CODES["MIX"], 0),
        (SPECIMEN_CODES["CENTRAL VENOUS"], 0),
        (0, 3),  # an unrecognised specimen text: kept and counted
    ],
)
def test_pao2_is_scored_only_from_arterial_or_untyped_draws(code, expected):
    # pO2 61 on FiO2 0.5, ventilated: P/F 122 -> 3
    ev = [(GAS_T, "po2", 61.0), (GAS_T - 1, "fio2_bloodgas", 50.0)]
    if code is not None:
        ev.append((GAS_T, "blood_gas_specimen", float(code)))
    ev.append((GAS_T - 1, VENT, None, "Servo"))
    df, counts = run(los=12, ev=ev, params=ONE_HOUR)
    assert at(df, int(GAS_T), "sofa_resp") == expected
    if expected == 0:
        assert counts["pao2_non_arterial_dropped"] == 1
    else:
        assert counts.get("pao2_non_arterial_dropped", 0) == 0


def test_specimen_of_another_draw_does_not_type_the_gas():
    ev = [
        (GAS_T, "po2", 61.0),
        (GAS_T - 1, "fio2_bloodgas", 50.0),
        (GAS_T - 0.5, "blood_gas_specimen", float(SPECIMEN_CODES["VEN"])),
        (GAS_T - 1, VENT, None, "Servo"),
    ]
    df, counts = run(los=12, ev=ev, params=ONE_HOUR)
    assert at(df, int(GAS_T), "sofa_resp") == 3
    assert counts["pao2_specimen_unknown_kept"] == 1


def test_reader_codes_specimen_text_into_value(tmp_path):
    """LABEVENTS 50800 rows carry text (ART/VEN/...) and no VALUENUM: the reader keeps them
    as numeric codes (events of concept blood_gas_specimen) next to the gas so that SOFA can
    type the draw."""
    from data_prep.concepts.dictionary import concepts
    from data_prep.sources.mimic3 import ReaderParams, extract

    codes = concepts()["blood_gas_specimen"].extra["codes"]

    raw = _copy(tmp_path)
    with open(raw / "LABEVENTS.csv", "a") as fh:
        fh.write("901,1,101,50800,2150-01-02 12:00:00,VEN,,,\n")
        fh.write("902,1,101,50800,2150-01-02 13:00:00, art ,,,\n")
        fh.write("903,1,101,50800,2150-01-02 14:00:00,OTHER,,,\n")
    extract(raw, tmp_path / "out", ReaderParams(), progress=False)
    got = pd.read_parquet(tmp_path / "out" / "events" / "labevents.parquet")
    spec = got.loc[got["concept"] == "blood_gas_specimen"].sort_values("time")["value"]
    assert spec.tolist() == [codes["VEN"], codes["ART"], 0]


# ---- defect 2: antibiotic administration times beat order dates ------------------------
def test_metavision_antibiotic_administrations_are_extracted(tmp_path):
    from data_prep.sources.mimic3 import ReaderParams, extract

    raw = _copy(tmp_path)
    with open(raw / "INPUTEVENTS_MV.csv", "a") as fh:
        # vancomycin (225798) at ICU hour 1.2; a rewritten one; acyclovir (225837, antiviral)
        fh.write(
            "901,1,101,300001,2150-01-01 11:12:00,2150-01-01 12:12:00,225798,1,dose,,,80,FinishedRunning\n"
        )
        fh.write(
            "902,1,101,300001,2150-01-01 11:30:00,2150-01-01 12:30:00,225798,1,dose,,,80,Rewritten\n"
        )
        fh.write(
            "903,1,101,300001,2150-01-01 11:40:00,2150-01-01 12:40:00,225837,1,dose,,,80,FinishedRunning\n"
        )
    rep = extract(raw, tmp_path / "out", ReaderParams(), progress=False)
    got = pd.read_parquet(tmp_path / "out" / "admission_events.parquet")
    got = got[got["time_source"] == "administration"]
    assert got[["patient_id", "hadm_id", "concept", "text"]].values.tolist() == [
        [1, 101, "antibiotic", "Vancomycin"]  # the stay's patient and admission
    ]
    assert got["time"].tolist() == [pd.Timestamp("2150-01-01 11:12:00")]
    tr = rep.tables["INPUTEVENTS_MV"]
    assert tr.rows_read == tr.rows_kept + sum(tr.dropped.values())


def test_administration_time_pairs_where_the_order_date_did_not():
    """Stay 283181 lost its pairing because the antibiotic counted at its order date's
    00:00, 33.6 h before the urine culture. Here: order dated day 0, first administration at
    33 h (MetaVision), culture at 44.6 h: from the order date 44.6 h (no pair), from the
    administration 11.6 h (an antibiotic-first pair, SI at the administration)."""
    from test_infection import T0, make_events, make_stays

    from data_prep.concepts import infection as I

    order = [(0.0, "Vancomycin")]
    micro = [(44.6, None, "URINE")]
    stays = make_stays([(1, 1, -10.0, 200.0)])
    params = I.InfectionParams()
    out, _ = I.suspected_infection(make_events(order, micro), stays, params)
    assert out.empty  # order date alone: 44.6 h before the culture, no pair
    admin = [(33.0, "Vancomycin", I.ABX_ADMINISTRATION)]
    out, counts = I.suspected_infection(make_events(order + admin, micro), stays, params)
    r = out.iloc[0]
    assert r["si_time"] == T0 + pd.Timedelta(hours=33.0)
    assert r["antibiotic_time_source"] == I.ABX_ADMINISTRATION
    assert counts["antibiotic_orders_superseded_by_administration"] == 0  # another day


def test_order_on_an_administration_day_is_superseded():
    from test_infection import T0, make_events, make_stays

    from data_prep.concepts import infection as I

    # order dated day 1 (00:00 = 24 h) and given at 30 h; culture at 47 h: from the order
    # date it would be an abx-first pair at 24 h, from the administration one at 30 h
    abx = [(24.0, "Cefepime"), (30.0, "Cefepime", I.ABX_ADMINISTRATION)]
    micro = [(47.0, None, "BLOOD CULTURE")]
    out, counts = I.suspected_infection(make_events(abx, micro), make_stays(), I.InfectionParams())
    assert out["si_time"].iloc[0] == T0 + pd.Timedelta(hours=30.0)
    assert counts["antibiotic_orders_superseded_by_administration"] == 1


@pytest.mark.realdata
def test_mv_antibiotic_list_is_the_rule_applied_to_d_items():
    """mv_antibiotics.csv = D_ITEMS 'Antibiotics' items whose label matches antibiotics.txt."""
    import os
    import re
    from pathlib import Path

    from data_prep.concepts import infection as I

    shared = Path(os.environ.get("SEPSIS_SHARED_DATA", "../shared/data"))
    d_items = shared / "mimic3-demo" / "D_ITEMS.csv.gz"
    if not d_items.exists():
        pytest.skip(f"{d_items} absent (set SEPSIS_SHARED_DATA)")
    d = pd.read_csv(d_items)
    d.columns = [c.lower() for c in d.columns]
    d = d[
        (d["category"].fillna("").str.lower() == "antibiotics") & (d["linksto"] == "inputevents_mv")
    ]
    pattern = "|".join(re.escape(n) for n in I.antibiotic_names())
    d = d[d["label"].str.lower().str.contains(pattern)]
    assert I.mv_antibiotic_items() == dict(zip(d["itemid"], d["label"], strict=True))


# ---- defect 5b: GU irrigant, out minus in ---------------------------------------------


def test_urine_is_gu_irrigant_out_minus_in():
    # 24 h window ending at hour 23: irrigant + urine out 900 mL, irrigant in 600 mL -> 300
    # mL/24 h -> renal 3 (before issue 14: 227489 was not read at all -> no urine data, 0)
    urine = [(5.0, 900.0), (5.5, -600.0)]
    df, _ = run(los=30, urine=urine)
    assert at(df, 23, "sofa_renal") == 3
    df, _ = run(los=30, urine=[(5.0, 900.0)])
    assert at(df, 23, "sofa_renal") == 0


def test_reader_negates_gu_irrigant_in_and_keeps_irrigant_out(tmp_path):
    from data_prep.sources.mimic3 import ReaderParams, extract

    raw = _copy(tmp_path)
    with open(raw / "OUTPUTEVENTS.csv", "a") as fh:
        fh.write("901,1,101,300001,2150-01-01 12:00:00,227489,900,mL,,10,,,\n")
        fh.write("902,1,101,300001,2150-01-01 12:00:00,227488,600,mL,,10,,,\n")
    extract(raw, tmp_path / "out", ReaderParams(), progress=False)
    got = pd.read_parquet(tmp_path / "out" / "events" / "outputevents.parquet")
    assert set(got["concept"]) == {"urine_output"}  # irrigant in and out are urine events
    at_noon = got[got["time"] == pd.Timestamp("2150-01-01 12:00:00")]["value"]
    assert sorted(at_noon.tolist()) == [-600.0, 200.0, 900.0]  # 200: the fixture's 226559


# ---- the definition presets -------------------------------------------------------------


@pytest.mark.parametrize("name", ["mimic3-demo-reference", "mimic3-reference"])
def test_reference_presets_declare_the_reference_code_rules(name, monkeypatch, tmp_path):
    from pathlib import Path

    from sepsis.config import load_config

    monkeypatch.setenv("MIMIC3_DIR", str(tmp_path))
    monkeypatch.setenv("SEPSIS_SHARED_DATA", str(tmp_path))
    cfg = load_config(
        Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml", check_paths=False
    )
    ours = load_config(
        Path(__file__).resolve().parents[2] / "configs" / f"{name.replace('-reference', '')}.yaml",
        check_paths=False,
    )
    assert (cfg.labels.si_time, cfg.labels.pre_icu_hours, cfg.labels.pre_hours) == ("culture", 0, 0)
    assert (ours.labels.si_time, ours.labels.pre_icu_hours) == ("earlier", 24)
    assert cfg.output_dir != ours.output_dir  # its own run folder
    assert cfg.cohort == ours.cohort and cfg.source == ours.source
