"""Every family at its defaults on the defaults suite (experiments/defaults.py), 3 training seeds: the
table behind "defaults travel", with CIs across seeds. The linear probes use the learning rates the
suite selected for them (user-blind 3e-3, group-told 3e-2).

    plural grid experiments/suite.py --out results/suite
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("plural_defaults_suite", Path(__file__).with_name("defaults.py"))
_defaults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_defaults)


def get_config():
    return {
        "datasets": _defaults.get_config()["datasets"],
        "methods": {
            "bt": {"model": "bt"},
            "bt-linear": {"model": "bt", "set": ["model.hidden=()", "train.lr=3e-3"]},
            "bt-group-linear": {"model": "bt", "set": ["model.hidden=()", "model.condition=group", "train.lr=3e-2"]},
            "bt-group": {"model": "bt", "set": ["model.condition=group"]},
            "bt-user": {"model": "bt", "set": ["model.condition=user"]},
            "vpl": {"model": "vpl"},
            "pal-a": {"model": "pal-a"},
            "pal-b": {"model": "pal-b"},
        },
        "baseline": "bt",
        "seeds": [0, 1, 2],
        "shots": [0, 10],
    }
