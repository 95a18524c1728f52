"""experiments/vpl_beta.py's two leading points (`model.beta` 1e-3 and 1e-2) again with training seed 1: the first
run's margin between them (0.0015 of suite validation score) was within what a seed moves, so the choice was
made on both seeds' mean.

    plural grid experiments/vpl_beta_seed1.py --out results/vpl_beta_seed1     # about 10 min on 2 CPU cores
"""

from vpl_beta import get_config as first_run


def get_config():
    config = first_run()
    config["methods"]["vpl"]["grid"]["model.beta"] = [1e-3, 1e-2]
    config["seeds"] = [1]
    return config
