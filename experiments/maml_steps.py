"""MAML's inner loop (last layer adapted, the point experiments/fewshot.py selects on the 3-group population):
inner steps 5 / 10 / 20 x inner rate 1.0 / 3.0, unseen users at 10 shots. Selected on validation, 1 seed.

    plural grid experiments/maml_steps.py --out results/maml_steps     # about 4 min on 2 CPU cores

Validation gap closed of the validation-unseen users at 10 shots: 5 steps 0.674 (rate 1.0) / 0.646 (3.0),
10 steps 0.643 / 0.631, 20 steps 0.640 / 0.606: more inner steps do not help; the default 5 steps stay.
"""

from common import IDEAL3


def get_config():
    return {
        "datasets": {"ideal3": {"simulate": {**IDEAL3, "test_pairs": 60}}},
        "methods": {
            "maml": {"model": "fewshot", "set": {"model.adapt_params": "head"},
                     "grid": {"model.inner_steps": [5, 10, 20], "model.inner_lr": [1.0, 3.0]}},
        },
        "seeds": [0],
        "shots": [10],
    }
