"""Accuracy vs the number of prototypes / mixture components K, per method, for seen users and for
unseen users at one shot count (10, or the nearest evaluated), mean over seeds; methods without a K
sweep (e.g. BT) and the oracle / best single reward as horizontal references. One panel per dataset.
Input: a grid's results.parquet whose cells sweep `model.n_prototypes` (experiments/pal.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from paper_figs.common import plt, save, score_column, test_rows

NAME = "accuracy_vs_prototypes"
KEY = "model.n_prototypes"
SHOTS = 10


def from_results(results_dir: Path, out_dir: Path) -> list[Path] | None:
    path = Path(results_dir) / "results.parquet"
    if not path.exists():
        return None
    r = test_rows(pd.read_parquet(path))  # the whole sweep, on the test table (a sensitivity figure)
    r = r[(r.group == "all") & r.split.isin(["seen", "unseen"])].copy()
    r["K"] = r["hparams"].map(lambda p: json.loads(p).get(KEY))
    if r["K"].nunique() < 2:
        return None
    shots = min(r.loc[r.split == "unseen", "shots"].unique(), key=lambda s: (abs(s - SHOTS), -s))
    r = r[(r.split == "seen") & (r.shots == r.shots.min()) | (r.split == "unseen") & (r.shots == shots)]
    value = score_column(r)
    cols = [c for c in (value, "oracle", "single") if c in r]
    swept = r[r["K"].notna()]
    data = swept.groupby(["dataset", "method", "split", "K"], as_index=False)[cols].mean()
    flat = r[r["K"].isna()].groupby(["dataset", "method", "split"], as_index=False)[cols].mean()
    datasets = list(dict.fromkeys(data["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.8 * len(datasets), 3.5), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        d = data[data.dataset == ds]
        for m, dm in d.groupby("method", sort=True):
            line = None
            for split, style in (("seen", "-"), ("unseen", "--")):
                s = dm[dm.split == split].sort_values("K")
                line, = ax.plot(s["K"], s[value], style, marker="o", color=None if line is None else line.get_color(),
                                label=f"{m} ({split if split == 'seen' else f'unseen, {shots} shots'})")
        for m, fm in flat[flat.dataset == ds].groupby("method"):
            ax.axhline(fm[value].mean(), color="grey", linestyle="-.", linewidth=1, label=f"{m} (any K)")
        for col, style in (("oracle", "-"), ("single", ":")):
            if col in d:
                ax.axhline(d[col].mean(), color="k", linestyle=style, linewidth=1, label=col)
        ax.set_xlabel("prototypes K")
        ax.set_title(ds)
    axes[0][0].set_ylabel("noise-free accuracy" if value == "expected" else "accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    data = pd.concat([data.assign(shots_unseen=shots), flat.assign(K=None, shots_unseen=shots)], ignore_index=True)
    return save(fig, data, out_dir, NAME)
