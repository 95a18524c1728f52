"""VPL's KL weight on the defaults suite: `model.beta` (the weight of KL(q(z | C) || N(0, I)) at the top of each
annealing cycle) 1e-3 / 1e-2 (the default) / 1e-1 / 1, VPL at its other defaults, 1 seed, one point selected
across the suite on validation data (`select: across_datasets`, as every default is; results.parquet's
`suite_score`), each cell's own `selection_score` per dataset. `beta` is traced, so the four points of a
dataset train as replicas of one program.

The question comes from the real-text tables: on HH, VPL's unseen users adapted from 10 shots score below the
user-blind linear probe, as if a posterior fitted from a few noisy shots moved z further than the evidence
warrants; a larger KL weight keeps posteriors nearer the prior.

    plural grid experiments/vpl_beta.py --out results/vpl_beta     # about 8 min on 2 CPU cores
"""

from common import SUITE


def get_config():
    return {
        "datasets": SUITE,
        "methods": {"vpl": {"model": "vpl", "grid": {"model.beta": [1e-3, 1e-2, 1e-1, 1.0]}}},
        "select": "across_datasets",
        "seeds": [0],
        "shots": [0, 10],
    }
