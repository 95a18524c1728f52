"""Synthetic populations with known ground truth (who the simulated users are)."""

from personas.ideal_point import IdealPointConfig, Population, simulate_ideal_point
from personas.statements import StatementsConfig, StatementsPopulation, simulate_statements

__all__ = ["IdealPointConfig", "Population", "simulate_ideal_point", "StatementsConfig", "StatementsPopulation",
           "simulate_statements"]
