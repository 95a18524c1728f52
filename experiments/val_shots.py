"""Early stopping for few-shot learners: on the seen users' validation pairs (the default) or, with
`train.val_shots=10`, on those and the validation-unseen users adapted from 10 shots (the number the grid
selects on). MAML and Meta-SGD (last layer, inner rate 1.0, the points experiments/fewshot.py selects on
this population), Reptile and GPO (2 x 64), on the 3-group ideal-point population, 2 seeds.

    plural grid experiments/val_shots.py --out results/val_shots     # about 6 min on 2 CPU cores

Validation gap closed of the validation-unseen users at 10 shots, seeds 0 / 1, seen-only vs val_shots=10:
MAML 0.674 / 0.693 vs 0.680 / 0.693, Meta-SGD 0.669 / 0.707 vs 0.679 / 0.707, Reptile 0.331 / 0.357 (the same
best step either way), GPO 0.391 / 0.387 vs 0.499 / 0.435. The gradient learners' best steps barely move
(their seen and new users peak together); GPO's do, but its test-unseen numbers do not follow (30
validation-unseen users are few). `train.val_shots` stays off by default.
"""

from common import IDEAL3, meta_learners

VAL = {"train.val_shots": [0, 10]}


def get_config():
    return {
        "datasets": {"ideal3": {"simulate": {**IDEAL3, "test_pairs": 60}}},
        "methods": meta_learners(VAL),
        "seeds": [0, 1],
        "shots": [10],
    }
