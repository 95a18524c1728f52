"""Gap closed against a population setting swept across datasets, per method: seen users, and unseen
users at the fewest and the most shots. The setting is read from the dataset names of a grid that sweeps
it (`<prefix><number>`, e.g. signal0.25, signal0.5, ... in experiments/micro_budget.py); a grid whose
datasets do not form such a sweep (one prefix, >= 3 numbers) gets no figure. Mean over seeds.
Input: a grid's results.parquet (rows with group == "all")."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from paper_figs.common import at_defaults, plt, save

NAME = "gap_vs_setting"
SWEPT = re.compile(r"^(?P<prefix>[A-Za-z_-]+)(?P<value>\d+(\.\d+)?)$")


def from_results(results_dir: Path, out_dir: Path) -> list[Path] | None:
    path = Path(results_dir) / "results.parquet"
    if not path.exists():
        return None
    r = at_defaults(pd.read_parquet(path))
    names = {ds: SWEPT.match(ds) for ds in r["dataset"].unique()}
    prefixes = {m["prefix"] for m in names.values() if m}
    if "gap_closed" not in r or None in names.values() or len(prefixes) != 1 or len(names) < 3:
        return None
    setting = prefixes.pop()
    r = r[(r.group == "all") & r.split.isin(["seen", "unseen"])].assign(
        setting=lambda d: d["dataset"].map(lambda ds: float(names[ds]["value"])))
    lo, hi = r.loc[r.split == "unseen", "shots"].min(), r.loc[r.split == "unseen", "shots"].max()
    r = r[(r.split == "seen") | r.shots.isin([lo, hi])]
    r = r.assign(curve=r["split"].where(r.split == "seen", "unseen, " + r["shots"].astype(str) + " shots"))
    data = r.groupby(["method", "curve", "setting"], as_index=False)["gap_closed"].mean()
    curves = list(dict.fromkeys(sorted(data["curve"], key=lambda c: (c != "seen", len(c), c))))
    fig, axes = plt.subplots(1, len(curves), figsize=(4.4 * len(curves), 3.4), squeeze=False, sharey=True)
    for ax, curve in zip(axes[0], curves):
        for m, d in data[data.curve == curve].groupby("method", sort=True):
            d = d.sort_values("setting")
            ax.plot(d["setting"], d["gap_closed"], marker="o", label=m)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_xlabel(setting)
        ax.set_title(curve)
    axes[0][0].set_ylabel("gap closed (test)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save(fig, data, out_dir, NAME)
