"""VPL vs BT: accuracy vs number of context pairs (1, 2, 4, 8, 16) for unseen users, and active vs
random query selection, on a 3-group ideal-point population (no prompt: one fixed context).

    plural grid experiments/vpl.py --out results/vpl      # results.parquet + active.parquet
    plural figs --results results/vpl --out figs/vpl

The persona-statement population joins this spec once `personas.statements` lands (issue 5).
"""


def get_config():
    return {
        "datasets": {
            "ideal3": {"simulate": {"n_groups": 3, "group_sizes": "(0.6,0.3,0.1)", "n_prompts": 0,
                                    "test_pairs": 80, "seed": 0}},
        },
        "methods": {
            "bt": {"model": "bt", "set": ["model.hidden=(64,)", "train.steps=1000"]},
            "vpl": {"model": "vpl", "set": []},
        },
        "seeds": [0, 1, 2],
        "shots": [1, 2, 4, 8, 16],
        "active": {"budget": 8, "pool_size": 40, "n_answers": 16, "random_repeats": 3},
    }
