"""Every family at its defaults on the defaults suite (experiments/defaults.py), 3 training seeds: the
table behind "defaults travel", with CIs across seeds. Every family runs at its current defaults, each chosen
on this suite's validation data (docs/defaults.md); the linear probes use the learning rates the suite
selected for them (user-blind 3e-3, group-told 3e-2).

    plural grid experiments/suite.py --out results/suite     # about 45 min on 2 CPU cores
"""

from common import SUITE, bt_baselines


def get_config():
    return {
        "datasets": SUITE,
        "methods": {**bt_baselines(select=False),
                    **{name: {"model": name} for name in ("vpl", "pal-a", "pal-b", "micro", "dpl", "maxmin")}},
        "baseline": ["bt", "bt-linear"],  # paired differences with BT and with the user-blind linear probe
        "seeds": [0, 1, 2],
        "shots": [0, 10],
    }
