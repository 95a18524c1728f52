"""How VPL places a new user from K shots: the amortised encoder's posterior q(z | shots) (the paper's,
`model.adapt_init=encoder`), or empirical Bayes over the seen users (`seen`): their posteriors averaged with
weights proportional to the likelihood of the shots under each z_u. VPL at its other defaults on the
defaults suite, 3 seeds, one point selected across the suite on validation data (`select: across_datasets`,
as every default is). The start changes adaptation only: both points of a dataset train the same network.

The question comes from the real-text tables: on persona statements VPL's unseen users at 10 shots close
less of the distance between the user-blind and the group-told linear probes than its seen users do, and on
HH they score below the user-blind probe, as if an encoder fitted on a few dozen training users placed new
users worse than the seen users it was trained on would.

    plural grid experiments/vpl_start.py --out results/vpl_start     # about 20 min on 2 CPU cores
"""

from common import SUITE


def get_config():
    return {
        "datasets": SUITE,
        "methods": {"vpl": {"model": "vpl", "grid": {"model.adapt_init": ["encoder", "seen"]}}},
        "select": "across_datasets",
        "seeds": [0, 1, 2],
        "shots": [0, 10],
    }
