"""Adapting by more gradient steps than meta-training took: `model.adapt_inner_steps` = 0 (the 5 inner steps of
meta-training) / 10 / 25 for MAML and Meta-SGD (last layer, inner rate 1.0) and Reptile (inner rate 1.0, 5
minibatches), as Reptile's paper adapts by more steps at test time than it trains with (Nichol, Achiam &
Schulman 2018: 8 and 50 on Mini-ImageNet). On the 3-group ideal-point population with 60 seen users and 120
validation-unseen / 120 test-unseen users (as experiments/meta_augment.py), unseen users at 4, 10, 32 shots
(scored rows: positions >= 32), selected on validation, 2 seeds.

    plural grid experiments/adapt_steps.py --out results/adapt_steps     # about 15 min on 2 CPU cores
"""

from common import IDEAL3, meta_learners

STEPS = {"model.adapt_inner_steps": [0, 10, 25]}


def get_config():
    methods = {k: v for k, v in meta_learners(STEPS).items() if k != "gpo"}  # GPO reads its context: no steps
    return {
        "datasets": {"users60": {"simulate": {**IDEAL3, "n_users": 60, "n_unseen": 120, "test_pairs": 60}}},
        "methods": methods,
        "seeds": [0, 1],
        "shots": [4, 10, 32],
    }
