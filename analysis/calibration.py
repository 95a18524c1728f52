"""Calibration metrics of scored rows. They live in `plural.calibration` (`plural evaluate` reports them,
and the core library imports nothing from `analysis`); re-exported here beside the other analyses."""

from plural.calibration import (calibration_metrics, confidence_and_hit, per_group_calibration, reliability_curve,
                                spearman, uncertainty_error_correlation)

__all__ = ["calibration_metrics", "confidence_and_hit", "per_group_calibration", "reliability_curve", "spearman",
           "uncertainty_error_correlation"]
