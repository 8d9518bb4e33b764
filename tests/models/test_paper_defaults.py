"""The paper-faithful learners still score as they did before issue 15 (tuned variants,
search, schedules, learned DTW combination were added beside them, not in their place).

`golden/paper_defaults_d2301d2.json` holds the validation scores of the paper-default
MGPTCNClassifier (2 epochs, 2 MC samples, seed 0) and DTWKNNClassifier on fixed synthetic
views, written by the code of commit d2301d2 (before issue 15) with the same calls as below.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from data_prep.views import random_grid_view, random_irregular_view
from models.dtw_knn import DTWKNNClassifier
from models.mgp_tcn import MGPTCNClassifier

GOLDEN = json.loads((Path(__file__).parent / "golden" / "paper_defaults_d2301d2.json").read_text())


def test_paper_default_mgp_tcn_scores_as_before_issue_15():
    torch.manual_seed(0)
    X, y = random_irregular_view(n=48, signal=1.5, seed=3)
    Xv, yv = random_irregular_view(n=40, signal=1.5, seed=4)
    m = MGPTCNClassifier(epochs=2, n_mc_samples=2, progress=False, seed=0).fit(X, y, Xv, yv)
    assert yv.tolist() == GOLDEN["y_mgp"]
    np.testing.assert_allclose(m.predict_proba(Xv)[:, 1], GOLDEN["mgp_tcn"], atol=1e-5)


def test_paper_default_dtw_knn_scores_as_before_issue_15():
    G, gy = random_grid_view(n=120, n_variables=3, max_len=12, seed=3, signal=1.0)
    Gv, gyv = random_grid_view(n=40, n_variables=3, max_len=12, seed=5, signal=1.0)
    d = DTWKNNClassifier().fit(G, gy)
    assert gyv.tolist() == GOLDEN["y_dtw"]
    np.testing.assert_allclose(d.predict_proba(Gv)[:, 1], GOLDEN["dtw_knn"], atol=1e-12)
