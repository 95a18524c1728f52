"""What the experiment specs share: the reference populations, the defaults suite, and the BT baselines.

Specs import it as `from common import ...`: `plural.grid.load_spec` puts a spec's folder first on
`sys.path` while loading it (and drops the module again afterwards). Values are Python values (tuples,
numbers, strings); `plural grid` type-checks them against the config fields they set before training.
"""

from pathlib import Path

# The HH-RLHF hidden-context table beside the repository (../shared/data), as released with VPL.
HH = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-hidden-context" / "both.jsonl.gz")

# The 3-group ideal-point population: shares 0.6 / 0.3 / 0.1, one fixed context, D = 32.
IDEAL3 = {"n_groups": 3, "group_sizes": (0.6, 0.3, 0.1), "n_prompts": 0, "seed": 0}

# Persona statements (real text, MiniLM): 4 groups x 6 persona dimensions, 60 seen users with 60 training
# pairs, 10% label noise.
STATEMENTS4X6 = {"population": "statements", "n_groups": 4, "n_dims": 6, "n_users": 60, "train_pairs": 60,
                 "test_pairs": 30, "label_noise": 0.1, "seed": 0}

# The defaults suite (experiments/defaults.py): five simulated populations that differ in item
# distribution, dimension, number of groups (2-6), group shares and pairs per user ...
SUITE_SIMULATED = {
    "sphere3": {**IDEAL3},  # the 3-group population itself
    "gauss3": {"item_dist": "gaussian", "n_groups": 3, "group_sizes": (1, 1, 1), "train_pairs": 80,
               "n_prompts": 0, "seed": 1},
    "clust4": {"item_dist": "clustered", "n_groups": 4, "group_sizes": (0.4, 0.3, 0.2, 0.1), "dim": 16,
               "train_pairs": 40, "seed": 2},
    "sphere2": {"n_groups": 2, "group_sizes": (0.7, 0.3), "dim": 64, "train_pairs": 30, "seed": 3},
    "gauss6": {"item_dist": "gaussian", "n_groups": 6, "group_sizes": (0.3, 0.2, 0.15, 0.15, 0.1, 0.1),
               "dim": 24, "n_users": 90, "train_pairs": 50, "seed": 4},
}
# ... and two real-text tables at realistic sizes.
SUITE_REAL = {
    "statements": {"simulate": {**STATEMENTS4X6, "train_pairs": 30, "test_pairs": 20}},  # 4 x 6, fewer pairs
    "hh": {"table": HH, "convert": "hh-hidden-context", "split": {"disjoint": "prompt", "seed": 0}},
}
SUITE = {**{k: {"simulate": v} for k, v in SUITE_SIMULATED.items()}, **SUITE_REAL}

LR = [1e-3, 1e-2]  # the learning rates every BT variant is selected from
PROBE_LR = [3e-3, 3e-2]  # ... and the linear probes


def meta_learners(grid: dict) -> dict:
    """The four meta-training `fewshot` variants as grid methods, each sweeping `grid`: MAML and Meta-SGD
    adapting the last layer at inner rate 1.0 (the point experiments/fewshot.py selects on the 3-group
    population), Reptile at inner rate 1.0, and GPO at 2 layers x 64 (as in experiments/fewshot.py)."""
    head = {"model.adapt_params": "head", "model.inner_lr": 1.0}
    sets = {"maml": head, "meta-sgd": {**head, "model.learn_inner_lr": True},
            "reptile": {"model.variant": "reptile", "model.inner_lr": 1.0},
            "gpo": {"model.variant": "gpo", "model.n_layers": 2, "model.d_model": 64}}
    return {name: {"model": "fewshot", "set": s, "grid": grid} for name, s in sets.items()}


def bt_baselines(select: bool = True, probes: bool = True) -> dict:
    """The fair BT baselines as grid methods: plain, told the group, user embeddings (P-RLHF), and with
    `probes` the user-blind and group-told linear probes. `select=True` sweeps their learning rates (model
    selection on validation); False runs them at their defaults (the probes at the rates the defaults suite
    selected for them: user-blind 3e-3, group-told 3e-2)."""
    def method(sets, lrs, lr=None):
        fixed = {**sets, **({} if select or lr is None else {"train.lr": lr})}
        return {"model": "bt", "set": fixed, **({"grid": {"train.lr": lrs}} if select else {})}

    out = {"bt": method({}, LR), "bt-group": method({"model.condition": "group"}, LR),
           "bt-user": method({"model.condition": "user"}, LR)}
    if probes:  # the references stay as the suite chose them, without input dropout (not swept for them)
        out["bt-linear"] = method({"model.hidden": (), "model.input_dropout": 0.0}, PROBE_LR, lr=3e-3)
        out["bt-group-linear"] = method({"model.hidden": (), "model.condition": "group", "model.input_dropout": 0.0},
                                        PROBE_LR, lr=3e-2)
    return out

# Two simulated community populations (personas.communities, 19 attributes, D = 64): 8 communities x 4000
# training pairs (seed 0) and 16 x 1000 (seed 1); experiments/palette.py and palette_variants.py.
COMMUNITIES = {
    "comm8": {"simulate": {"population": "communities", "n_communities": 8, "train_pairs": 4000, "seed": 0}},
    "comm16": {"simulate": {"population": "communities", "n_communities": 16, "n_users": 16, "train_pairs": 1000,
                            "seed": 1}},
}
