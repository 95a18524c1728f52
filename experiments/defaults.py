"""The defaults suite: every family's defaults are chosen here, on validation data of a suite of
populations, so that they travel rather than fit one population.

Five simulated ideal-point populations that differ in item distribution (unit sphere, Gaussian,
clustered), dimension, number of groups (2-6), group shares and pairs per user, and two real-text tables
at realistic sizes: persona statements (4 groups x 6 dimensions, 30 pairs per user, 10% label noise) and
the HH-RLHF hidden-context table (helpful- vs harmless-minded users, split by prompt). The linear probes
(`bt` with `model.hidden=()`, user-blind and group-told) are references. Each method's hyper-parameter
point is selected ACROSS the suite (`select: across_datasets`: the best validation score averaged over
the datasets); test numbers are reported for that one point on every dataset.

    plural grid experiments/defaults.py --out results/defaults
"""

from common import LR, PROBE_LR, SUITE


def get_config():
    return {
        "datasets": SUITE,
        "methods": {
            "bt": {"model": "bt", "grid": {"train.lr": LR, "model.hidden": [(64,), (256, 256)]}},
            "bt-linear": {"model": "bt", "set": {"model.hidden": ()}, "grid": {"train.lr": PROBE_LR}},
            "bt-group-linear": {"model": "bt", "set": {"model.hidden": (), "model.condition": "group"},
                                "grid": {"train.lr": PROBE_LR}},
            "bt-group": {"model": "bt", "set": {"model.condition": "group", "model.hidden": (64,)}, "grid": {"train.lr": LR}},
            "bt-user": {"model": "bt", "set": {"model.condition": "user", "model.hidden": (64,)}, "grid": {"train.lr": LR}},
            "vpl": {"model": "vpl", "grid": {"train.lr": [1e-3, 3e-3]}},
            "pal-a": {"model": "pal-a", "points": [
                {"model.n_prototypes": k, "model.mixture_entropy": e, "model.projector_l2": l2, **hidden}
                for k in (4, 8) for e, l2, hidden in ((0.1, 1e-3, {}), (0.1, 0.0, {}), (0.0, 0.0, {}),
                                                      (0.1, 0.0, {"model.projector_hidden": (256,)}))]},
            "pal-b": {"model": "pal-b", "points": [
                {"model.n_prototypes": k, "model.mixture_entropy": e, "model.input_dropout": p, **l2}
                for k in (4, 8) for e, p, l2 in ((0.1, 0.5, {}), (0.1, 0.5, {"model.prompt_l2": 10.0}),
                                                 (0.1, 0.5, {"model.prompt_l2": 100.0}),
                                                 (0.1, 0.25, {"model.prompt_l2": 100.0}),
                                                 (0.0, 0.5, {"model.prompt_l2": 100.0}))]},
        },
        "select": "across_datasets",
        "seeds": [0],
        "shots": [0, 10],
    }
