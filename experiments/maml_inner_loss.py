"""MAML's inner loss over a user's pairs: their mean (MAML's usual form; every step as long from 1 pair as
from 32) or their sum (a step in proportion to the evidence: a MAP step under a Gaussian prior around the
meta-learned weights). Last layer adapted, 5 inner steps, on the 3-group ideal-point population; MAML and
Meta-SGD, sum at inner rates 0.03 / 0.1 / 0.3 (the mean's selected rate 1.0 over ~10 pairs is ~0.1 a pair),
with and without the inner gradient clip (which a sum's larger gradients may reach). Selected on the
validation-unseen users at 10 shots, 1 seed.

    plural grid experiments/maml_inner_loss.py --out results/maml_inner_loss     # about 3 min on 2 CPU cores

Validation gap closed of the validation-unseen users at 10 shots: MAML mean (rate 1.0) 0.674; MAML sum at
rates 0.03 / 0.1 / 0.3 with the clip 0.587 / 0.642 / 0.567, without it 0.431 / 0.615 / 0.522; Meta-SGD sum
0.693 (0.03) / 0.671 (0.1). Selection (seen and unseen validation together) keeps the mean: the default
`inner_loss=mean` stays.
"""

from common import IDEAL3

HEAD = {"model.adapt_params": "head"}


def get_config():
    return {
        "datasets": {"ideal3": {"simulate": {**IDEAL3, "test_pairs": 60}}},
        "methods": {
            "maml-mean": {"model": "fewshot", "set": {**HEAD, "model.inner_lr": 1.0}},
            "maml-sum": {"model": "fewshot", "set": {**HEAD, "model.inner_loss": "sum"},
                         "grid": {"model.inner_lr": [0.03, 0.1, 0.3], "model.inner_clip": [10.0, 0.0]}},
            "meta-sgd-sum": {"model": "fewshot", "set": {**HEAD, "model.inner_loss": "sum", "model.learn_inner_lr": True},
                             "grid": {"model.inner_lr": [0.03, 0.1]}},
        },
        "seeds": [0],
        "shots": [10],
    }
