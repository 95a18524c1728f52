"""PrefPalette (`palette`): its width and regularisation chosen on validation data, beside the
content-only per-community baseline (BT told the community, which does not read the attribute columns)
given the same budget. Two simulated community populations (personas.communities): 8 communities x 4000
training pairs (seed 0) and 16 communities x 1000 (seed 1), 19 attributes. One point per family across
both datasets (`select: across_datasets`, validation accuracy), 1 seed.

    plural grid experiments/palette.py --out results/palette      # about 15 min on 2 CPU cores

Profile recovery (mean Spearman of `plural profile` with truth.json's importances) is read from the
selected runs afterwards; it does not take part in the selection.
"""

from common import COMMUNITIES


def get_config():
    budget = {"train.lr": [1e-3, 3e-3], "train.weight_decay": [0.1, 1.0]}
    # palette's learning rate: 3e-3, the better rate at hidden 16 on both datasets' validation data in a first
    # sweep (2 x 2 x 2 of hidden x lr x weight decay, before the signed read-out got its rate and its factor A);
    # here its width and weight decay
    return {
        "datasets": COMMUNITIES,
        "methods": {
            "palette": {"model": "palette", "set": {"train.lr": 3e-3},
                        "grid": {"model.hidden": [16, 64], "train.weight_decay": [0.1, 1.0]}},
            "bt-group": {"model": "bt", "set": {"model.condition": "group", "train.steps": 3000}, "grid": budget},
        },
        "select": "across_datasets",
        "seeds": [0],
        "shots": [0],
    }
