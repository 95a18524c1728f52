"""Subgroup analysis of scored comparisons: accuracies with bootstrap CIs, worst-off group, gap closed."""

from analysis.metrics import (accuracy_table, bootstrap_ci, expected_accuracy, gap_closed,
                              group_report)

__all__ = ["accuracy_table", "bootstrap_ci", "expected_accuracy", "gap_closed", "group_report"]
