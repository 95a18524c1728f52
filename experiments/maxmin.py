"""MaxMin's number of heads chosen per dataset by validation likelihood (the log-loss of sigma(margin) on
the seen users' val pairs and the val-unseen users at 0 and 10 shots), with 1 or 4 EM restarts in one
program, on the defaults suite plus a 2-group 10:1 population. Is the chosen K the number of groups?

    plural grid experiments/maxmin.py --out results/maxmin      # about 25 min on 2 CPU cores
"""

from common import IDEAL3, SUITE

TEN_TO_ONE = {"simulate": {**IDEAL3, "n_groups": 2, "group_sizes": (10, 1), "n_users": 66}}


def get_config():
    return {
        "datasets": {**SUITE, "ten2one": TEN_TO_ONE},
        "methods": {
            "maxmin": {"model": "maxmin", "grid": {"model.n_heads": [1, 2, 3, 4, 6, 8], "model.restarts": [1, 4]}},
        },
        "select": "per_dataset",
        "select_metric": "log_loss",
        "seeds": [0],
        "shots": [0, 10],
    }
