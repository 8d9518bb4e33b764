#!/bin/bash
# issue 15, second search: the L2 (weight decay) range corrected; only mgp_tcn_tuned retrains
cd /work/main
export SEPSIS_SHARED_DATA=/work/shared/data
date
/usr/bin/time -v .venv/bin/sepsis run --config configs/physionet2019-tuned.yaml \
  "train.train_once=[mgp_tcn_tuned, dtw_knn_tuned, gbm]" mgp_tcn_tuned.epochs=10
echo "EXIT $?"
date
