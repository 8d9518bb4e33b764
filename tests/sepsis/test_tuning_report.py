"""Report tables of the tuning artifacts: search trials and DTW-KNN per-variable AUPRC."""

import numpy as np
import pandas as pd

from sepsis.evaluation import tuning

UNIT = {"learner": "dtw_knn_tuned", "regime": "train_once", "horizon": 0}


def test_variable_table_flags_sparse_and_chance_variables():
    rows = []
    for seed in (0, 1):
        for var, ap, flat in (("hr", 0.5, 0.0), ("lactate", 0.105, 0.9), ("ph", 0.1, 0.1)):
            rows.append(
                {
                    **UNIT,
                    "seed": seed,
                    "variable": var,
                    "auprc": ap,
                    "prevalence": 0.1,
                    "flat_fraction": flat,
                    "combine_weight": 1 / 3,
                    "k": 5 + seed,
                    "radius": np.nan if seed else 2,
                    "weights": "uniform",
                }
            )
    t = tuning.variable_table(pd.DataFrame(rows), "dtw_knn_tuned").set_index("variable")
    assert list(t.index) == ["hr", "lactate", "ph"]
    assert t.loc["hr", "lift"] == 5.0 and t.loc["hr", "note"] == ""
    assert t.loc["lactate", "note"] == "too sparse to help"
    assert t.loc["ph", "note"] == "no better than chance"
    assert t.loc["hr", "k"] == "5/6" and t.loc["hr", "radius"] == "2/full"
    assert t.loc["hr", "units"] == 2


def test_trials_table_keeps_pruned_trials_and_formats_parameters():
    trials = pd.DataFrame(
        {
            **{k: [v, v] for k, v in UNIT.items()},
            "seed": [0, 0],
            "trial": [1, 0],
            "state": ["pruned", "complete"],
            "val_auprc": [None, 0.4],
            "last_val_auprc": [0.2, 0.41],
            "mc_samples_predict": [None, 30.0],
            "n_mc_samples": [8, 10],
            "lr": [0.00158, 0.005],
            "seconds": [12.4, 80.6],
        }
    )
    t = tuning.trials_table(trials)
    assert t["trial"].tolist() == ["0", "1"] and t["state"].tolist() == ["complete", "pruned"]
    assert t["mc_samples_predict"].tolist() == ["30", "8"]  # None = the training count
    assert t["lr"].tolist() == ["0.005", "0.00158"] and t["seconds"].tolist() == ["81", "12"]
