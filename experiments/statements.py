"""Every family on a persona-statement population (real text, MiniLM embeddings): 4 groups holding or
opposing 6 persona dimensions (Anthropic persona statements), 10% label noise; 60 seen users with 60
training pairs, 20 unseen users; accuracy for seen users and for unseen users from 1..16 shots.
A single reward can only follow the majority stance on each dimension; the groups' own stances are
the oracle.

    plural grid experiments/statements.py --out results/statements
    plural figs --results results/statements --out figs/statements
"""

from common import STATEMENTS4X6


def get_config():
    return {
        "datasets": {
            "statements4x6": {"simulate": STATEMENTS4X6},
        },
        "methods": {
            "bt": {"model": "bt", "set": {"model.hidden": (64,), "train.steps": 1000}},
            "vpl": {"model": "vpl", "set": []},
            "pal-a": {"model": "pal-a", "set": {"model.n_prototypes": 4}},
            "pal-b": {"model": "pal-b", "set": {"model.n_prototypes": 4}},
        },
        "seeds": [0, 1, 2],
        "shots": [1, 2, 4, 8, 16],
    }
