"""The BT variants' network width on the defaults suite: plain, group-told and user-embedding BT with hidden
(64,) (the default) or (256, 256), x train.lr 1e-3 / 1e-2, 1 seed. Selected across the suite, as the
defaults are (`selected.parquet`; results.parquet's `suite_score` column: should the wider network be the
default?); each cell's own `selection_score` shows where, per dataset, the wider network wins on validation. The suite's first sweep (experiments/defaults.py) gave plain BT both
widths and chose (64,) on the suite average, but swept the group-told and user variants over the
learning rate alone; on the Gaussian populations the wider network learns the reward term every user
shares (-||y||^2), which (64,) does not (docs/defaults.md, experiments/suite_pairs.py).

    plural grid experiments/bt_width.py --out results/bt_width     # about 15 min on 2 CPU cores
"""

from common import LR, SUITE

WIDTHS = [(64,), (256, 256)]


def get_config():
    grid = {"model.hidden": WIDTHS, "train.lr": LR}
    return {
        "datasets": SUITE,
        "methods": {"bt": {"model": "bt", "grid": grid},
                    "bt-group": {"model": "bt", "set": {"model.condition": "group"}, "grid": grid},
                    "bt-user": {"model": "bt", "set": {"model.condition": "user"}, "grid": grid}},
        "baseline": "bt",
        "select": "across_datasets",
        "seeds": [0],
        "shots": [0, 10],
    }
