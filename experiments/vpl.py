"""VPL vs BT: accuracy vs number of context pairs (1, 2, 4, 8, 16) for unseen users, and active vs
random query selection, on a 3-group ideal-point population (no prompt: one fixed context) and on a
persona-statement population (real text: 4 groups x 6 persona dimensions, as experiments/statements.py).

    plural grid experiments/vpl.py --out results/vpl      # results.parquet + active.parquet
    plural figs --results results/vpl --out figs/vpl
"""


def get_config():
    return {
        "datasets": {
            "ideal3": {"simulate": {"n_groups": 3, "group_sizes": "(0.6,0.3,0.1)", "n_prompts": 0,
                                    "test_pairs": 80, "seed": 0}},
            "statements4x6": {"simulate": {"population": "statements", "n_groups": 4, "n_dims": 6,
                                           "n_users": 60, "train_pairs": 60, "test_pairs": 30,
                                           "label_noise": 0.1, "seed": 0}},
        },
        "methods": {
            "bt": {"model": "bt", "set": ["model.hidden=(64,)", "train.steps=1000"]},
            "vpl": {"model": "vpl", "set": []},
        },
        "seeds": [0, 1, 2],
        "shots": [1, 2, 4, 8, 16],
        "active": {"budget": 8, "pool_size": 20, "n_answers": 16, "random_repeats": 3},
    }
