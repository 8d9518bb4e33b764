"""Unit tests of data_prep.concepts.infection: the antibiotic conventions a reader applies
(`antibiotic_filter`: antibiotics.txt matching, routes, excluded names), antibiotic and
culture events (order date vs administration, charted vs date-only), the SI pairing windows
at and just outside each edge, si_time "earlier" vs "culture", the first qualifying pair
among several, and the per-stay choice of SI (PIPELINE.md section 1).

Times are hours after T0 (2100-01-01 00:00). The golden timelines in test_sepsis3.py check
the same rules end to end at whole-hour/day offsets; these tests call the functions directly
and probe the exact edges (72 h / 96 h / 24 h inclusive, one minute more excluded).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep.concepts import infection as I
from data_prep.concepts.dictionary import concepts
from data_prep.concepts.infection import InfectionParams

T0 = pd.Timestamp("2100-01-01")
MIN = 1 / 60  # one minute, in hours
CULTURE = InfectionParams(si_time="culture")
# the MIMIC-III PRESCRIPTIONS conventions of the dictionary (the reader applies them)
RULES = concepts()["antibiotic"].mappings("mimic3")[0].extra


def _t(h):
    return None if h is None else T0 + pd.Timedelta(hours=h)


def _admission_events(rows) -> pd.DataFrame:
    """rows: (time, concept, text, time_source, hadm_id) -> io.ADMISSION_EVENTS frame."""
    return pd.DataFrame(
        {
            "patient_id": np.ones(len(rows), np.int64),
            "hadm_id": pd.array([r[4] for r in rows], dtype="Int64"),
            "time": pd.Series([r[0] for r in rows], dtype="datetime64[us]"),
            "concept": pd.array([r[1] for r in rows], dtype="string"),
            "text": pd.array([r[2] for r in rows], dtype="string"),
            "time_source": pd.array([r[3] for r in rows], dtype="string"),
        }
    )


def abx_rows(rows) -> list[tuple]:
    """rows: (hours or None, drug[, time_source][, hadm_id]); default an order date, hadm 1."""
    rows = [tuple(r) + (None,) * max(4 - len(r), 0) for r in rows]
    return [
        (_t(r[0]), "antibiotic", r[1], r[2] or I.ABX_ORDER_DATE, 1 if r[3] is None else r[3])
        for r in rows
    ]


def culture_rows(rows) -> list[tuple]:
    """rows: (charttime hours or None, day offset or None, specimen[, hadm_id]): charted when
    a time is given, else date only (time = 00:00 of the day), else no time."""
    out = []
    for r in rows:
        r = tuple(r) + (None,) * max(4 - len(r), 0)
        if r[0] is not None:
            t, src = _t(r[0]), I.CULTURE_CHARTED
        elif r[1] is not None:
            t, src = T0 + pd.Timedelta(days=r[1]), I.CULTURE_DATE
        else:
            t, src = None, None
        out.append((t, "culture", r[2], src, 1 if r[3] is None else r[3]))
    return out


def make_events(abx=(), cultures=()) -> pd.DataFrame:
    return _admission_events(abx_rows(abx) + culture_rows(cultures))


def reader_antibiotics(rows) -> list[tuple]:
    """Prescription rows (hours, drug[, route]) as a MIMIC-III reader keeps them: only the
    systemic antibiotics (`antibiotic_filter` with the dictionary's rules)."""
    rows = [tuple(r) + (None,) * max(3 - len(r), 0) for r in rows]
    keep, _ = I.antibiotic_filter(
        pd.Series([r[1] for r in rows], dtype="string"),
        pd.Series(["IV" if r[2] is None else r[2] for r in rows], dtype="string"),
        RULES,
    )
    return [r[:2] for r, k in zip(rows, keep, strict=True) if k]


def keeps(drug, route="IV") -> tuple[bool, dict]:
    keep, counts = I.antibiotic_filter(
        pd.Series([drug], dtype="string"), pd.Series([route], dtype="string"), RULES
    )
    return bool(keep[0]), counts


def make_stays(rows=((1, 1, -100.0, 400.0),)) -> pd.DataFrame:
    """rows: (stay_id, hadm_id, intime hours, outtime hours); default: one long stay."""
    return pd.DataFrame(
        {
            "stay_id": np.array([r[0] for r in rows], np.int64),
            "hadm_id": pd.array([r[1] for r in rows], dtype="Int64"),
            "intime": pd.Series([_t(r[2]) for r in rows], dtype="datetime64[us]"),
            "outtime": pd.Series([_t(r[3]) for r in rows], dtype="datetime64[us]"),
        }
    )


def si(abx, micro, params=None, stays=None):
    """suspected_infection on hand-written antibiotic and culture rows -> (frame, counts)."""
    return I.suspected_infection(
        make_events(abx, micro),
        make_stays() if stays is None else make_stays(stays),
        params or InfectionParams(),
    )


def si_hour(abx, micro, params=None):
    """SI time of stay 1 in hours after T0, or None."""
    out, _ = si(abx, micro, params)
    if out.empty:
        return None
    assert len(out) == 1
    return (out["si_time"].iloc[0] - T0) / pd.Timedelta(hours=1)


# ---------------------------------------------------------------------------------------
# antibiotics: the reader's conventions (antibiotic_filter): name list, case, route, names
# ---------------------------------------------------------------------------------------


def test_antibiotic_names_are_lower_case_without_comments():
    names = I.antibiotic_names()
    assert len(names) > 100
    assert all(n == n.lower().strip() and n and not n.startswith("#") for n in names)
    for n in ("vancomycin", "ceftriaxone", "piperacillin", "meropenem", "cipro", "zosyn"):
        assert n in names


@pytest.mark.parametrize(
    "drug",
    [
        "Vancomycin",
        "VANCOMYCIN",
        "vancomycin",
        "Vancomycin HCl",
        "Piperacillin-Tazobactam",
        "CeftriaXONE",
        "Zosyn",
        "Ciprofloxacin IV",
        "Sulfamethoxazole-Trimethoprim",
    ],
)
def test_antibiotic_matching_is_a_case_insensitive_substring(drug):
    kept, counts = keeps(drug)
    assert kept and counts["kept"] == 1
    ev, counts = I.antibiotic_events(make_events([(5.0, drug)]))
    assert ev["drug"].tolist() == [drug]  # the original name is reported
    assert counts["antibiotic_rows_kept"] == 1


@pytest.mark.parametrize(
    "drug",
    [
        "Heparin",
        "Acetaminophen",
        "Norepinephrine",
        "Insulin",
        "Fluconazole",
        "Amphotericin B",
        "Sodium Chloride 0.9%",
        None,
    ],
)
def test_non_antibiotic_drugs_are_ignored(drug):
    kept, counts = keeps(drug)
    assert not kept
    assert counts["not_antibiotic"] == 1


@pytest.mark.parametrize(
    "drug_type,kept",
    [("MAIN", True), ("ADDITIVE", True), ("main", True), (" Additive ", True), ("BASE", False)],
)
def test_only_main_and_additive_drug_types(drug_type, kept, tmp_path):
    """PRESCRIPTIONS drug types are the MIMIC-III reader's convention (the dictionary's
    `antibiotic.sources.mimic3[0].drug_types`): only MAIN / ADDITIVE rows are antibiotics."""
    from test_mimic3 import _copy

    from data_prep.sources.mimic3 import ReaderParams, extract

    raw = _copy(tmp_path)
    with open(raw / "PRESCRIPTIONS.csv", "a") as fh:
        fh.write(f"901,1,101,300001,2150-01-02,2150-01-03,{drug_type},Cefazolin,Cefazolin,IV\n")
    extract(raw, tmp_path / "out", ReaderParams(), progress=False)
    ae = pd.read_parquet(tmp_path / "out" / "admission_events.parquet")
    got = ae[(ae["concept"] == "antibiotic") & (ae["text"] == "Cefazolin")]
    assert len(got) == int(kept)


@pytest.mark.parametrize(
    "route",
    [
        "OU",
        "OS",
        "OD",
        "AU",
        "AS",
        "AD",
        "TP",
        "tp",
        " ou ",
        "LEFT EAR",
        "BOTH EYES",
        "Eye drops",
        "ear",
    ],
)
def test_topical_eye_and_ear_routes_are_dropped(route):
    kept, counts = keeps("Gentamicin", route)
    assert not kept
    assert counts["dropped_route"] == 1


@pytest.mark.parametrize("route", ["IV", "PO", "IV DRIP", "NG", "IM", "PO/NG", "IVPB", None])
def test_systemic_routes_are_kept(route):
    assert keeps("Gentamicin", route)[0]


@pytest.mark.parametrize(
    "drug",
    [
        "Erythromycin Ophth Oint",
        "Mupirocin Cream 2%",
        "Clindamycin Gel 1%",
        "Penicillin G Desensitization",
    ],
)
def test_excluded_name_forms_are_dropped(drug):
    kept, counts = keeps(drug, "IV")
    assert not kept
    assert counts["dropped_name"] == 1


def test_antibiotic_filter_rules_are_the_dictionary_s():
    assert RULES["exclude_routes"] == ["OU", "OS", "OD", "AU", "AS", "AD", "TP"]
    assert RULES["exclude_route_substrings"] == ["ear", "eye"]
    assert RULES["exclude_name_substrings"] == ["cream", "desensitization", "ophth oint", "gel"]
    assert RULES["drug_types"] == ["MAIN", "ADDITIVE"]  # the reader's (not antibiotic_filter's)
    keep, counts = I.antibiotic_filter(
        pd.Series(["Vancomycin", "Heparin", "Gentamicin", "Clindamycin Gel"]),
        pd.Series(["IV", "IV", "OU", "TP"]),
        {},
    )
    assert keep.tolist() == [True, False, True, True]  # no rules: names only
    assert counts == {
        "rows": 4,
        "not_antibiotic": 1,
        "dropped_route": 0,
        "dropped_name": 0,
        "kept": 3,
    }


def test_antibiotic_time_is_the_event_time_keeping_a_finer_time():
    ev, _ = I.antibiotic_events(make_events([(24.0, "Vancomycin"), (30.5, "Cefepime")]))
    assert ev["time"].tolist() == [T0 + pd.Timedelta(days=1), T0 + pd.Timedelta(hours=30.5)]
    assert ev["hadm_id"].dtype == np.int64
    assert ev["source"].tolist() == [I.ABX_ORDER_DATE] * 2


def test_antibiotic_rows_without_hadm_or_time_are_dropped_and_counted():
    ev, counts = I.antibiotic_events(make_events([(None, "Vancomycin"), (5.0, "Vancomycin")]))
    e = make_events([(5.0, "Vancomycin")])
    e["hadm_id"] = pd.array([None], dtype="Int64")
    ev2, counts2 = I.antibiotic_events(e)
    assert len(ev) == 1 and counts["antibiotic_rows_no_time"] == 1
    assert ev2.empty and counts2["antibiotic_rows_no_hadm"] == 1


def test_missing_admission_events_column_is_named():
    with pytest.raises(ValueError, match=r"admission_events: missing column.*'time_source'"):
        I.antibiotic_events(make_events([(5.0, "Vancomycin")]).drop(columns="time_source"))


@pytest.mark.parametrize("concept,source", [("antibiotic", "charted"), ("culture", "order date")])
def test_unknown_time_source_is_named(concept, source):
    e = _admission_events([(_t(5.0), concept, "X", source, 1)])
    with pytest.raises(ValueError, match=rf"admission_events: column 'time_source'.*{source!r}"):
        I.suspected_infection(e, make_stays(), InfectionParams())


def test_other_concepts_are_ignored():
    e = make_events([(20.0, "Vancomycin")], [(10.0, None, "BLOOD")])
    dx = _admission_events([(None, "sepsis_diagnosis", "99591", None, 1)])
    out, _ = I.suspected_infection(
        pd.concat([dx, e], ignore_index=True), make_stays(), InfectionParams()
    )
    assert out["si_time"].tolist() == [_t(10.0)]


# ---------------------------------------------------------------------------------------
# cultures
# ---------------------------------------------------------------------------------------


def test_culture_time_is_charted_else_the_day_at_midnight():
    m = make_events([], [(30.5, None, "BLOOD CULTURE"), (None, 2, "SPUTUM"), (None, None, "URINE")])
    m.loc[1, "time"] = T0 + pd.Timedelta(days=2, hours=13)  # a stray time of a date: dropped
    ev, counts = I.culture_events(m)
    assert ev["time"].tolist() == [_t(30.5), T0 + pd.Timedelta(days=2)]
    assert ev["date_only"].tolist() == [False, True]
    assert ev["specimen"].tolist() == ["BLOOD CULTURE", "SPUTUM"]
    assert counts["culture_rows_no_time"] == 1 and counts["culture_rows_date_only"] == 1
    assert counts["culture_rows_kept"] == 2


def test_culture_without_hadm_is_dropped_and_missing_column_named():
    m = make_events([], [(30.5, None, "BLOOD CULTURE")])
    m["hadm_id"] = pd.array([None], dtype="Int64")
    ev, counts = I.culture_events(m)
    assert ev.empty and counts["culture_rows_no_hadm"] == 1
    with pytest.raises(ValueError, match=r"admission_events: missing column.*'text'"):
        I.culture_events(m.drop(columns="text"))


# ---------------------------------------------------------------------------------------
# pairing windows: exact edges inclusive, one minute more excluded
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gap,paired",
    [(0.0, True), (1.0, True), (71.0, True), (72.0, True), (72.0 + MIN, False), (100.0, False)],
)
def test_culture_then_antibiotic_within_72h(gap, paired):
    got = si_hour([(10.0 + gap, "Vancomycin")], [(10.0, None, "BLOOD CULTURE")])
    assert got == (10.0 if paired else None)


@pytest.mark.parametrize(
    "gap,paired", [(MIN, True), (23.0, True), (24.0, True), (24.0 + MIN, False), (40.0, False)]
)
def test_antibiotic_then_culture_within_24h(gap, paired):
    out, _ = si([(10.0, "Ceftriaxone")], [(10.0 + gap, None, "URINE")])
    if not paired:
        assert out.empty
        return
    r = out.iloc[0]
    assert r["si_time"] == _t(10.0)  # the earlier event of the pair
    assert r["si_order"] == "abx_first"
    assert (r["antibiotic_time"], r["culture_time"]) == (_t(10.0), _t(10.0 + gap))


@pytest.mark.parametrize(
    "abx_h,paired",
    [(24.0, True), (24.0 + 72.0 + MIN, True), (24.0 + 96.0, True), (24.0 + 96.0 + MIN, False)],
)
def test_date_only_culture_then_antibiotic_within_96h(abx_h, paired):
    # culture with chartdate day 1 (= [24 h, 48 h]) only: point time 12:00 (36 h); the SI
    # time is the earlier of that and the antibiotic
    got = si_hour([(abx_h, "Meropenem")], [(None, 1, "SPUTUM")])
    assert got == (min(abx_h, 36.0) if paired else None)


def test_timed_culture_keeps_the_72h_window_where_a_date_only_one_would_pair():
    assert si_hour([(24.0 + 80.0, "Meropenem")], [(24.0, None, "SPUTUM")]) is None
    assert si_hour([(24.0 + 80.0, "Meropenem")], [(None, 1, "SPUTUM")]) == 36.0


@pytest.mark.parametrize("abx_h,paired", [(0.0, True), (5.0, True), (-MIN, False)])
def test_antibiotic_then_date_only_culture_pairs_when_the_culture_day_overlaps(abx_h, paired):
    # date-only culture on day 1 = [24 h, 48 h]: an antibiotic at 0 h is exactly 24 h before
    # the day starts
    out, _ = si(
        [(abx_h, "Vancomycin")], [(None, 1, "BLOOD CULTURE")], stays=[(1, 1, -100.0, 400.0)]
    )
    assert (not out.empty) == paired
    if paired:
        assert out["si_time"].iloc[0] == _t(abx_h)
        assert out["culture_time"].iloc[0] == T0 + pd.Timedelta(days=1, hours=12)
        assert out["culture_time_source"].iloc[0] == I.CULTURE_DATE_ONLY


def test_date_only_culture_point_time_is_noon_not_midnight():
    """Issue 14 defect 1: an evening culture dated day 0 must not open the SOFA window at
    00:00; with an antibiotic ordered the next day the SI time is 12:00 of day 0."""
    out, _ = si([(24.0, "Vancomycin")], [(None, 0, "BLOOD CULTURE")])
    r = out.iloc[0]
    assert r["si_time"] == _t(12.0) and r["culture_time"] == _t(12.0)
    assert r["antibiotic_time_source"] == I.ABX_ORDER_DATE
    out, _ = si([(24.0, "Vancomycin")], [(None, 0, "BLOOD CULTURE")], CULTURE)
    assert out["si_time"].iloc[0] == _t(12.0)  # culture-time SI: the culture's point time


def test_antibiotic_later_the_same_day_pairs_a_date_only_culture_both_ways():
    # culture day 1, antibiotic at 30 h (06:00 of day 1): the culture may have been before or
    # after it; the earlier point time is the antibiotic's
    assert si_hour([(30.0, "Vancomycin")], [(None, 1, "URINE")]) == 30.0
    out, _ = si([(30.0, "Vancomycin")], [(None, 1, "URINE")], CULTURE)
    assert out["si_time"].iloc[0] == _t(36.0)


def test_equal_times_pair_and_report_culture_first():
    out, _ = si([(12.0, "Vancomycin")], [(12.0, None, "BLOOD CULTURE")])
    assert out["si_time"].iloc[0] == _t(12.0)
    assert out["si_order"].iloc[0] == "culture_first"


def test_window_lengths_are_parameters():
    p = InfectionParams(culture_then_abx_hours=10.0, abx_then_culture_hours=2.0)
    assert si_hour([(21.0, "Vancomycin")], [(10.0, None, "BLOOD")], p) is None
    assert si_hour([(20.0, "Vancomycin")], [(10.0, None, "BLOOD")], p) == 10.0
    assert si_hour([(10.0, "Vancomycin")], [(12.0 + MIN, None, "BLOOD")], p) is None
    assert si_hour([(10.0, "Vancomycin")], [(12.0, None, "BLOOD")], p) == 10.0


# ---------------------------------------------------------------------------------------
# si_time "earlier" (Seymour 2016) vs "culture" (reference code)
# ---------------------------------------------------------------------------------------


def test_si_time_earlier_vs_culture_for_antibiotic_first_pair():
    pres, micro = [(10.0, "Vancomycin")], [(30.0, None, "BLOOD CULTURE")]
    assert si_hour(pres, micro) == 10.0
    out, _ = si(pres, micro, CULTURE)
    r = out.iloc[0]
    assert r["si_time"] == _t(30.0) and r["si_order"] == "abx_first"
    assert (r["antibiotic_time"], r["culture_time"]) == (_t(10.0), _t(30.0))


def test_si_time_earlier_and_culture_agree_for_culture_first_pair():
    pres, micro = [(50.0, "Vancomycin")], [(30.0, None, "BLOOD CULTURE")]
    assert si_hour(pres, micro) == si_hour(pres, micro, CULTURE) == 30.0


@pytest.mark.parametrize("gap,paired", [(24.0, True), (24.0 + MIN, False)])
def test_si_time_culture_keeps_the_24h_antibiotic_first_window(gap, paired):
    got = si_hour([(10.0, "Vancomycin")], [(10.0 + gap, None, "BLOOD")], CULTURE)
    assert got == (10.0 + gap if paired else None)


# ---------------------------------------------------------------------------------------
# several antibiotics / cultures: the first qualifying pair
# ---------------------------------------------------------------------------------------


def test_first_qualifying_pair_skips_unpaired_earlier_events():
    # abx 0 h: next culture 30 h later (> 24 h); culture 30 h: next abx 110 h (80 h > 72 h);
    # culture 50 h: abx 110 h is 60 h later -> the first SI is 50 h
    out, counts = si(
        [(0.0, "Cefazolin"), (110.0, "Zosyn")],
        [(30.0, None, "URINE"), (50.0, None, "BLOOD CULTURE")],
    )
    r = out.iloc[0]
    assert r["si_time"] == _t(50.0) and r["si_order"] == "culture_first"
    assert (r["antibiotic"], r["antibiotic_time"]) == ("Zosyn", _t(110.0))
    assert (r["culture_specimen"], r["culture_time"]) == ("BLOOD CULTURE", _t(50.0))
    assert counts["si_events"] == 1


def test_earliest_of_several_qualifying_pairs_wins():
    # abx 5 h -> culture 20 h (abx first, SI 5); culture 20 h -> abx 30 h (culture first, SI 20)
    out, counts = si([(5.0, "Vancomycin"), (30.0, "Cefepime")], [(20.0, None, "BLOOD")])
    r = out.iloc[0]
    assert r["si_time"] == _t(5.0) and r["si_order"] == "abx_first"
    assert (r["antibiotic"], r["culture_time"]) == ("Vancomycin", _t(20.0))
    assert counts["si_events"] == 2


def test_culture_first_pair_reports_the_nearest_following_antibiotic():
    out, _ = si([(40.0, "Meropenem"), (15.0, "Vancomycin")], [(10.0, None, "BLOOD")])
    r = out.iloc[0]
    assert r["si_time"] == _t(10.0)
    assert (r["antibiotic"], r["antibiotic_time"]) == ("Vancomycin", _t(15.0))


def test_non_antibiotics_and_topical_routes_do_not_form_pairs():
    pres = [
        (11.0, "Heparin"),
        (12.0, "Acetaminophen"),
        (13.0, "Gentamicin", "OU"),
        (14.0, "Erythromycin Ophth Oint", "IV"),
        (60.0, "Vancomycin"),
    ]
    out, _ = si(reader_antibiotics(pres), [(10.0, None, "BLOOD CULTURE")])
    r = out.iloc[0]
    assert r["si_time"] == _t(10.0)
    assert (r["antibiotic"], r["antibiotic_time"]) == ("Vancomycin", _t(60.0))
    assert si_hour(reader_antibiotics(pres[:4]), [(10.0, None, "BLOOD CULTURE")]) is None


def test_duplicate_culture_rows_make_one_event_with_the_first_specimen():
    micro = [(10.0, None, "URINE"), (10.0, None, "BLOOD CULTURE"), (10.0, None, "URINE")]
    cand = I.si_candidates(
        I.antibiotic_events(make_events([(20.0, "Vancomycin"), (20.0, "Ampicillin")]))[0],
        I.culture_events(make_events([], micro))[0],
        InfectionParams(),
    )
    assert len(cand) == 1
    assert cand["culture_specimen"].iloc[0] == "BLOOD CULTURE"
    assert cand["antibiotic"].iloc[0] == "Ampicillin"  # first name of equal times, sorted


def test_pairs_stay_within_one_admission():
    out, counts = si(
        [(20.0, "Vancomycin", I.ABX_ORDER_DATE, 2)],
        [(10.0, None, "BLOOD", 1)],
        stays=[(1, 1, 0.0, 100.0), (2, 2, 0.0, 100.0)],
    )
    assert out.empty and counts["si_events"] == 0


def test_no_antibiotics_or_no_cultures_gives_no_si():
    assert si([], [(10.0, None, "BLOOD")])[0].empty
    assert si([(10.0, "Vancomycin")], [])[0].empty
    out, _ = si([], [])
    assert list(out.columns) == I.SI_COLUMNS


# ---------------------------------------------------------------------------------------
# per ICU stay: first SI whose window [SI - 48 h, SI + 24 h] overlaps the stay
# ---------------------------------------------------------------------------------------


def test_stay_takes_the_first_si_whose_window_overlaps_it():
    # SI events at 10 h and 150 h; stay [100, 200]: the 10 h window [-38, 34] misses it
    pres = [(15.0, "Vancomycin"), (155.0, "Vancomycin")]
    micro = [(10.0, None, "BLOOD"), (150.0, None, "BLOOD")]
    out, counts = si(pres, micro, stays=[(1, 1, 100.0, 200.0)])
    assert out["si_time"].tolist() == [_t(150.0)]
    out, _ = si(pres, micro, stays=[(1, 1, 0.0, 200.0)])
    assert out["si_time"].tolist() == [_t(10.0)]


@pytest.mark.parametrize(
    "si_h,overlaps",
    [(76.0, True), (76.0 - MIN, False), (200.0 + 48.0, True), (200.0 + 48.0 + MIN, False)],
)
def test_si_window_overlap_edges(si_h, overlaps):
    # stay [100, 200]: SI + 24 >= 100 and SI - 48 <= 200, both inclusive
    out, counts = si(
        [(si_h + 1.0, "Vancomycin")], [(si_h, None, "BLOOD")], stays=[(1, 1, 100.0, 200.0)]
    )
    assert (not out.empty) == overlaps
    assert counts["stays_si_only_away_from_stay"] == int(not overlaps)


def test_each_stay_of_an_admission_gets_its_own_si_and_stays_without_si_are_absent():
    pres = [(15.0, "Vancomycin"), (305.0, "Cefepime")]
    micro = [(10.0, None, "BLOOD"), (300.0, None, "SPUTUM")]
    stays = [(1, 1, 0.0, 50.0), (2, 1, 290.0, 350.0), (3, 1, 600.0, 700.0), (4, None, 0.0, 50.0)]
    out, counts = si(pres, micro, stays=stays)
    assert out["stay_id"].tolist() == [1, 2]
    assert out["si_time"].tolist() == [_t(10.0), _t(300.0)]
    assert out["culture_specimen"].tolist() == ["BLOOD", "SPUTUM"]
    assert counts["stays_no_hadm"] == 1 and counts["stays_with_si"] == 2
    assert out["stay_id"].dtype == np.int64
