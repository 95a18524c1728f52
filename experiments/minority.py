"""A 10:1 majority : minority side by side: 2, 3 and 4 groups (shares 10 : 1, 10 : 1 : 1, 10 : 1 : 1 : 1),
prompts that say a little about who asks (`context_signal` 0.25, 64 prompts), every family at its
defaults with the BT baselines: BT, the static mixture (MiCRo without the router), MiCRo, DPL, MaxMin,
PAL-A / PAL-B, VPL, BT told the group. Per-group accuracy of seen users and of unseen users at 10
shots, 3 training seeds.

    plural grid experiments/minority.py --out results/minority     # about 20 min on 2 CPU cores
    plural figs --results results/minority --out figs/minority     # group_accuracy per dataset
"""

from common import IDEAL3

BASE = {**IDEAL3, "n_prompts": 64, "context_signal": 0.25, "n_users": 72}


def get_config():
    return {
        "datasets": {f"{k}groups": {"simulate": {**BASE, "n_groups": k, "group_sizes": (10,) + (1,) * (k - 1)}}
                     for k in (2, 3, 4)},
        "methods": {
            "bt": {"model": "bt"},
            "static-mixture": {"model": "micro", "set": {"model.router": False}},
            "micro": {"model": "micro"},
            "dpl": {"model": "dpl"},
            "maxmin": {"model": "maxmin"},
            "pal-a": {"model": "pal-a"},
            "pal-b": {"model": "pal-b"},
            "vpl": {"model": "vpl"},
            "bt-group": {"model": "bt", "set": {"model.condition": "group"}},
        },
        "baseline": "bt",
        "seeds": [0, 1, 2],
        "shots": [0, 10],
    }
