"""The reward networks' width of the MLP-based pluralistic families on the defaults suite: each family at its
defaults with its reward network as it is or wider, 1 seed, one point per family selected across the suite on
validation data (`select: across_datasets`, as every default is; results.parquet's `suite_score`), and each
cell's own `selection_score` showing where, per dataset, the wider network wins.

The question comes from experiments/suite_pairs.py and experiments/bt_width.py: on the Gaussian populations
(items of varying norm) an ideal-point reward -||y - u||^2 has a term every user shares, -||y||^2, that a
(64,) MLP does not learn from the suite's pairs and a (256, 256) one does. The families here:

- VPL: the reward decoder r(x, y, z), (64, 64) or (256, 256) (the pair encoder stays (64,));
- MiCRo, MaxMin and DPL: the shared feature MLP under the heads, (64,) or (256, 256);
- PAL-B: the item projector f, linear (its default) or (256,).

PAL-A's projector is already (256,) (chosen on this suite: plural/models/pal.py).

    plural grid experiments/widths.py --out results/widths     # about 20 min on 2 CPU cores
"""

from common import SUITE

WIDE = (256, 256)


def get_config():
    return {
        "datasets": SUITE,
        "methods": {
            "vpl": {"model": "vpl", "grid": {"model.decoder_hidden": [(64, 64), WIDE]}},
            "micro": {"model": "micro", "grid": {"model.hidden": [(64,), WIDE]}},
            "maxmin": {"model": "maxmin", "grid": {"model.hidden": [(64,), WIDE]}},
            "dpl": {"model": "dpl", "grid": {"model.hidden": [(64,), WIDE]}},
            "pal-b": {"model": "pal-b", "grid": {"model.projector_hidden": [(), (256,)]}},
        },
        "select": "across_datasets",
        "seeds": [0],
        "shots": [0, 10],
    }
