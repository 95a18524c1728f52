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



def check_population(population: str, cfg) -> None:
    """Validate a population config without simulating it (ValueError naming the field), as its simulator
    would before drawing anything: grid specs check every dataset before the first cell trains."""
    from personas import communities, hidden_context, ideal_point, statements

    checks = {"ideal-point": ideal_point._check, "statements": statements._check,
              "hidden-context": hidden_context._check, "communities": communities._check}
    checks[population](cfg)


__all__ = ["check_population", "ATTRIBUTES", "CommunityConfig", "CommunityPopulation", "simulate_communities", "POPULATIONS", "HiddenContextConfig", "HiddenContextPopulation", "simulate_hidden_context", "IdealPointConfig", "Population", "simulate_ideal_point", "StatementsConfig", "StatementsPopulation",
           "simulate_statements"]
