"""Model size for the meta-learners on the 60-user ideal-point population, where they fall short of closing
0.7 of the gap at 10 shots (experiments/fewshot_users.py): with 60 training users (tasks) a smaller model
may overfit the users less. GPO: 1 or 2 layers x d_model 32 / 64 / 128 (experiments/fewshot.py ran 2 x 64);
MAML and Reptile: the reward MLP's hidden layer 32 / 64 (the default) / 256 wide (MAML on the last layer at
inner rate 1.0 and Reptile at 1.0, the points experiments/fewshot_users.py ran). The dataset is
experiments/fewshot_users.py's `users60` (60 seen users, 120 validation-unseen, 120 test-unseen), so its
test numbers compare with that run's. Each method's size is selected on validation; 2 seeds.

    plural grid experiments/fewshot_size.py --out results/fewshot_size     # about 15 min on 2 CPU cores
"""

from common import IDEAL3

HEAD = {"model.adapt_params": "head", "model.inner_lr": 1.0}
WIDTHS = {"model.hidden": [(32,), (64,), (256,)]}


def get_config():
    return {
        "datasets": {"users60": {"simulate": {**IDEAL3, "n_users": 60, "n_unseen": 120, "test_pairs": 60}}},
        "methods": {
            "maml": {"model": "fewshot", "set": HEAD, "grid": WIDTHS},
            "reptile": {"model": "fewshot", "set": {"model.variant": "reptile", "model.inner_lr": 1.0}, "grid": WIDTHS},
            "gpo": {"model": "fewshot", "set": {"model.variant": "gpo"},
                    "grid": {"model.n_layers": [1, 2], "model.d_model": [32, 64, 128]}},
        },
        "seeds": [0, 1],
        "shots": [4, 10, 32],
    }
