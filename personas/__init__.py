"""Synthetic populations with known ground truth (who the simulated users are)."""

from personas.ideal_point import IdealPointConfig, Population, simulate_ideal_point
from personas.statements import StatementsConfig, StatementsPopulation, simulate_statements

# `plural simulate --population NAME` and grid specs' {"simulate": {"population": NAME, ...}}: (config class, simulator)
POPULATIONS = {"ideal-point": (IdealPointConfig, simulate_ideal_point), "statements": (StatementsConfig, simulate_statements)}

__all__ = ["POPULATIONS", "IdealPointConfig", "Population", "simulate_ideal_point", "StatementsConfig", "StatementsPopulation",
           "simulate_statements"]
