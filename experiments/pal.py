"""PAL-A and PAL-B vs BT: accuracy vs the number of prototypes K (1..8) and vs shots for unseen users
(1, 2, 5, 10, 20, 50), seen and unseen users, on a 3-group ideal-point population (no prompt: one fixed
context; 60 seen users with 60 training pairs each, 30 unseen users with 80 pairs of which `shots` adapt
the mixture and the rest are scored).

    plural grid experiments/pal.py --out results/pal       # results.parquet (one row per cell/seed/shots/split/group)
    plural figs --results results/pal --out figs/pal       # accuracy_vs_prototypes + accuracy_vs_shots
"""

from common import IDEAL3

PROTOTYPES = [1, 2, 3, 4, 6, 8]


def get_config():
    return {
        "datasets": {
            "ideal3": {"simulate": {**IDEAL3, "test_pairs": 80}},
        },
        "methods": {
            "bt": {"model": "bt", "set": {"model.hidden": (64,), "train.steps": 1000}},
            "pal-a": {"model": "pal-a", "set": [], "grid": {"model.n_prototypes": PROTOTYPES}},
            "pal-b": {"model": "pal-b", "set": [], "grid": {"model.n_prototypes": PROTOTYPES}},
        },
        "seeds": [0, 1, 2],
        "shots": [1, 2, 5, 10, 20, 50],
    }
