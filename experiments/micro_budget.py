"""MiCRo's routing budget and context: unseen users' accuracy after B = 0, 1, 2, 5, 10, 20, 50 labelled
pairs (Hedge over the heads), on the 3-group population (0.6 / 0.3 / 0.1) whose 64 prompts carry the
asker's group with `context_signal` 0, 0.25, 0.5 and 1; the static mixture (no router), BT and the
group-told BT beside it. Every curve point scores the same rows (positions >= 50). 3 training seeds.

    plural grid experiments/micro_budget.py --out results/micro_budget     # about 15 min on 2 CPU cores
    plural figs --results results/micro_budget --out figs/micro_budget     # accuracy_vs_shots, gap_vs_setting
"""

from common import IDEAL3


def get_config():
    return {
        "datasets": {f"signal{s}": {"simulate": {**IDEAL3, "n_prompts": 64, "context_signal": s, "test_pairs": 80}}
                     for s in (0.0, 0.25, 0.5, 1.0)},
        "methods": {
            "micro": {"model": "micro"},
            "static-mixture": {"model": "micro", "set": {"model.router": False}},
            "bt": {"model": "bt"},
            "bt-group": {"model": "bt", "set": {"model.condition": "group"}},
        },
        "baseline": "bt",
        "seeds": [0, 1, 2],
        "shots": [0, 1, 2, 5, 10, 20, 50],
    }
