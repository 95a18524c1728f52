"""Where a new user's offset starts in the user-embedding BT baseline (P-RLHF, `bt --set model.condition=user`):
at 0, the generic embedding e_0 alone (the paper's, `model.adapt_init=generic`), or at the seen users' offsets
averaged in proportion to the likelihood of the user's shots under each (`seen`: the empirical-Bayes start of
PAL and LoRe), each then fitted on the shots with the pull `adapt_l2` towards its start. On the defaults
suite (experiments/defaults.py), selected across the suite on validation data (seen users' held-out pairs
and validation-unseen users at 10 shots), as every default.

The start changes adaptation only: both cells train the same network (deterministic per seed), so any
difference is in how unseen users are adapted.

    plural grid experiments/bt_user_start.py --out results/bt_user_start     # about 6 min on 2 CPU cores
"""

from common import SUITE


def get_config():
    return {
        "datasets": SUITE,
        "methods": {"bt-user": {"model": "bt", "set": {"model.condition": "user"},
                                "grid": {"model.adapt_init": ["generic", "seen"]}}},
        "select": "across_datasets",
        "seeds": [0],
        "shots": [0, 10],
    }
