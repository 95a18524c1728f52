"""The paper grid so far: BT on 1- and 3-group ideal-point populations, 3 seeds, shots 0 and 10.

Run: plural grid experiments/paper.py --out results/paper   (families join as they land)
"""


def get_config():
    return {
        "datasets": {
            "ideal1": {"simulate": {"n_groups": 1, "group_sizes": "(1.0,)", "seed": 1}},
            "ideal3": {"simulate": {"n_groups": 3, "group_sizes": "(0.6,0.3,0.1)", "seed": 0}},
        },
        "methods": {"bt": {"model": "bt", "set": ["model.hidden=(64,)", "train.steps=1000"]}},
        "seeds": [0, 1, 2],
        "shots": [0, 10],
    }
