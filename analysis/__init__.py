"""Subgroup analysis of scored comparisons: accuracies with bootstrap CIs, worst-off group, gap closed,
calibration, seed summaries and paired method differences; and policies over candidate responses judged
by each group (expected reward, win rate: `analysis.policy`)."""

from plural.calibration import (calibration_metrics, per_group_calibration, reliability_curve,
                                uncertainty_error_correlation)
from analysis.clustering import adjusted_rand_index, kmeans, match_components
from analysis.metrics import (accuracy_table, bootstrap_ci, expected_accuracy, gap_closed,
                              group_report)
from analysis.policy import policies, policy_report
from analysis.summary import group_gap_closed, paired_difference, seed_summary

__all__ = ["adjusted_rand_index", "kmeans", "match_components", "accuracy_table", "bootstrap_ci", "expected_accuracy", "gap_closed", "group_report",
           "calibration_metrics", "per_group_calibration", "reliability_curve", "uncertainty_error_correlation",
           "group_gap_closed", "paired_difference", "seed_summary", "policies", "policy_report"]
