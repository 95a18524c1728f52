"""Synthetic populations with known ground truth (who the simulated users are).

Every population has `train`, `val` and `test` tables (`write(dir)` writes them as train / val / test
.parquet beside truth.json) and `truth(split="test")`, the oracle's and the best single reward's expected
accuracies on one of them."""

from personas.communities import ATTRIBUTES, CommunityConfig, CommunityPopulation, simulate_communities
from personas.hidden_context import HiddenContextConfig, HiddenContextPopulation, simulate_hidden_context
from personas.ideal_point import IdealPointConfig, Population, simulate_ideal_point
from personas.statements import StatementsConfig, StatementsPopulation, simulate_statements

# `plural simulate --population NAME` and grid specs' {"simulate": {"population": NAME, ...}}: (config class, simulator)
POPULATIONS = {"ideal-point": (IdealPointConfig, simulate_ideal_point), "statements": (StatementsConfig, simulate_statements),
               "hidden-context": (HiddenContextConfig, simulate_hidden_context),
               "communities": (CommunityConfig, simulate_communities)}

__all__ = ["ATTRIBUTES", "CommunityConfig", "CommunityPopulation", "simulate_communities", "POPULATIONS", "HiddenContextConfig", "HiddenContextPopulation", "simulate_hidden_context", "IdealPointConfig", "Population", "simulate_ideal_point", "StatementsConfig", "StatementsPopulation",
           "simulate_statements"]
