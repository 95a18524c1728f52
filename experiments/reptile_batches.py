"""Reptile's inner loop on minibatches: meta-training's inner steps take a user's pairs whole at every step
(`inner_batches=1`, the form experiments/fewshot.py ran) or dealt into 3 / 5 disjoint minibatches used
in turn (Nichol et al.'s inner loop: with successive steps on different pairs, the Reptile update carries the
term that rewards weights whose gradient on some of a user's pairs helps on the others), x inner rate 0.3 /
1.0 / 2.0; 5 inner steps; a new user adapts by the same 5 steps on all its shots. On the 3-group ideal-point
population, selected on validation, 2 seeds.

    plural grid experiments/reptile_batches.py --out results/reptile_batches     # about 10 min on 2 CPU cores

Validation gap closed of the validation-unseen users at 10 shots (mean of 2 seeds), inner rate 0.3 / 1.0 /
2.0: 1 minibatch 0.43 / 0.34 / 0.31, 3: 0.51 / 0.45 / 0.36, 5: 0.54 / 0.60 / 0.54, 10: 0.53 / 0.58 / 0.55
(10 minibatches with 5 steps used only the first 5 of them, half of each user's pairs: that point was run
before more minibatches than inner steps were refused; it is left out of the spec and of the stored tables).
Selected (seen and unseen validation together): 5 minibatches at rate 1.0, the default `inner_batches` 5.
"""

from common import IDEAL3


def get_config():
    return {
        "datasets": {"ideal3": {"simulate": {**IDEAL3, "test_pairs": 60}}},
        "methods": {
            "reptile": {"model": "fewshot", "set": {"model.variant": "reptile"},
                        "grid": {"model.inner_batches": [1, 3, 5], "model.inner_lr": [0.3, 1.0, 2.0]}},
        },
        "seeds": [0, 1],
        "shots": [10],
    }
