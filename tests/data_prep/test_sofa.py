"""Unit tests of data_prep.concepts.sofa: every component's thresholds at and around each
boundary (pure scoring functions and through `hourly_sofa` from events named by concept),
FiO2 units and lookback, ventilation, the intubated-verbal GCS rule, 24-h urine sums, the
trailing worst-value window, and the "missing component scores 0, others still count" rule
(the reference code zeroed the whole SOFA instead: PIPELINE.md section 1).

Worked expectations are written out by hand; the golden timelines in test_sepsis3.py cover
the onset logic on top of these components and are not repeated here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep.concepts import sofa as S
from data_prep.concepts.dictionary import concepts
from data_prep.concepts.sofa import SofaParams

T0 = pd.Timestamp("2100-01-01")
VENT = "ventilation"  # a ventilator setting charted (presence only)
EYE, VERBAL, MOTOR = "gcs_eye", "gcs_verbal", "gcs_motor"


# ---------------------------------------------------------------------------------------
# events builders (io.EVENTS columns); times are hours after T0
# ---------------------------------------------------------------------------------------


def _ts(hours) -> pd.Series:
    return pd.Series(
        T0 + pd.to_timedelta(np.asarray(hours, float), unit="h"), dtype="datetime64[us]"
    )


def make_stays(los: float | list[float] = 48.0, ids: list[int] | None = None) -> pd.DataFrame:
    los = [los] if np.isscalar(los) else list(los)
    ids = ids or list(range(1, len(los) + 1))
    return pd.DataFrame(
        {"stay_id": np.asarray(ids, np.int64), "intime": _ts([0.0] * len(ids)), "outtime": _ts(los)}
    )


def make_events(ev=(), vaso=(), urine=()) -> pd.DataFrame:
    """Events in row order: ev rows (t, concept, value[, text][, stay_id]), then vasopressor
    rows (start, end or None, concept, rate[, stay_id]), then urine rows (t, mL[, stay_id])."""
    rows = []
    for r in ev:
        r = tuple(r) + (None,) * max(4 - len(r), 0)
        rows.append((r[4] if len(r) > 4 else 1, r[0], r[1], r[2], None, r[3]))
    for r in vaso:
        rows.append((r[4] if len(r) > 4 else 1, r[0], r[2], r[3], r[1], None))
    for r in urine:
        rows.append((r[2] if len(r) > 2 else 1, r[0], "urine_output", r[1], None, None))
    return pd.DataFrame(
        {
            "stay_id": np.array([r[0] for r in rows], np.int64),
            "time": _ts([r[1] for r in rows]),
            "concept": pd.array([r[2] for r in rows], dtype="string"),
            "value": np.array([np.nan if r[3] is None else r[3] for r in rows], float),
            "end_time": pd.Series(
                [pd.NaT if r[4] is None else T0 + pd.Timedelta(hours=r[4]) for r in rows],
                dtype="datetime64[us]",
            ),
            "text": pd.array([r[5] for r in rows], dtype="string"),
        }
    )


def run(los=48.0, ev=(), vaso=(), urine=(), params=None, stays=None, pre_hours=0):
    """hourly_sofa on hand-written events; returns (frame, counts)."""
    params = params or SofaParams()
    stays = make_stays(los) if stays is None else stays
    return S.hourly_sofa(stays, make_events(ev, vaso, urine), params, pre_hours=pre_hours)


def series(df: pd.DataFrame, col: str, stay: int = 1) -> list[int]:
    """The column's hourly values of one stay, hour 0 first."""
    d = df[df["stay_id"] == stay].sort_values("hour")
    return d[col].astype(int).tolist()


def at(df: pd.DataFrame, hour: int, col: str, stay: int = 1) -> int:
    d = df[(df["stay_id"] == stay) & (df["hour"] == hour)]
    assert len(d) == 1, f"stay {stay} hour {hour}: {len(d)} rows"
    return int(d[col].iloc[0])


ONE_HOUR = SofaParams(sofa_lookback_hours=1)  # window = that hour only: isolates binning


# ---------------------------------------------------------------------------------------
# pure scoring tables at and just around each boundary
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn,values,expected",
    [
        (
            S.score_coagulation,
            [150, 149.9, 100, 99.9, 50, 49.9, 20, 19.9, 0],
            [0, 1, 1, 2, 2, 3, 3, 4, 4],
        ),
        (
            S.score_liver,
            [1.19, 1.2, 1.99, 2.0, 5.99, 6.0, 11.99, 12.0, 40],
            [0, 1, 1, 2, 2, 3, 3, 4, 4],
        ),
        (
            S.score_creatinine,
            [1.19, 1.2, 1.99, 2.0, 3.49, 3.5, 4.99, 5.0, 12],
            [0, 1, 1, 2, 2, 3, 3, 4, 4],
        ),
        (S.score_urine, [2000, 500, 499.9, 200, 199.9, 0], [0, 0, 3, 3, 4, 4]),
        (S.score_map, [90, 70, 69.9, 20], [0, 0, 1, 1]),
        (S.score_cns, [15, 14, 13, 12, 10, 9, 6, 5, 3], [0, 1, 1, 2, 2, 3, 3, 4, 4]),
    ],
)
def test_scoring_tables_at_boundaries(fn, values, expected):
    got = fn(np.array(values, float))
    assert got.dtype == np.int8
    assert got.tolist() == expected


def test_respiration_table_with_and_without_ventilation():
    pf = np.array([400, 399.9, 300, 299.9, 200, 199.9, 100, 99.9, 40], float)
    vent = S.score_respiration(pf, np.ones(len(pf), bool))
    novent = S.score_respiration(pf, np.zeros(len(pf), bool))
    assert vent.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    # 3 and 4 points need ventilation: without it the score is capped at 2
    assert novent.tolist() == [0, 1, 1, 2, 2, 2, 2, 2, 2]


@pytest.mark.parametrize(
    "drug,rate,expected",
    [
        ("dopamine", 0.5, 2),
        ("dopamine", 5.0, 2),
        ("dopamine", 5.01, 3),
        ("dopamine", 15.0, 3),
        ("dopamine", 15.01, 4),
        ("dobutamine", 0.01, 2),
        ("dobutamine", 5.0, 2),
        ("dobutamine", 20.0, 2),  # any dose -> 2
        ("epinephrine", 0.01, 3),
        ("epinephrine", 0.1, 3),
        ("epinephrine", 0.11, 4),
        ("norepinephrine", 0.01, 3),
        ("norepinephrine", 0.1, 3),
        ("norepinephrine", 0.11, 4),
        ("norepinephrine", 2.0, 4),
    ],
)
def test_vasopressor_table_at_boundaries(drug, rate, expected):
    assert S.score_vasopressor(np.array([drug], object), np.array([rate])).tolist() == [expected]


def test_fio2_fraction_treats_values_above_one_as_percent():
    assert S.fio2_fraction(np.array([21, 50, 100, 0.21, 0.5, 1.0])).tolist() == pytest.approx(
        [0.21, 0.5, 1.0, 0.21, 0.5, 1.0]
    )


def test_golden_threshold_table_agrees_with_scoring_functions():
    """tests/data_prep/golden/sofa_thresholds.csv: the independent boundary table."""
    from pathlib import Path

    table = pd.read_csv(
        Path(__file__).parent / "golden" / "sofa_thresholds.csv", dtype={"extra": "string"}
    )
    fns = {
        "coagulation": S.score_coagulation,
        "liver": S.score_liver,
        "renal_creatinine": S.score_creatinine,
        "renal_urine": S.score_urine,
        "cns": S.score_cns,
        "cardio_map": S.score_map,
    }
    for r in table.itertuples():
        v = np.array([r.value], float)
        if r.component == "respiration":
            got = S.score_respiration(v, np.array([r.extra == "vent"]))
        elif r.component == "cardio_vaso":
            got = S.score_vasopressor(np.array([r.extra], object), v)
        else:
            got = fns[r.component](v)
        assert int(got[0]) == r.expected, r


# ---------------------------------------------------------------------------------------
# each component from raw rows through hourly_sofa (routing by ITEMID, boundaries)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "concept,col,value,expected",
    [
        ("platelets", "sofa_coag", 150, 0),
        ("platelets", "sofa_coag", 149, 1),
        ("platelets", "sofa_coag", 100, 1),
        ("platelets", "sofa_coag", 99, 2),
        ("platelets", "sofa_coag", 50, 2),
        ("platelets", "sofa_coag", 49, 3),
        ("platelets", "sofa_coag", 20, 3),
        ("platelets", "sofa_coag", 19, 4),
        ("bilirubin", "sofa_liver", 1.1, 0),
        ("bilirubin", "sofa_liver", 1.2, 1),
        ("bilirubin", "sofa_liver", 1.9, 1),
        ("bilirubin", "sofa_liver", 2.0, 2),
        ("bilirubin", "sofa_liver", 5.9, 2),
        ("bilirubin", "sofa_liver", 6.0, 3),
        ("bilirubin", "sofa_liver", 11.9, 3),
        ("bilirubin", "sofa_liver", 12.0, 4),
        ("creatinine", "sofa_renal", 1.1, 0),
        ("creatinine", "sofa_renal", 1.2, 1),
        ("creatinine", "sofa_renal", 1.9, 1),
        ("creatinine", "sofa_renal", 2.0, 2),
        ("creatinine", "sofa_renal", 3.4, 2),
        ("creatinine", "sofa_renal", 3.5, 3),
        ("creatinine", "sofa_renal", 4.9, 3),
        ("creatinine", "sofa_renal", 5.0, 4),
    ],
)
def test_lab_components_from_rows(concept, col, value, expected):
    df, _ = run(los=4, ev=[(1.5, concept, value)])
    assert at(df, 1, col) == expected
    assert at(df, 0, col) == 0  # the lab is not seen before the hour it falls in
    assert at(df, 1, "sofa") == expected  # the only component with data


@pytest.mark.parametrize("value,expected", [(70.0, 0), (69.9, 1), (40.0, 1)])
def test_map_below_70(value, expected):
    df, _ = run(los=3, ev=[(0.5, "mbp", value)])
    assert at(df, 0, "sofa_cardio") == expected


def _vaso_cardio(drug, rate):
    df, _ = run(los=3, vaso=[(0.5, 1.5, drug, rate)], params=ONE_HOUR)
    return at(df, 0, "sofa_cardio")


@pytest.mark.parametrize(
    "drug,rate,expected",
    [
        ("dopamine", 5.0, 2),
        ("dopamine", 5.1, 3),
        ("dopamine", 15.0, 3),
        ("dopamine", 15.1, 4),
        ("dobutamine", 0.5, 2),
        ("dobutamine", 20.0, 2),
        ("epinephrine", 0.1, 3),
        ("epinephrine", 0.11, 4),
        ("norepinephrine", 0.1, 3),
        ("norepinephrine", 0.11, 4),
        ("norepinephrine", 0.2, 4),
        ("dopamine", 3.0, 2),
        ("norepinephrine", 0.0, 0),  # a zero rate is not an infusion
    ],
)
def test_vasopressor_doses_from_rows(drug, rate, expected):
    assert _vaso_cardio(drug, rate) == expected


def test_cardio_is_the_worst_of_map_and_vasopressors_not_their_sum():
    df, _ = run(los=3, ev=[(0.5, "mbp", 60.0)], vaso=[(0.5, 1.0, "dopamine", 3.0)], params=ONE_HOUR)
    assert at(df, 0, "sofa_cardio") == 2
    df, _ = run(
        los=3,
        ev=[(0.5, "mbp", 60.0)],
        vaso=[(0.5, 1.0, "dopamine", 3.0), (0.7, 1.0, "norepinephrine", 0.05)],
        params=ONE_HOUR,
    )
    assert at(df, 0, "sofa_cardio") == 3


def test_vasopressor_interval_counts_in_every_hour_it_touches_half_open():
    # [2.0, 4.0) touches hours 2 and 3, not 4; [5.5, 5.6) only hour 5; no endtime = a point
    df, counts = run(
        los=10,
        params=ONE_HOUR,
        vaso=[
            (2.0, 4.0, "norepinephrine", 0.2),
            (5.5, 5.6, "dopamine", 6.0),
            (7.25, None, "dobutamine", 1.0),
        ],
    )
    assert series(df, "sofa_cardio") == [0, 0, 4, 4, 0, 3, 0, 2, 0, 0]
    assert counts["vasopressors_rows_no_endtime_as_point"] == 1


def test_vasopressor_started_before_icu_counts_from_hour_0():
    df, _ = run(los=4, params=ONE_HOUR, vaso=[(-5.0, 1.5, "epinephrine", 0.05)])
    assert series(df, "sofa_cardio") == [3, 3, 0, 0]


@pytest.mark.parametrize("concept", ["vasopressin", "Norepinephrine ", "DOPAMINE"])
def test_concept_not_in_the_dictionary_raises_or_is_skipped_and_counted(concept):
    # concept names are the dictionary's, exactly: the reader maps its drug names onto them
    # (the old vasopressors.parquet `drug` was matched case/space-blind)
    with pytest.raises(ValueError, match=r"events: column 'concept'.*not a concept of the dict"):
        run(los=3, vaso=[(0.5, 1.0, concept, 2.4)])
    df, counts = run(
        los=3,
        vaso=[(0.5, 1.0, concept, 2.4)],
        params=SofaParams(on_bad_rows="skip-and-count"),
    )
    assert counts["events_rows_unknown_concept"] == 1
    assert series(df, "sofa_cardio") == [0, 0, 0]


def test_vasopressor_concepts_are_the_dictionary_vasopressors():
    assert S.VASOPRESSORS == tuple(c.name for c in concepts().of_kind("vasopressor"))
    assert set(S.VASOPRESSORS) == {"norepinephrine", "epinephrine", "dopamine", "dobutamine"}


def test_vasopressor_end_before_start_raises():
    with pytest.raises(ValueError, match=r"events: column 'end_time'.*end_time before time"):
        run(los=3, vaso=[(1.5, 0.5, "dopamine", 3.0)])


# ---------------------------------------------------------------------------------------
# respiration: PaO2 / FiO2, units, FiO2 lookback, ventilation
# ---------------------------------------------------------------------------------------

GAS_T = 10.0


def _resp(pao2, fio2_rows=(), vent_t=None, params=None, los=12):
    """Respiration score at the hour of a gas drawn at GAS_T (hour 10)."""
    ev = [(GAS_T, "po2", pao2)] + list(fio2_rows)
    if vent_t is not None:
        ev.append((vent_t, VENT, None, "Servo"))  # ventilator type: text, no number
    df, counts = run(los=los, ev=ev, params=params or ONE_HOUR)
    return at(df, int(GAS_T), "sofa_resp"), counts


@pytest.mark.parametrize(
    "pao2,vent,expected",
    [
        # FiO2 0.5: P/F = 2 * PaO2
        (200.0, False, 0),
        (199.5, False, 1),
        (150.0, False, 1),
        (149.5, False, 2),
        (100.0, False, 2),
        (99.5, False, 2),
        (49.5, False, 2),
        (20.0, False, 2),
        (200.0, True, 0),
        (199.5, True, 1),
        (149.5, True, 2),
        (100.0, True, 2),
        (99.5, True, 3),
        (50.0, True, 3),
        (49.5, True, 4),
    ],
)
def test_respiration_pf_thresholds_with_and_without_ventilation(pao2, vent, expected):
    got, _ = _resp(pao2, [(GAS_T - 1, "fio2", 50.0)], vent_t=GAS_T - 1 if vent else None)
    assert got == expected


@pytest.mark.parametrize(
    "concept,value",
    [("fio2", 50.0), ("fio2", 0.5), ("fio2_bloodgas", 50.0), ("fio2_bloodgas", 0.5)],
)
def test_fio2_as_percent_or_fraction_gives_the_same_score(concept, value):
    # PaO2 140 / 0.5 = 280 -> 2; the room-air default would give 667 -> 0
    got, counts = _resp(140.0, [(GAS_T - 0.5, concept, value)])
    assert got == 2
    assert counts.get("pao2_without_fio2_assumed_room_air", 0) == 0


@pytest.mark.parametrize(
    "fio2_t,expected",
    [
        (GAS_T, 2),  # same instant: used
        (GAS_T - 4.0, 2),  # exactly the 4 h lookback: used
        (GAS_T - 4.0 - 1 / 60, 0),  # one minute too early: room air assumed
        (GAS_T + 0.25, 2),  # charted 15 min after the draw: used (issue 14, defect 5)
        (GAS_T + 0.5, 2),  # exactly the 30 min lookahead: used
        (GAS_T + 0.5 + 1 / 60, 0),  # later: a FiO2 set in response to the gas, not used
    ],
)
def test_fio2_window_is_4_hours_before_to_30_minutes_after_the_gas(fio2_t, expected):
    # PaO2 250: FiO2 1.0 -> P/F 250 -> 2; room air 0.21 -> 1190 -> 0
    got, _ = _resp(250.0, [(fio2_t, "fio2", 100.0)])
    assert got == expected


def test_fio2_lookback_is_a_parameter():
    rows = [(GAS_T - 2.0, "fio2", 100.0)]
    assert _resp(250.0, rows)[0] == 2
    assert (
        _resp(250.0, rows, params=SofaParams(sofa_lookback_hours=1, fio2_lookback_hours=1.5))[0]
        == 0
    )


def test_most_recent_fio2_is_used_and_highest_wins_among_simultaneous():
    # most recent 0.5 (not the older 1.0): P/F 360 -> 1 (1.0 would give 180 -> 2)
    assert _resp(180.0, [(GAS_T - 3, "fio2", 100.0), (GAS_T - 1, "fio2", 0.5)])[0] == 1
    # simultaneous 0.5 and 1.0: the highest (1.0) -> P/F 250 -> 2 (0.5 would give 500 -> 0)
    assert _resp(250.0, [(GAS_T - 1, "fio2", 50.0), (GAS_T - 1, "fio2_bloodgas", 1.0)])[0] == 2


def test_nearest_fio2_wins_and_equal_distance_prefers_the_earlier():
    # 0.5 charted 3 h before, 1.0 charted 5 min after: the nearer (after) one is used
    # -> P/F 180 -> 2 (before: 360 -> 1; the old rule took only FiO2 charted before)
    assert _resp(180.0, [(GAS_T - 3, "fio2", 50.0), (GAS_T + 5 / 60, "fio2", 100.0)])[0] == 2
    # 0.5 at -15 min and 1.0 at +15 min: equal distance, the earlier (0.5) -> 360 -> 1
    assert _resp(180.0, [(GAS_T - 0.25, "fio2", 50.0), (GAS_T + 0.25, "fio2", 100.0)])[0] == 1
    # a FiO2 charted after the gas is used only within the stay's own rows
    assert _resp(250.0, [(GAS_T + 0.2, "fio2_bloodgas", 100.0)])[0] == 2


def test_implausible_fio2_is_ignored_and_room_air_assumed():
    # 15 % (< 21 %) is impossible: dropped, so the gas is scored on room air
    got, counts = _resp(80.0, [(GAS_T - 1, "fio2", 15.0)])
    assert counts["fio2_implausible"] == 1
    assert got == 1  # 80 / 0.21 = 381 -> 1


def test_gas_without_fio2_is_scored_on_room_air_as_a_lower_bound():
    got, counts = _resp(60.0)  # 60 / 0.21 = 286 -> 2
    assert got == 2 and counts["pao2_without_fio2_assumed_room_air"] == 1
    got, _ = _resp(20.0, vent_t=GAS_T - 1)  # 95 ventilated -> 4
    assert got == 4


@pytest.mark.parametrize(
    "vent_t,expected",
    [
        (GAS_T, 4),  # ventilator row at the gas instant
        (GAS_T - 8.0 + 1 / 60, 4),  # 7 h 59 min before: inside the 8 h hold
        (GAS_T - 8.0 - 1 / 60, 2),  # just outside the 8 h hold: not ventilated, capped at 2
        (GAS_T + 0.5, 2),  # ventilator charted after the gas does not count
    ],
)
def test_ventilation_hold_window(vent_t, expected):
    # PaO2 45 / FiO2 1.0 = 45
    got, _ = _resp(45.0, [(GAS_T - 1, "fio2", 100.0)], vent_t=vent_t, los=14)
    assert got == expected


def test_ventilation_hold_is_half_open_at_exactly_8h():
    got, _ = _resp(45.0, [(GAS_T - 1, "fio2", 100.0)], vent_t=GAS_T - 8.0, los=14)
    assert got == 2  # [t, t + 8 h) excludes t + 8 h: not ventilated -> capped at 2


@pytest.mark.parametrize("marker", concepts().marked_by("ventilation"))
def test_every_concept_marking_ventilation_counts(marker):
    # the ventilation marker and its `also` concepts (tidal volumes, PEEP, peak pressure)
    assert marker in S.VENTILATION
    ev = [(GAS_T, "po2", 45.0), (GAS_T - 1, "fio2", 100.0), (GAS_T - 1, marker, 5.0)]
    df, _ = run(los=12, ev=ev, params=ONE_HOUR)
    assert at(df, int(GAS_T), "sofa_resp") == 4  # 45 / 1.0, ventilated


def test_fio2_and_ventilation_of_another_stay_are_not_used():
    stays = make_stays([12, 12])
    ev = [
        (GAS_T - 1, "fio2", 100.0, None, 2),
        (GAS_T - 1, VENT, 1.0, "Servo", 2),
        (GAS_T, "po2", 45.0, None, 1),
        (GAS_T, "po2", 45.0, None, 2),
    ]
    df, _ = S.hourly_sofa(stays, make_events(ev), ONE_HOUR)
    assert at(df, 10, "sofa_resp", stay=2) == 4  # 45 / 1.0 ventilated
    assert at(df, 10, "sofa_resp", stay=1) == 2  # 45 / 0.21 = 214, not ventilated -> capped


# ---------------------------------------------------------------------------------------
# CNS: GCS total, component sums, intubated verbal
# ---------------------------------------------------------------------------------------


def _cns(rows, hour=1, los=3):
    df, counts = run(los=los, ev=rows, params=ONE_HOUR)
    return at(df, hour, "sofa_cns"), counts


@pytest.mark.parametrize(
    "gcs,expected", [(15, 0), (14, 1), (13, 1), (12, 2), (10, 2), (9, 3), (6, 3), (5, 4), (3, 4)]
)
def test_gcs_total_thresholds(gcs, expected):
    assert _cns([(1.5, "gcs_total", float(gcs))])[0] == expected


@pytest.mark.parametrize(
    "e,v,m,expected", [(4, 5, 6, 0), (4, 4, 6, 1), (3, 4, 5, 2), (2, 2, 5, 3), (1, 1, 3, 4)]
)
def test_gcs_components_charted_together_are_summed(e, v, m, expected):
    rows = [(1.5, EYE, float(e)), (1.5, VERBAL, float(v)), (1.5, MOTOR, float(m))]
    assert _cns(rows)[0] == expected


def test_gcs_component_charted_twice_at_one_instant_keeps_the_last_row():
    # row order is kept through the concept selection: the later eye (1) wins over the
    # earlier (4), whatever other concepts lie between them
    rows = [
        (1.5, EYE, 4.0),
        (1.5, "heart_rate", 80.0),
        (1.5, VERBAL, 5.0),
        (1.5, EYE, 1.0),
        (1.5, MOTOR, 6.0),
    ]
    assert _cns(rows)[0] == 2  # 1 + 5 + 6 = 12 (4 + 5 + 6 = 15 would score 0)


def test_gcs_components_at_different_instants_are_not_summed():
    got, counts = _cns([(1.2, EYE, 1.0), (1.5, VERBAL, 1.0), (1.7, MOTOR, 1.0)])
    assert got == 0
    assert counts["gcs_incomplete_component_sets"] == 3


@pytest.mark.parametrize(
    "verbal_item,text",
    [
        (VERBAL, "No Response-ETT"),
        (VERBAL, "  no response-ett "),
        (VERBAL, "1.0 ET/Trach"),
    ],
)
def test_intubated_verbal_makes_gcs_15(verbal_item, text):
    # without the rule: eye 1 + verbal 1 + motor 1 = 3 -> 4 points
    rows = [(1.5, EYE, 1.0), (1.5, verbal_item, 1.0, text), (1.5, MOTOR, 1.0)]
    assert _cns(rows)[0] == 0


def test_intubated_verbal_overrides_a_total_charted_at_the_same_instant_only():
    same = [(1.5, "gcs_total", 3.0), (1.5, VERBAL, 1.0, "1.0 ET/Trach")]
    assert _cns(same)[0] == 0
    # a low total at another instant of the same hour still counts (worst in the window)
    other = [(1.2, "gcs_total", 5.0), (1.5, VERBAL, 1.0, "1.0 ET/Trach")]
    assert _cns(other)[0] == 4


def test_non_intubated_no_verbal_response_is_scored():
    rows = [(1.5, EYE, 1.0), (1.5, VERBAL, 1.0, "No Response"), (1.5, MOTOR, 1.0)]
    assert _cns(rows)[0] == 4


def test_implausible_gcs_values_are_dropped_and_counted():
    got, counts = _cns([(1.5, "gcs_total", 2.0), (1.6, "gcs_total", 16.0)])
    assert got == 0 and counts["gcs_implausible"] == 2


# ---------------------------------------------------------------------------------------
# renal: urine output over the 24 h window
# ---------------------------------------------------------------------------------------


def test_urine_is_summed_over_the_trailing_24h_and_needs_a_full_window():
    # 300 mL at 0.5 h and 199 mL at 23.5 h; stay of 50 h
    df, _ = run(los=50, urine=[(0.5, 300.0), (23.5, 199.0)])
    renal = series(df, "sofa_renal")
    assert renal[:23] == [0] * 23  # hours 0..22: window not yet a full 24 h of stay
    assert renal[23] == 3  # [0, 24): 499 mL -> 3
    assert renal[24] == 4  # [1, 25): 199 mL -> 4
    assert renal[46] == 4  # [23, 47): still holds the 199 mL row
    assert renal[47:] == [0, 0, 0]  # [24, 48) has no urine rows: no data, not anuria


@pytest.mark.parametrize(
    "total,expected", [(500.0, 0), (499.0, 3), (200.0, 3), (199.0, 4), (0.0, 4)]
)
def test_urine_24h_total_boundaries(total, expected):
    # split over two rows inside [0, 24)
    df, _ = run(los=24, urine=[(2.0, total / 2), (20.0, total / 2)])
    assert at(df, 23, "sofa_renal") == expected


def test_stay_shorter_than_24h_never_scores_urine():
    df, _ = run(los=20, urine=[(1.0, 0.0), (10.0, 5.0)])
    assert len(df) == 20 and series(df, "sofa_renal") == [0] * 20


def test_urine_with_a_shorter_lookback_is_scaled_to_24h():
    p = SofaParams(sofa_lookback_hours=12)
    # 12-h window: 100 mL -> 200 mL / 24 h -> 3; 99 mL -> 198 -> 4; scored from hour 11
    df, _ = run(los=13, urine=[(1.0, 100.0)], params=p)
    assert at(df, 10, "sofa_renal") == 0 and at(df, 11, "sofa_renal") == 3
    df, _ = run(los=13, urine=[(1.0, 99.0)], params=p)
    assert at(df, 11, "sofa_renal") == 4


def test_renal_is_the_worst_of_creatinine_and_urine():
    df, _ = run(los=30, ev=[(5.0, "creatinine", 1.5)], urine=[(3.0, 150.0)])
    assert at(df, 22, "sofa_renal") == 1  # creatinine only (urine window not full)
    assert at(df, 23, "sofa_renal") == 4  # 150 mL / 24 h beats creatinine 1.5


def test_missing_urine_volume_is_dropped_and_counted_and_negative_is_irrigant_in():
    df, counts = run(los=24, urine=[(1.0, float("nan")), (2.0, 600.0)])
    assert counts["urine_rows_implausible"] == 1
    assert at(df, 23, "sofa_renal") == 0
    # a negative volume is GU irrigant instilled (the reader negates 227488): subtracted
    df, counts = run(los=24, urine=[(1.0, -150.0), (2.0, 600.0)])
    assert "urine_rows_implausible" not in counts
    assert at(df, 23, "sofa_renal") == 3  # 450 mL / 24 h


# ---------------------------------------------------------------------------------------
# the trailing window: worst value, edges, stays kept apart
# ---------------------------------------------------------------------------------------


def test_worst_value_within_the_24h_window():
    # platelets 140 (1) at 2.5 h, 30 (3) at 10.0 h, 120 (1) at 20.0 h; stay of 48 h
    df, _ = run(
        los=48,
        ev=[
            (2.5, "platelets", 140.0),
            (10.0, "platelets", 30.0),
            (20.0, "platelets", 120.0),
        ],
    )
    exp = [0] * 2 + [1] * 8 + [3] * 24 + [1] * 10 + [0] * 4
    # hour k sees data in [k - 23, k + 1): the 30 at 10.0 is seen by hours 10..33, the 120
    # at 20.0 by hours 20..43, the 140 at 2.5 by hours 2..25
    assert series(df, "sofa_coag") == exp


def test_event_on_an_hour_boundary_belongs_to_the_hour_it_starts():
    df, _ = run(los=40, ev=[(10.0, "bilirubin", 6.0)])
    liver = series(df, "sofa_liver")
    assert (liver[9], liver[10], liver[33], liver[34]) == (0, 3, 3, 0)
    df, _ = run(los=40, ev=[(10.0 - 1 / 3600, "bilirubin", 6.0)])  # 09:59:59
    liver = series(df, "sofa_liver")
    assert (liver[8], liver[9], liver[32], liver[33]) == (0, 3, 3, 0)


def test_lookback_length_is_a_parameter():
    df, _ = run(los=20, ev=[(10.5, "platelets", 40.0)], params=SofaParams(sofa_lookback_hours=6))
    assert series(df, "sofa_coag") == [0] * 10 + [3] * 6 + [0] * 4


def test_pre_icu_lab_counts_in_early_hours_and_pre_hours_are_scored():
    df, _ = run(los=30, ev=[(-3.5, "platelets", 40.0)], pre_hours=5)
    assert df["hour"].min() == -5 and len(df) == 35
    coag = df.set_index("hour")["sofa_coag"]
    assert coag[-5] == 0 and coag[-4] == 3 and coag[0] == 3 and coag[19] == 3
    assert coag[20] == 0  # window [-3, 21) no longer holds the -3.5 h row


def test_windows_do_not_leak_between_stays():
    stays = make_stays([5, 30], ids=[7, 3])  # unsorted ids
    ev = make_events([(4.5, "platelets", 10.0, None, 7)])
    df, _ = S.hourly_sofa(stays, ev, SofaParams())
    assert series(df, "sofa_coag", stay=7) == [0] * 4 + [4]
    assert series(df, "sofa_coag", stay=3) == [0] * 30
    assert list(df.columns) == S.SOFA_COLUMNS + ["observed"]
    assert df["hour"].dtype == np.int32 and df["sofa"].dtype == np.int8


# ---------------------------------------------------------------------------------------
# missing components: score 0, the others still count (the reference zeroed the whole SOFA)
# ---------------------------------------------------------------------------------------


def test_missing_components_score_zero_and_do_not_zero_the_total():
    # only labs: no vasopressor, no arterial gas, no urine, no vitals in any window.
    # The reference SQL zeroed such hours entirely; here coag + liver are still summed.
    df, _ = run(los=10, ev=[(2.5, "platelets", 40.0), (3.5, "bilirubin", 2.5)])
    row = df[df["hour"] == 5].iloc[0]
    assert [int(row[f"sofa_{c}"]) for c in S.COMPONENTS] == [0, 3, 2, 0, 0, 0]
    assert int(row["sofa"]) == 5
    assert series(df, "sofa") == [0, 0, 3, 5, 5, 5, 5, 5, 5, 5]


def test_stay_without_any_data_has_all_zero_hours():
    df, counts = run(los=6.5)
    assert len(df) == 7 and series(df, "hour") == list(range(7))
    assert (df[["sofa"] + [f"sofa_{c}" for c in S.COMPONENTS]] == 0).all().all()


def test_total_is_the_sum_of_all_six_components():
    chart = [
        (5.2, "mbp", 65.0),  # cardio 1
        (5.3, "gcs_total", 11.0),  # cns 2
        (4.9, "fio2", 50.0),
        (4.0, VENT, 1.0, "Servo"),
    ]
    lab = [
        (5.5, "po2", 80.0),  # 80 / 0.5 = 160 ventilated -> resp 3
        (5.1, "platelets", 90.0),  # coag 2
        (5.1, "bilirubin", 1.5),  # liver 1
        (5.1, "creatinine", 3.6),
    ]  # renal 3
    df, _ = run(los=8, ev=chart + lab)
    row = df[df["hour"] == 5].iloc[0]
    assert [int(row[f"sofa_{c}"]) for c in S.COMPONENTS] == [3, 2, 1, 1, 2, 3]
    assert int(row["sofa"]) == 12
    assert at(df, 4, "sofa") == 0


# ---------------------------------------------------------------------------------------
# bad rows
# ---------------------------------------------------------------------------------------


def test_event_of_unknown_stay_raises_naming_table_and_column():
    with pytest.raises(ValueError, match=r"events: column 'stay_id'.*not in stays"):
        run(los=3, ev=[(1.0, "platelets", 40.0, None, 99)])
    df, counts = run(
        los=3,
        ev=[(1.0, "platelets", 40.0, None, 99)],
        params=SofaParams(on_bad_rows="skip-and-count"),
    )
    assert counts["events_rows_unknown_stay"] == 1 and series(df, "sofa") == [0, 0, 0]


def test_concepts_sofa_does_not_read_are_ignored():
    # learner variables and weight: other consumers' events, not SOFA inputs (not checked)
    ev = [(1.0, "heart_rate", 80.0, None, 99), (1.0, "weight", 70.0), (1.0, "platelets", 40.0)]
    df, counts = run(los=3, ev=ev)
    assert series(df, "sofa_coag") == [0, 3, 3]
    assert not any(k.startswith("events_rows") for k in counts)


def test_stay_without_outtime_is_left_out_not_an_error():
    stays = make_stays([10, 10])
    stays.loc[1, "outtime"] = pd.NaT
    ev = make_events([(1.0, "platelets", 40.0, None, 1), (1.0, "platelets", 40.0, None, 2)])
    df, counts = S.hourly_sofa(stays, ev, SofaParams())
    assert counts["stays_without_times"] == 1
    assert set(df["stay_id"]) == {1}
    assert at(df, 1, "sofa_coag") == 3


def test_implausible_lab_values_are_dropped_and_counted():
    df, counts = run(
        los=3,
        ev=[
            (1.0, "platelets", np.nan),
            (1.0, "platelets", -5.0),
            (1.0, "platelets", 5000.0),
        ],
    )
    assert counts["platelets_implausible"] == 3
    assert series(df, "sofa_coag") == [0, 0, 0]


@pytest.mark.parametrize("lookback", [1, 2, 3, 4, 5, 8, 17, 24, 25, 32])
def test_window_max_equals_sliding_window_reduction(lookback):
    rng = np.random.default_rng(lookback)
    for n in (0, 1, lookback - 1, lookback, lookback + 1, 257):
        a = rng.integers(0, 5, max(n, 0)).astype(np.int8)
        ref = np.zeros_like(a)
        if len(a) >= lookback:
            ref[lookback - 1 :] = np.lib.stride_tricks.sliding_window_view(a, lookback).max(axis=1)
        np.testing.assert_array_equal(S._window_max(a, lookback), ref)
