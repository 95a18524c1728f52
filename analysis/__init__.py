"""Subgroup analysis of scored comparisons: accuracies with bootstrap CIs, worst-off group, gap closed."""

from analysis.clustering import adjusted_rand_index, kmeans, match_components
from analysis.metrics import (accuracy_table, bootstrap_ci, expected_accuracy, gap_closed,
                              group_report)

__all__ = ["adjusted_rand_index", "kmeans", "match_components", "accuracy_table", "bootstrap_ci", "expected_accuracy", "gap_closed", "group_report"]
