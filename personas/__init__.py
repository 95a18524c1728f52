"""Synthetic populations with known ground truth (who the simulated users are)."""

from personas.ideal_point import IdealPointConfig, Population, simulate_ideal_point

__all__ = ["IdealPointConfig", "Population", "simulate_ideal_point"]
