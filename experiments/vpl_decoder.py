"""How VPL's reward decoder reads the user's latent z, on the defaults suite: the paper's decoder
r(x, y, z) = MLP([e(x), e(y), z]) (`model.decoder=concat`, the default) or a bilinear one,
r(x, y, z) = phi(x, y)^T (W z + b) with phi the MLP's last hidden layer (`model.decoder=bilinear`: z sets
the direction of a linear reward on shared features, the form of LoRe's and PAL-B's rewards). VPL at its
other defaults, 1 seed, one point selected across the suite on validation data (`select: across_datasets`,
as every default is; results.parquet's `suite_score`), each cell's own `selection_score` per dataset.

The question comes from the suite's real-text tables, where VPL closes little of the distance between the
user-blind and the group-told linear probes: a concatenating MLP has to learn the products of z with the
embedding from a few hundred pairs, a bilinear read-out has them built in.

    plural grid experiments/vpl_decoder.py --out results/vpl_decoder     # about 7 min on 2 CPU cores
"""

from common import SUITE


def get_config():
    return {
        "datasets": SUITE,
        "methods": {"vpl": {"model": "vpl", "grid": {"model.decoder": ["concat", "bilinear"]}}},
        "select": "across_datasets",
        "seeds": [0],
        "shots": [0, 10],
    }
