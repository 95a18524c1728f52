"""A tiny grid for tests and CI: BT at two learning rates, two seeds at once, 0 and 5 shots."""


def get_config():
    return {
        "datasets": {
            "ideal3": {"simulate": {"dim": 8, "n_users": 12, "n_unseen": 6, "train_pairs": 20, "test_pairs": 12,
                                    "n_prompts": 8, "seed": 0}},
        },
        "methods": {"bt": {"model": "bt", "set": {"model.hidden": (16,), "train.steps": 100,
                                                  "batch.batch_size": 64}}},
        "grid": {"train.lr": [1e-3, 3e-3]},
        "seeds": [0, 1],
        "shots": [0, 5],
    }
