"""How many training users the meta-learners need: MAML and Meta-SGD (last layer, inner rate 1.0, the point
experiments/fewshot.py selects on this population), Reptile (inner rate 0.3 / 1.0, selected), GPO (2 layers
x 64, as in experiments/fewshot.py) and LoRe (its defaults) on the 3-group ideal-point population with 60
(the reference), 240 and 960 seen users; 120 validation-unseen and 120 test-unseen users (four times the
reference's 30, for tighter few-shot numbers), unseen users at K = 4, 10, 32 shots (scored rows: positions
>= 32), selected on validation, 2 seeds. With 60 users GPO's validation accuracy peaks within a few
hundred steps and then falls: it learns the training users' answers rather than how to read a context
(meta-overfitting); more users is the cure this measures, for every meta-learner.

    plural grid experiments/fewshot_users.py --out results/fewshot_users     # about 20 min on 2 CPU cores

Test gap closed of unseen users at 10 shots, 60 / 240 / 960 seen users (2 seeds): MAML 0.69 / 0.78 / 0.75,
Meta-SGD 0.69 / 0.79 / 0.75, GPO 0.48 / 0.75 / 0.88, Reptile 0.60 / 0.72 / 0.71, LoRe 0.86 / 0.94 / 0.91.
"""

from common import IDEAL3

HEAD = {"model.adapt_params": "head", "model.inner_lr": 1.0}


def get_config():
    return {
        "datasets": {f"users{n}": {"simulate": {**IDEAL3, "n_users": n, "n_unseen": 120, "test_pairs": 60}}
                     for n in (60, 240, 960)},
        "methods": {
            "maml": {"model": "fewshot", "set": HEAD},
            "meta-sgd": {"model": "fewshot", "set": {**HEAD, "model.learn_inner_lr": True}},
            "reptile": {"model": "fewshot", "set": {"model.variant": "reptile"}, "grid": {"model.inner_lr": [0.3, 1.0]}},
            "gpo": {"model": "fewshot", "set": {"model.variant": "gpo", "model.n_layers": 2, "model.d_model": 64}},
            "lore": {"model": "fewshot", "set": {"model.variant": "lore"}},
        },
        "seeds": [0, 1],
        "shots": [4, 10, 32],
    }
