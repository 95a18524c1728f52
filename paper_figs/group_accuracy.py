"""Per-group accuracy of each model against the oracle and the best single reward (noise-free accuracy).

Input: a table with columns model, split, group, expected (or accuracy), oracle, single, as written
by `plural demo` (group_table.csv).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

NAME = "group_accuracy"


def plot(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    value = "expected" if "expected" in table else "accuracy"
    cols = ["model", "split", "group", value] + [c for c in ("oracle", "single") if c in table]
    data = table[cols].sort_values(["split", "group", "model"]).reset_index(drop=True)
    data.to_csv(out / f"{NAME}.csv", index=False)
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
    paths = [out / f"{NAME}.png", out / f"{NAME}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths + [out / f"{NAME}.csv"]
