"""MiCRo's router entropy (alpha) and whether its heads see the prompt, selected on validation data of the
defaults suite plus two populations whose prompts carry the asker's group (the 3-group ideal point with
64 prompts and `context_signal` 0.5 and 1; the router has nothing to read on the suite's own members).
One point per family across the datasets (`select: across_datasets`), 1 seed.

    plural grid experiments/micro.py --out results/micro      # about 15 min on 2 CPU cores
"""

from common import IDEAL3, SUITE

CONTEXT = {f"ctx{s}": {"simulate": {**IDEAL3, "n_prompts": 64, "context_signal": s}} for s in (0.5, 1.0)}


def get_config():
    return {
        "datasets": {**SUITE, **CONTEXT},
        "methods": {
            "micro": {"model": "micro", "grid": {"model.router_entropy": [0.0, 0.1, 0.5],
                                                 "model.heads_see_prompt": [True, False]}},
        },
        "select": "across_datasets",
        "seeds": [0],
        "shots": [0, 10],
    }
