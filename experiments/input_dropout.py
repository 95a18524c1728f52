"""Dropout on the response embeddings while training (`model.input_dropout`, every family's, the shared
`plural.models.base.drop_batch`) on the defaults suite: every family and the BT variants at their defaults
with dropout 0 / 0.25 / 0.5, 1 seed, one point per family selected across the suite on validation data
(`select: across_datasets`, as every default is).

The question comes from the real-text members of the suite: on persona statements (60 users x 30 pairs of
384-dimensional MiniLM embeddings) the MLP rewards fit the training statements and lose the test ones (the
user-embedding BT trains far above what it tests at). A scratch grid on that table alone (1 seed, not
stored) had the user-embedding BT's validation score 0.21 / 0.59 / 0.70 at dropout 0 / 0.25 / 0.5 and the
group-told BT's 0.58 / 0.63 / 0.78 (gap closed, seen and unseen at 10 shots together).

    plural grid experiments/input_dropout.py --out results/input_dropout     # about 35 min on 2 CPU cores
"""

from common import SUITE

DROP = {"model.input_dropout": [0.0, 0.25, 0.5]}


def get_config():
    return {
        "datasets": SUITE,
        "methods": {
            "bt": {"model": "bt", "grid": DROP},
            "bt-group": {"model": "bt", "set": {"model.condition": "group"}, "grid": DROP},
            "bt-user": {"model": "bt", "set": {"model.condition": "user"}, "grid": DROP},
            **{name: {"model": name, "grid": DROP} for name in ("vpl", "pal-a", "pal-b", "micro", "dpl", "maxmin")},
        },
        "select": "across_datasets",
        "seeds": [0],
        "shots": [0, 10],
    }
