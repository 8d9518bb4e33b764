"""Tests for the PhysioNet 2019 utility score: hand-worked hours and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepsis.evaluation.utility import (
    UtilityParams,
    best_predictions,
    challenge_labels,
    prediction_utility,
    utility_score,
)


def _loop_utility(labels, predictions, p: UtilityParams | None = None):
    """Hour-by-hour transcription of the challenge rules (independent of the vectorised code)."""
    p = p or UtilityParams()
    septic = any(labels)
    t_s = (list(labels).index(1) - p.dt_optimal) if septic else float("inf")
    total = 0.0
    for t, pr in enumerate(predictions):
        d = t - t_s
        if septic and d > p.dt_late:
            continue
        if not septic:
            total += p.u_fp if pr else p.u_tn
        elif pr:
            if d <= p.dt_optimal:
                total += max((d - p.dt_early) * p.max_u_tp / (p.dt_optimal - p.dt_early), p.u_fp)
            else:
                total += p.max_u_tp * (p.dt_late - d) / (p.dt_late - p.dt_optimal)
        elif d > p.dt_optimal:
            total += p.min_u_fn * (d - p.dt_optimal) / (p.dt_late - p.dt_optimal)
    return total


def test_challenge_docstring_example():
    # the example printed in the challenge's evaluate_sepsis_score.py
    assert prediction_utility([0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]) == pytest.approx(
        3.388888888888889
    )


def test_hand_worked_hours():
    # labels start at row 10 -> t_sepsis = 16; one alarm per case below
    lab = challenge_labels(30, onset_index=16)
    assert lab[:10].sum() == 0 and lab[10:].all()

    def one(t):
        p = np.zeros(30, int)
        p[t] = 1
        return prediction_utility(lab, p)

    inaction = prediction_utility(lab, np.zeros(30, int))
    # missed onset: hours d = -5..3 (rows 11..19) cost -2/9 * (d + 6) each
    assert inaction == pytest.approx(sum(-2 / 9 * (d + 6) for d in range(-5, 4)))
    assert one(10) - inaction == pytest.approx(1.0)  # d = -6: full reward, no FN penalty at d<=-6
    assert one(7) - inaction == pytest.approx(0.5)  # d = -9: halfway on the 0 -> 1 ramp
    assert one(2) - inaction == pytest.approx(-0.05)  # d = -14: too early, costs u_fp
    assert one(4) - inaction == pytest.approx(0.0)  # d = -12: ramp starts at 0 (> u_fp)
    # d = 0 (row 16): TP 1 - 6/9 replaces the FN penalty -2/9 * 6
    assert one(16) - inaction == pytest.approx((1 - 6 / 9) + 12 / 9)
    assert one(25) - inaction == pytest.approx(0.0)  # d = 9 > dt_late: ignored
    # non-septic stay: each alarm costs 0.05
    assert prediction_utility(np.zeros(8, int), [1, 0, 1, 1, 0, 0, 0, 0]) == pytest.approx(-0.15)


def test_normalisation_inaction_zero_optimal_one():
    labs = [
        challenge_labels(40, 20),
        challenge_labels(15, None),
        challenge_labels(30, 3),
        challenge_labels(50, 49),
    ]
    zeros = [np.zeros(len(lab), int) for lab in labs]
    best = [best_predictions(lab) for lab in labs]
    assert utility_score(labs, zeros) == pytest.approx(0.0)
    assert utility_score(labs, best) == pytest.approx(1.0)
    always = [np.ones(len(lab), int) for lab in labs]
    u_all = utility_score(labs, always)
    assert u_all < 1.0
    # threshold binarises scores
    scores = [b * 0.9 + 0.05 for b in best]
    assert utility_score(labs, scores, threshold=0.5) == pytest.approx(1.0)


def test_no_septic_stay_is_nan_and_bad_input_raises():
    assert np.isnan(utility_score([np.zeros(5, int)], [np.ones(5, int)]))
    with pytest.raises(ValueError, match="row 2"):
        utility_score([np.array([0, 0, 2])], [np.zeros(3, int)])
    with pytest.raises(ValueError, match="3 labels but 2"):
        utility_score([np.zeros(3, int)], [np.zeros(2, int)])
    with pytest.raises(ValueError, match="dt_early"):
        prediction_utility([0, 1], [0, 1], UtilityParams(dt_early=-3, dt_optimal=-6))


def test_challenge_labels_clip_and_late_onset():
    assert challenge_labels(10, 3).tolist() == [1] * 10  # onset - 6 < 0: clipped to row 0
    assert challenge_labels(10, 12).sum() == 0  # onset after the record
    assert challenge_labels(10, 8).tolist() == [0, 0] + [1] * 8


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.one_of(st.none(), st.integers(0, 70)), st.data())
def test_vectorised_equals_hour_by_hour_rules(n, onset, data):
    lab = challenge_labels(n, onset)
    pred = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    assert prediction_utility(lab, pred) == pytest.approx(
        _loop_utility(lab.tolist(), pred.tolist()), abs=1e-12
    )


def test_utility_curve_equals_thresholded_utility_score():
    from sepsis.evaluation.utility import utility_curve

    rng = np.random.default_rng(0)
    labs = [
        challenge_labels(int(n), o)
        for n, o in zip(rng.integers(5, 60, 30), rng.integers(0, 80, 30), strict=True)
    ]
    labs[0] = challenge_labels(40, 20)  # at least one septic stay
    scores = [rng.random(len(lab)) + 0.5 * lab for lab in labs]
    ts = np.array([-1.0, 0.2, 0.5, 0.7, 0.9, 1.2, 2.0])
    curve = utility_curve(labs, scores, ts)
    want = [utility_score(labs, scores, threshold=t) for t in ts]
    np.testing.assert_allclose(curve, want, atol=1e-12)
    assert curve[-1] == pytest.approx(0.0)  # no alarm above every score = inaction


@pytest.mark.realdata
def test_label_convention_on_physionet_2019_files():
    """On real challenge files, SepsisLabel == challenge_labels(n, first positive row + 6)."""
    import io
    import os
    import zipfile
    from pathlib import Path

    import pandas as pd

    root = Path(
        os.environ.get(
            "SEPSIS_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
        )
    )
    zpath = root / "physionet2019" / "training_setA.zip"
    if not zpath.exists():
        pytest.skip(f"PhysioNet 2019 training set A not found at {zpath} (set SEPSIS_SHARED_DATA)")
    labs = []
    with zipfile.ZipFile(zpath) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".psv"))[:1000]
        for n in names:
            lab = pd.read_csv(io.BytesIO(z.read(n)), sep="|", usecols=["SepsisLabel"])[
                "SepsisLabel"
            ].to_numpy()
            labs.append(lab)
    septic = [lab for lab in labs if lab.any()]
    assert len(septic) > 20
    for lab in septic:
        np.testing.assert_array_equal(challenge_labels(len(lab), int(np.argmax(lab)) + 6), lab)
    assert utility_score(labs, [best_predictions(lab) for lab in labs]) == pytest.approx(1.0)
    assert utility_score(labs, [np.zeros_like(lab) for lab in labs]) == pytest.approx(0.0)
    assert (
        utility_score(labs, [np.ones_like(lab) for lab in labs]) < 0
    )  # alarming every hour is worse than silence
