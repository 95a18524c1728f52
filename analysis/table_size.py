"""Validation scores of a suite sweep split by table size: how the automatic `input_dropout` default (a
family's small-table rate below `plural.models.base.SMALL_TABLE` training pairs per embedding dimension, its
other rate above) was chosen from `results/input_dropout`.

    python -m analysis.table_size experiments/input_dropout.py results/input_dropout

For every dataset of the spec it prints the training table's pairs per embedding dimension (the tables are
made as `plural grid` makes them, under RESULTS/data, once), then each method's mean `selection_score` per
value of the swept setting over the small tables and over the others. Test numbers play no part.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from plural.models.base import SMALL_TABLE, small_table


def sizes(spec: dict, out: Path) -> pd.DataFrame:
    """One line per dataset: training pairs, embedding dimension, pairs per dimension, small or not."""
    from plural.grid import _dataset

    lines = []
    for name, entry in spec["datasets"].items():
        train = _dataset(name, entry, out)["train"]
        lines.append({"dataset": name, "pairs": train.n_pairs, "dim": train.dim,
                      "per_dim": train.n_pairs / max(train.dim, 1), "small": small_table(train)})
    return pd.DataFrame(lines)


def by_size(results: pd.DataFrame, small: dict[str, bool], setting: str) -> pd.DataFrame:
    """Mean validation score (`selection_score`, one per cell) of each method x value of `setting` (a results
    column, e.g. "hp.model.input_dropout") over the small tables and over the others; the best value per method
    and size is the one the protocol picks."""
    cells = results.drop_duplicates("cell").assign(small=lambda d: d["dataset"].map(small))
    return cells.groupby(["method", "small", setting])["selection_score"].mean().unstack(setting)


def main(argv=None) -> None:
    from plural.grid import load_spec

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("results")
    ap.add_argument("--setting", default="hp.model.input_dropout")
    a = ap.parse_args(argv)
    table = sizes(load_spec(a.spec), Path(a.results))
    print(f"small: fewer than {SMALL_TABLE:g} training pairs per embedding dimension")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    scores = by_size(pd.read_parquet(Path(a.results) / "results.parquet"), dict(zip(table["dataset"], table["small"])),
                     a.setting)
    print(scores.to_string(float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
