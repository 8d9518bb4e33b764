#!/bin/bash
# issue 15: PhysioNet set A, split seed 0, the tuned learners + gbm (the paper's mgp_tcn /
# dtw_knn seed-0 units are in runs/physionet2019, same cohort and splits)
cd /work/main
export SEPSIS_SHARED_DATA=/work/shared/data
date
/usr/bin/time -v .venv/bin/sepsis run --config configs/physionet2019-tuned.yaml \
  "train.train_once=[mgp_tcn_tuned, dtw_knn_tuned, gbm]" \
  mgp_tcn_search.budget_minutes=35 mgp_tcn_tuned.epochs=12
echo "EXIT $?"
date
