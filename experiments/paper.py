"""The headline comparison: every family and the fair BT baselines on the two reference populations,
each method's hyper-parameters selected on validation data, test numbers with CIs across 3 training seeds.

- ideal3: the 3-group ideal-point population (shares 0.6 / 0.3 / 0.1, one fixed context, D = 32);
- statements4x6: persona statements (real text, MiniLM), 4 groups x 6 dimensions, 60 training pairs per
  seen user, 10% label noise.

Unseen users are scored on the same rows (positions >= 10) at every shot count. Outputs: selected.parquet,
summary.parquet (seed CIs), paired.parquet (each method minus BT on the same rows), reliability.parquet.

    plural grid experiments/paper.py --out results/paper
    plural figs --results results/paper --out figs/paper
"""

LR = [1e-3, 1e-2]


def get_config():
    return {
        "datasets": {
            "ideal3": {"simulate": {"n_groups": 3, "group_sizes": "(0.6,0.3,0.1)", "n_prompts": 0, "seed": 0}},
            "statements4x6": {"simulate": {"population": "statements", "n_groups": 4, "n_dims": 6, "n_users": 60,
                                           "train_pairs": 60, "test_pairs": 30, "label_noise": 0.1, "seed": 0}},
        },
        "methods": {
            "bt": {"model": "bt", "grid": {"train.lr": LR}},
            "bt-linear": {"model": "bt", "set": ["model.hidden=()"], "grid": {"train.lr": [3e-3, 3e-2]}},
            "bt-group": {"model": "bt", "set": ["model.condition=group"], "grid": {"train.lr": LR}},
            "bt-user": {"model": "bt", "set": ["model.condition=user"], "grid": {"train.lr": LR}},
            "vpl": {"model": "vpl", "grid": {"train.lr": [1e-3, 3e-3]}},
            "pal-a": {"model": "pal-a", "grid": {"model.n_prototypes": [3, 4, 8]}},
            "pal-b": {"model": "pal-b", "grid": {"model.n_prototypes": [3, 4, 8]}},
        },
        "baseline": "bt",
        "seeds": [0, 1, 2],
        "shots": [0, 1, 2, 5, 10],
    }
