"""Seeded random hyperparameter search for MGP-TCN by validation AUPRC."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from data_prep.views import IrregularView
from models.mgp_tcn.classifier import MGPTCNClassifier

logger = logging.getLogger(__name__)

# Paper ranges (PIPELINE.md 4): levels 9, kernel 3-5, hidden 15-81, batch 10-40,
# L2 0.01-100, dropout ~0; smaller levels added because short windows do not need a
# receptive field of hundreds of hours.
DEFAULT_SPACE: dict[str, list[Any]] = {
    "levels": [2, 4, 6, 9],
    "kernel_size": [3, 4, 5],
    "hidden": [15, 32, 50, 81],
    "batch_size": [10, 20, 32, 40],
    "l2": [0.01, 0.1, 1.0, 10.0],
    "dropout": [0.0, 0.1],
    "lr": [0.001, 0.005],
}


def search_hyperparameters(
    X: IrregularView,
    y,
    X_val: IrregularView,
    y_val,
    n_trials: int = 10,
    seed: int = 0,
    space: dict[str, list[Any]] | None = None,
    base_params: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Random search: `n_trials` draws from `space` (lists of choices), scored by the
    validation AUPRC of the fitted model on (X_val, y_val). Returns the best trial's
    parameters (merged with `base_params`) and one row per trial."""
    if n_trials < 1:
        raise ValueError(f"n_trials: expected >= 1, got {n_trials}")
    space = DEFAULT_SPACE if space is None else space
    base = dict(base_params or {})
    rng = np.random.default_rng(seed)
    rows, draws = [], []
    for trial in range(n_trials):
        draw = {k: v[int(rng.integers(len(v)))] for k, v in space.items()}
        draws.append(draw)
        params = {**base, **draw, "seed": seed + trial, "progress": progress}
        t0 = time.perf_counter()
        model = MGPTCNClassifier(**params).fit(X, y, X_val, y_val)
        score = float(average_precision_score(y_val, model.predict_proba(X_val)[:, 1]))
        rows.append(
            {
                "trial": trial,
                **draw,
                "seed": params["seed"],
                "val_auprc": score,
                "best_epoch": model.best_epoch_,
                "seconds": time.perf_counter() - t0,
            }
        )
        logger.info("trial %d/%d %s: val AUPRC %.4f", trial + 1, n_trials, draw, score)
    trials = pd.DataFrame(rows)
    i = int(trials["val_auprc"].to_numpy().argmax())
    # the draw itself, not the frame's row: a row of mixed columns turns integers into floats
    best_params = {
        **base,
        **{k: _py(v) for k, v in draws[i].items()},
        "seed": int(trials["seed"].iloc[i]),
    }
    return best_params, trials


def _py(v):
    """numpy scalar -> python scalar (so params stay JSON-serialisable)."""
    return v.item() if hasattr(v, "item") else v
