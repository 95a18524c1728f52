"""Every family at its defaults on the defaults suite (experiments/defaults.py), 3 training seeds: the
table behind "defaults travel", with CIs across seeds (MiCRo, DPL and MaxMin at their hand-set defaults, not
yet selected on this suite). The linear probes use the learning rates the
suite selected for them (user-blind 3e-3, group-told 3e-2).

    plural grid experiments/suite.py --out results/suite
"""

from common import SUITE, bt_baselines


def get_config():
    return {
        "datasets": SUITE,
        "methods": {**bt_baselines(select=False),
                    **{name: {"model": name} for name in ("vpl", "pal-a", "pal-b", "micro", "dpl", "maxmin")}},
        "baseline": "bt",
        "seeds": [0, 1, 2],
        "shots": [0, 10],
    }
