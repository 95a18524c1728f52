"""Where a new user's gradient adaptation starts: from the meta-learned weights theta (MAML's own start,
`model.adapt_init=population`) or from the seen users' adapted weights averaged in proportion to the
likelihood of the user's shots under each (empirical Bayes over the seen users, `adapt_init=seen`, as LoRe's
and PAL's new users start), then `adapt_inner_steps` gradient steps on the shots (1, or 0 = as many as
meta-training takes, 5). MAML and Meta-SGD (last layer, inner rate 1.0), Reptile (inner rate 1.0) and
fine-tuned BT (last layer, inner rate 1.0: the reference with the same start and steps) on `fewshot_users`'
60-user 3-group population (120 validation-unseen and 120 test-unseen users), unseen users at K = 4, 10, 32
shots (scored rows: positions >= 32), selected on validation, 2 seeds. The start changes adaptation only:
every point of a method trains the same network.

    plural grid experiments/meta_start.py --out results/meta_start     # about 20 min on 2 CPU cores
"""

from common import IDEAL3

HEAD = {"model.adapt_params": "head", "model.inner_lr": 1.0}
START = {"model.adapt_init": ["population", "seen"], "model.adapt_inner_steps": [0, 1]}


def get_config():
    return {
        "datasets": {"users60": {"simulate": {**IDEAL3, "n_users": 60, "n_unseen": 120, "test_pairs": 60}}},
        "methods": {
            "maml": {"model": "fewshot", "set": HEAD, "grid": START},
            "meta-sgd": {"model": "fewshot", "set": {**HEAD, "model.learn_inner_lr": True}, "grid": START},
            "reptile": {"model": "fewshot", "set": {"model.variant": "reptile", "model.inner_lr": 1.0}, "grid": START},
            "finetune": {"model": "fewshot", "set": {**HEAD, "model.variant": "finetune"}, "grid": START},
        },
        "seeds": [0, 1],
        "shots": [4, 10, 32],
    }
