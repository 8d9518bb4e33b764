#!/bin/bash
# issue 15, split seeds 1 and 2 with the same settings as run 2 (seed 0's units are current
# and are not retrained); code from the worktree /work/wt-train so edits in /work/main
# cannot reach the running job
cd /work/wt-train
export SEPSIS_SHARED_DATA=/work/shared/data
export PYTHONPATH=/work/wt-train
date
/usr/bin/time -v /work/main/.venv/bin/sepsis run --config configs/physionet2019-tuned.yaml \
  "train.split_seeds=[0, 1, 2]" \
  "train.train_once=[mgp_tcn_tuned, dtw_knn_tuned, gbm]" mgp_tcn_tuned.epochs=10
echo "EXIT $?"
date
