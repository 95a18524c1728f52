"""How many training users an in-context meta-learner needs: GPO (2 layers x 64, as in
experiments/fewshot.py) on the 3-group ideal-point population with 60 (the reference), 240 and 960 seen
users, unseen users at K = 4, 10, 32 shots (scored rows: positions >= 32), 2 seeds. With 60 users GPO's
validation accuracy peaks within a few hundred steps and then falls: it learns the training users'
answers rather than how to read a context (meta-overfitting); more users is the cure this measures.

    plural grid experiments/fewshot_users.py --out results/fewshot_users     # about 15 min on 2 CPU cores
"""

from common import IDEAL3


def get_config():
    return {
        "datasets": {f"users{n}": {"simulate": {**IDEAL3, "n_users": n, "test_pairs": 60}} for n in (60, 240, 960)},
        "methods": {"gpo": {"model": "fewshot", "set": {"model.variant": "gpo", "model.n_layers": 2, "model.d_model": 64}}},
        "seeds": [0, 1],
        "shots": [4, 10, 32],
    }
