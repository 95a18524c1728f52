"""The user-embedding BT baseline (P-RLHF, `bt --set model.condition=user`) given the same tuning budget
as the families it is compared with: six points of its own settings on the defaults suite
(experiments/defaults.py), one selected across the suite on validation data (`select: across_datasets`).
The selected point (user_dim 32) is BT's default for `condition=user`.

    plural grid experiments/bt_user.py --out results/bt_user     # about 6 min on 2 CPU cores
"""

from common import SUITE

# The points were swept while the default was user_dim 8, so each names every setting it changes from that.
POINTS = [{"model.user_dim": 8}, {"model.user_dim": 8, "model.adapt_l2": 1.0},
          {"model.user_dim": 8, "model.generic_prob": 0.5}, {"model.user_dim": 8, "model.user_l2": 0.1},
          {"model.user_dim": 32},
          {"model.user_dim": 8, "model.generic_prob": 0.5, "model.user_l2": 0.1, "model.adapt_l2": 1.0}]


def get_config():
    return {
        "datasets": SUITE,
        "methods": {"bt-user": {"model": "bt", "set": {"model.condition": "user"}, "points": POINTS}},
        "select": "across_datasets",
        "seeds": [0],
        "shots": [0, 10],
    }
