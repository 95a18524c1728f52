"""The headline comparison: every family and the fair BT baselines on the two reference populations,
each method's hyper-parameters selected on validation data, test numbers with CIs across 3 training seeds.

- ideal3: the 3-group ideal-point population (shares 0.6 / 0.3 / 0.1, one fixed context, D = 32);
- statements4x6: persona statements (real text, MiniLM), 4 groups x 6 dimensions, 60 training pairs per
  seen user, 10% label noise.

Unseen users are scored on the same rows (positions >= 10) at every shot count. Outputs: selected.parquet,
summary.parquet (seed CIs), paired.parquet (each method minus BT on the same rows), reliability.parquet.

    plural grid experiments/paper.py --out results/paper
    plural figs --results results/paper --out figs/paper
"""

from common import IDEAL3, STATEMENTS4X6, bt_baselines


def get_config():
    return {
        "datasets": {"ideal3": {"simulate": IDEAL3}, "statements4x6": {"simulate": STATEMENTS4X6}},
        "methods": {
            **{k: v for k, v in bt_baselines().items() if k != "bt-group-linear"},
            "vpl": {"model": "vpl", "grid": {"train.lr": [1e-3, 3e-3]}},
            "pal-a": {"model": "pal-a", "grid": {"model.n_prototypes": [3, 4, 8]}},
            "pal-b": {"model": "pal-b", "grid": {"model.n_prototypes": [3, 4, 8]}},
        },
        "baseline": "bt",
        "seeds": [0, 1, 2],
        "shots": [0, 1, 2, 5, 10],
    }
