"""Weight decay against meta-overfitting: MAML and Meta-SGD (last layer, inner rate 1.0) and Reptile (inner
rate 1.0), the points experiments/fewshot_users.py selects on its 60-user population, with AdamW weight decay
0 / 0.1 / 1 / 10 on the meta-parameters (`train.weight_decay`, traced: a variant's four points train as one
program), on that population (the 3-group ideal-point population with 60 seen users, 120 validation-unseen
and 120 test-unseen users), selected on validation, 2 seeds. The weight-decay-0 cells are fewshot_users'.

    plural grid experiments/meta_weight_decay.py --out results/meta_weight_decay     # about 12 min on 2 CPU cores
"""

from common import IDEAL3

HEAD = {"model.adapt_params": "head", "model.inner_lr": 1.0}
DECAY = {"train.weight_decay": [0.0, 0.1, 1.0, 10.0]}


def get_config():
    return {
        "datasets": {"users60": {"simulate": {**IDEAL3, "n_users": 60, "n_unseen": 120, "test_pairs": 60}}},
        "methods": {
            "maml": {"model": "fewshot", "set": HEAD, "grid": DECAY},
            "meta-sgd": {"model": "fewshot", "set": {**HEAD, "model.learn_inner_lr": True}, "grid": DECAY},
            "reptile": {"model": "fewshot", "set": {"model.variant": "reptile", "model.inner_lr": 1.0}, "grid": DECAY},
        },
        "seeds": [0, 1],
        "shots": [4, 10, 32],
    }
