"""Unseen users' accuracy vs the number of context pairs (shots), per method, with the oracle and the
best single reward as references; seen users' accuracy as dotted lines (labelled in the legend when there
are at most 8 methods). Mean over seeds, one panel per
dataset. Input: a grid's results.parquet (rows with group == "all")."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figs.common import at_defaults, plt, save, score_column

NAME = "accuracy_vs_shots"


def from_results(results_dir: Path, out_dir: Path) -> list[Path] | None:
    path = Path(results_dir) / "results.parquet"
    if not path.exists():
        return None
    r = at_defaults(pd.read_parquet(path))
    r = r[(r.group == "all") & r.split.isin(["seen", "unseen"])]
    if r[r.split == "unseen"]["shots"].nunique() < 2:
        return None
    value = score_column(r)
    cols = [c for c in (value, "oracle", "single") if c in r]
    data = r.groupby(["dataset", "method", "split", "shots"], as_index=False)[cols].mean()
    datasets = list(dict.fromkeys(data["dataset"]))
    methods = sorted(data["method"].unique())
    many = len(methods) > 8  # e.g. experiments/fewshot.py: one colour each from tab20, the legend beside the panels
    colours = dict(zip(methods, plt.get_cmap("tab20").colors * 2)) if many else {}
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets) + 2.2 * many, 3.4 + 0.6 * many),
                             squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        d = data[data.dataset == ds]
        for i, (m, dm) in enumerate(d.groupby("method", sort=True)):
            u = dm[dm.split == "unseen"].sort_values("shots")
            line, = ax.plot(u["shots"], u[value], marker="o", markersize=3 if many else 6, color=colours.get(m),
                            label=m if many else f"{m} (unseen)")
            s = dm[dm.split == "seen"]
            if len(s):  # with many methods the dotted seen-user lines share their method's colour, unlabelled
                ax.axhline(s[value].mean(), color=line.get_color(), linestyle=":", linewidth=1,
                           label="_" if many else f"{m} (seen)")
        u = d[d.split == "unseen"]
        for col, style in (("oracle", "-"), ("single", "--")):
            if col in u:
                ax.axhline(u[col].mean(), color="k", linestyle=style, linewidth=1, label=col)
        ax.set_xscale("symlog", base=2, linthresh=1)  # 0 shots (the population prediction) stays on the axis
        ax.set_xlim(left=-0.2 if d["shots"].min() == 0 else None)
        ax.set_xlabel("context pairs of an unseen user (shots)")
        ax.set_title(ds)
    axes[0][0].set_ylabel("noise-free accuracy" if value == "expected" else "accuracy")
    if many:
        axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1)
    else:
        axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save(fig, data, out_dir, NAME)
