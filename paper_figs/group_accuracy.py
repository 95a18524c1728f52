"""Per-group accuracy of each model against the oracle and the best single reward (noise-free accuracy).

Input: a table with columns model, split, group, expected (or accuracy), oracle, single, as written
by `plural demo` (group_table.csv); `from_results` derives it from a grid's results.parquet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper_figs.common import at_defaults, plt, save, score_column

NAME = "group_accuracy"


def from_results(results_dir: Path, out_dir: Path) -> list[Path] | None:
    """Per dataset: groups of seen users, and of unseen users at the largest shot count, mean over seeds."""
    path = Path(results_dir) / "results.parquet"
    if not path.exists():
        return None
    r = at_defaults(pd.read_parquet(path))
    r = r[(r.group != "all") & (r.split != "all")]
    paths = []
    for ds, d in r.groupby("dataset"):
        top = d["shots"].max()
        d = d[(d.split == "seen") | (d.shots == top)].copy()
        d["split"] = d["split"].map({"seen": "seen", "unseen": f"unseen ({top} shots)"})
        d = d[d.shots == d.groupby("split")["shots"].transform("max")]
        cols = [c for c in ("expected", "accuracy", "oracle", "single") if c in d]
        table = d.groupby(["method", "split", "group"], as_index=False)[cols].mean().rename(columns={"method": "model"})
        paths += plot(table, out_dir, name=f"{NAME}_{ds}")
    return paths


def plot(table: pd.DataFrame, out_dir: str | Path, name: str = NAME) -> list[Path]:
    value = score_column(table)
    cols = ["model", "split", "group", value] + [c for c in ("oracle", "single") if c in table]
    data = table[cols].sort_values(["split", "group", "model"]).reset_index(drop=True)
    splits = list(dict.fromkeys(data["split"]))
    models = list(dict.fromkeys(data["model"]))
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 3.4), squeeze=False, sharey=True)
    for ax, split in zip(axes[0], splits):
        d = data[data["split"] == split]
        groups = list(dict.fromkeys(d["group"]))
        x = np.arange(len(groups))
        w = 0.8 / max(len(models), 1)
        for i, m in enumerate(models):
            dm = d[d["model"] == m].set_index("group").reindex(groups)
            ax.bar(x + (i - (len(models) - 1) / 2) * w, dm[value], w, label=m)
        ref = d.drop_duplicates("group").set_index("group").reindex(groups)
        for col, style in (("oracle", "k-"), ("single", "k:")):
            if col in ref:
                ax.hlines(ref[col], x - 0.45, x + 0.45, colors="k", linestyles=style[1:], label=col if split == splits[0] else None)
        ax.set_xticks(x, groups)
        ax.set_title(split)
        ax.set_ylim(0.4, 1.0)
        ax.set_xlabel("group")
    axes[0][0].set_ylabel("noise-free accuracy" if value == "expected" else "accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="upper right", ncol=len(labels))
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return save(fig, data, out_dir, name)
