"""Evaluation: ranking metrics with bootstrap intervals, the PhysioNet 2019 utility, plots, reports."""

from sepsis.evaluation.metrics import (
    auprc,
    auroc,
    bootstrap_ci,
    bootstrap_cis,
    check_predictions,
    metrics_table,
    paired_bootstrap_diff,
    paired_differences,
    summarise_over_seeds,
)
from sepsis.evaluation.report import cohort_table, format_summary_table, write_report
from sepsis.evaluation.utility import (
    UtilityParams,
    challenge_labels,
    prediction_utility,
    utility_curve,
    utility_score,
)

__all__ = [
    "UtilityParams",
    "auprc",
    "auroc",
    "bootstrap_ci",
    "bootstrap_cis",
    "challenge_labels",
    "check_predictions",
    "cohort_table",
    "format_summary_table",
    "metrics_table",
    "paired_bootstrap_diff",
    "paired_differences",
    "prediction_utility",
    "summarise_over_seeds",
    "utility_curve",
    "utility_score",
    "write_report",
]
