"""Why some families stop short of 0.7 on three of the defaults suite's populations: too few pairs per user,
or a model that cannot? `gauss3`, `gauss6` (Gaussian items: every reward shares a term in the item's norm,
-||y||^2, besides its group's direction) and `sphere2` (D = 64 with 30 pairs per user), each as in the
suite and with four times the training pairs per user (`x4`: 320, 200, 120), everything else equal (the
same groups and ideal points, the same sizes of the validation and test tables, drawn afresh). Every family at its current defaults beside
the BT baselines and the linear probes, 2 seeds.

    plural grid experiments/suite_pairs.py --out results/suite_pairs
"""

from common import SUITE_SIMULATED, bt_baselines

BASE = {k: SUITE_SIMULATED[k] for k in ("gauss3", "gauss6", "sphere2")}
PAIRS = {"gauss3": 80, "gauss6": 50, "sphere2": 30}  # the suite's training pairs per user


def get_config():
    datasets = {}
    for name, pop in BASE.items():
        assert pop["train_pairs"] == PAIRS[name]
        datasets[name] = {"simulate": pop}
        datasets[f"{name}x4"] = {"simulate": {**pop, "train_pairs": 4 * PAIRS[name]}}
    return {
        "datasets": datasets,
        "methods": {**bt_baselines(select=False),
                    **{name: {"model": name} for name in ("vpl", "pal-a", "pal-b", "micro", "dpl", "maxmin")}},
        "baseline": "bt",
        "seeds": [0, 1],
        "shots": [0, 10],
    }
