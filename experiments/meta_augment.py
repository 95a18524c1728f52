"""Meta-augmentation for the meta-learners on a small population: with probability `model.flip_users` a
meta-training user has all its pairs reversed (plural.models.fewshot.flip_user_pairs; Rajendran, Irpan &
Jang, NeurIPS 2020), so that a meta-learner trained on few users cannot score a user's targets from what it
memorised of the training users and must read the user's context. MAML and Meta-SGD (last layer, inner
rate 1.0), Reptile (inner rate 1.0, 5 minibatches) and GPO (2 layers x 64), flip share 0 / 0.1 / 0.25 /
0.5, on the 3-group ideal-point population with 60 seen users and 120 validation-unseen / 120
test-unseen users (results/fewshot_users' smallest population), unseen users at 4, 10, 32 shots (scored
rows: positions >= 32), selected on validation, 2 seeds.

    plural grid experiments/meta_augment.py --out results/meta_augment     # about 16 min on 2 CPU cores

Validation-unseen users at 10 shots, flip share 0 / 0.1 / 0.25 / 0.5: MAML 0.71 / 0.71 / 0.67 / 0.65,
Meta-SGD 0.72 / 0.71 / 0.68 / 0.64, Reptile 0.62 / 0.64 / 0.63 / 0.62, GPO 0.54 / 0.54 / 0.56 / 0.51 (GPO's
best step still 300-800). Seen users gain from it (MAML 0.84 -> 0.86), unseen users do not: not adopted.
"""

from common import IDEAL3, meta_learners

FLIP = {"model.flip_users": [0.0, 0.1, 0.25, 0.5]}


def get_config():
    return {
        "datasets": {"users60": {"simulate": {**IDEAL3, "n_users": 60, "n_unseen": 120, "test_pairs": 60}}},
        "methods": meta_learners(FLIP),
        "seeds": [0, 1],
        "shots": [4, 10, 32],
    }
