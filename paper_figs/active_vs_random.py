"""Accuracy of unseen users after k queries, chosen actively (expected variance reduction of the
posterior) or at random; mean over seeds and random repeats. Input: a grid's active.parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figs.common import plt, save, score_column

NAME = "active_vs_random"


def from_results(results_dir: Path, out_dir: Path) -> list[Path] | None:
    path = Path(results_dir) / "active.parquet"
    if not path.exists():
        return None
    a = pd.read_parquet(path)
    value = score_column(a)
    data = a.groupby(["dataset", "method", "strategy", "queries"], as_index=False)[value].mean()
    panels = list(dict.fromkeys(zip(data["dataset"], data["method"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.3), squeeze=False)
    for ax, (ds, m) in zip(axes[0], panels):
        d = data[(data.dataset == ds) & (data.method == m)]
        for strategy, ds_ in d.groupby("strategy"):
            ax.plot(ds_["queries"], ds_[value], marker="o", label=strategy)
        ax.set_title(f"{m} on {ds}")
        ax.set_xlabel("queries asked")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("noise-free accuracy" if value == "expected" else "accuracy")
    fig.tight_layout()
    return save(fig, data, out_dir, NAME)
