"""Defaults of the mixture families (MiCRo, DPL, MaxMin), chosen as every other family's were: a few
points each on the defaults suite (experiments/common.py SUITE), one point per family selected across
the suite on validation data (`select: across_datasets`), 1 seed.

    plural grid experiments/mixtures.py --out results/mixtures      # about 10 min on 2 CPU cores
"""

from common import SUITE


def get_config():
    return {
        "datasets": SUITE,
        "methods": {
            "micro": {"model": "micro", "points": [{"model.n_heads": 4}, {"model.n_heads": 8},
                                                   {"model.n_heads": 4, "model.router_entropy": 0.1}]},
            "dpl": {"model": "dpl", "points": [{"model.variant": "mean_var"}, {"model.variant": "categorical"}]},
            "maxmin": {"model": "maxmin", "points": [{"model.n_heads": 2}, {"model.n_heads": 4}, {"model.n_heads": 6},
                                                     {"model.n_heads": 4, "model.assignment": "soft"}]},
        },
        "select": "across_datasets",
        "seeds": [0],
        "shots": [0, 10],
    }
