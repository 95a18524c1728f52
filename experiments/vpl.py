"""VPL vs BT: accuracy vs number of context pairs (1, 2, 4, 8, 16) for unseen users, and active vs
random query selection, on a 3-group ideal-point population (no prompt: one fixed context) and on a
persona-statement population (real text: 4 groups x 6 persona dimensions, as experiments/statements.py).

    plural grid experiments/vpl.py --out results/vpl      # results.parquet + active.parquet
    plural figs --results results/vpl --out figs/vpl
"""

from common import IDEAL3, STATEMENTS4X6


def get_config():
    return {
        "datasets": {
            "ideal3": {"simulate": {**IDEAL3, "test_pairs": 80}},
            "statements4x6": {"simulate": STATEMENTS4X6},
        },
        "methods": {
            "bt": {"model": "bt", "set": {"model.hidden": (64,), "train.steps": 1000}},
            "vpl": {"model": "vpl", "set": []},
        },
        "seeds": [0, 1, 2],
        "shots": [1, 2, 4, 8, 16],
        "active": {"budget": 8, "pool_size": 20, "n_answers": 16, "random_repeats": 3},
    }
