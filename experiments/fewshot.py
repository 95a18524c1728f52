"""Few-shot adaptation of unseen users: every `fewshot` variant beside VPL, PAL-A and PAL-B (K = 3, 4, 6, 8
prototypes, all reported), MiCRo and the BT baselines, at K = 1, 2, 4, 8, 10, 16, 32 shots (one fixed set
of scored rows: positions >= 32), on the 3-group ideal-point population, on persona statements, and on many
small groups (30 groups of 4 seen users), where a mixture with a few prototypes runs out. Each method's
point is selected per dataset on validation; 3 seeds. The gradient variants get the same budget: MAML and
fine-tuned BT both sweep the inner rate and which weights adapt (all / last layer), Reptile adapts all.

GPO runs at 2 layers x 64 wide here (its published 6 x 128 is the family default, too slow for a CPU
sweep of this size).

    plural grid experiments/fewshot.py --out results/fewshot     # about 3 h on 2 CPU cores
    # stored in two parts: --datasets ideal3,many_small -> results/fewshot (45 min),
    # --datasets statements -> results/fewshot_statements (1 h 50 min)
    plural figs --results results/fewshot --out figs/fewshot     # accuracy_vs_shots per dataset
"""

from common import IDEAL3, STATEMENTS4X6, bt_baselines

MANY_SMALL = {"n_groups": 30, "group_sizes": (1,) * 30, "n_users": 120, "n_unseen": 60, "train_pairs": 40,
              "test_pairs": 60, "n_prompts": 0, "seed": 5}
INNER = {"model.inner_lr": [0.3, 1.0], "model.adapt_params": ["all", "head"]}


def get_config():
    return {
        "datasets": {
            "ideal3": {"simulate": {**IDEAL3, "test_pairs": 60}},
            "many_small": {"simulate": MANY_SMALL},
            "statements": {"simulate": {**STATEMENTS4X6, "test_pairs": 40}},
        },
        "methods": {
            "maml": {"model": "fewshot", "grid": INNER},
            "meta-sgd": {"model": "fewshot", "set": {"model.learn_inner_lr": True, "model.adapt_params": "head",
                                                     "model.inner_lr": 1.0}},
            "reptile": {"model": "fewshot", "set": {"model.variant": "reptile"}, "grid": {"model.inner_lr": [0.3, 1.0]}},
            "finetune": {"model": "fewshot", "set": {"model.variant": "finetune"}, "grid": INNER},
            "lore": {"model": "fewshot", "set": {"model.variant": "lore"}, "grid": {"model.rank": [8, 32]}},
            "gpo": {"model": "fewshot", "set": {"model.variant": "gpo", "model.n_layers": 2, "model.d_model": 64}},
            "vpl": {"model": "vpl"},
            **{f"pal-a-k{k}": {"model": "pal-a", "set": {"model.n_prototypes": k}} for k in (3, 4, 6, 8)},
            **{f"pal-b-k{k}": {"model": "pal-b", "set": {"model.n_prototypes": k}} for k in (3, 4, 6, 8)},
            "micro": {"model": "micro"},
            **bt_baselines(select=False, probes=False),
        },
        "baseline": "bt",
        "seeds": [0, 1, 2],
        "shots": [1, 2, 4, 8, 10, 16, 32],
    }
