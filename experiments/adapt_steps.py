"""Adapting by more gradient steps than meta-training took: `model.adapt_inner_steps` = 0 (the 5 inner steps of
meta-training) / 10 / 25 for MAML and Meta-SGD (last layer, inner rate 1.0) and Reptile (inner rate 1.0, 5
minibatches), as Reptile's paper adapts by more steps at test time than it trains with (Nichol, Achiam &
Schulman 2018: 8 and 50 on Mini-ImageNet). On the 3-group ideal-point population with 60 seen users and 120
validation-unseen / 120 test-unseen users (as experiments/meta_augment.py), unseen users at 4, 10, 32 shots
(scored rows: positions >= 32), selected on validation, 2 seeds.

    plural grid experiments/adapt_steps.py --out results/adapt_steps     # about 6 min on 2 CPU cores

Validation gap closed (mean of 2 seeds), seen users / validation-unseen users at 10 shots, for 0 (5 steps) /
10 / 25: MAML 0.84 / 0.71, 0.86 / 0.71, 0.84 / 0.64; Meta-SGD 0.84 / 0.72, 0.87 / 0.71, 0.84 / 0.66;
Reptile 0.79 / 0.62, 0.78 / 0.61, 0.69 / 0.55. Adapting by more steps than meta-training took helps seen
users a little at 10 and new users not at all; at 25 both lose. The selection score (seen and unseen
together) prefers 10 by less than 0.003 for each method, within one seed's noise, and the points are the
last-layer configuration this spec runs, not the family's defaults: `adapt_inner_steps` stays 0.
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
