"""Where a new user's LoRe weights start, and how hard they are pulled back there: the validation run
that chose LoRe's `adapt_init` ("seen": empirical Bayes over the seen users) and `adapt_l2` (1.0), on
the 3-group ideal-point population, rank 8 and 3, unseen users at 10 shots, 2 seeds.

    plural grid experiments/lore_start.py --out results/lore_start     # about 6 min on 2 CPU cores
"""

from common import IDEAL3


def get_config():
    def lore(**sets):
        return {"model": "fewshot", "set": {"model.variant": "lore", **sets}}

    return {
        "datasets": {"ideal3": {"simulate": {**IDEAL3, "test_pairs": 60}}},
        "methods": {
            "population-start": lore(**{"model.adapt_init": "population", "model.adapt_l2": 0.01}),
            "seen-start": lore(**{"model.adapt_init": "seen", "model.adapt_l2": 0.01}),
            "seen-start-l2": lore(**{"model.adapt_init": "seen", "model.adapt_l2": 1.0}),
            "rank3-seen-start": lore(**{"model.rank": 3, "model.adapt_init": "seen", "model.adapt_l2": 0.01}),
            "rank3-seen-start-l2": lore(**{"model.rank": 3, "model.adapt_init": "seen", "model.adapt_l2": 1.0}),
        },
        "seeds": [0, 1],
        "shots": [10],
    }
