"""Reliability diagram: the predicted probability of each method's preferred response against how often
that response was the one the user chose, per method, with the diagonal of perfect calibration. Seeds are
pooled (bins summed, means weighted by their row counts); one panel per (dataset, split); unseen users at
the largest shot count when the table has a `shots` column. Input: a grid's reliability.parquet, one line
per (dataset, method, seed, split, bin) with lo, hi, mean_predicted, frequency, n
(`analysis.calibration.reliability_curve` of each cell's scored rows)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figs.common import at_defaults, plt, save

NAME = "reliability"


def from_results(results_dir: Path, out_dir: Path) -> list[Path] | None:
    path = Path(results_dir) / "reliability.parquet"
    if not path.exists():
        return None
    r = pd.read_parquet(path)
    if {"model", "hparams"} <= set(r.columns):
        r = at_defaults(r)
    if "shots" in r.columns:  # one shot count per split: the largest (seen users have only shots 0 anyway)
        r = r[r["shots"] == r.groupby(["dataset", "split"])["shots"].transform("max")]
    return plot(pool(r), out_dir)


def pool(curves: pd.DataFrame) -> pd.DataFrame:
    """Pool the seeds' curves: per (dataset, split, method, bin) n summed, mean_predicted and frequency
    weighted by n; empty bins dropped. Columns: dataset, split, method, bin, lo, hi, mean_predicted,
    frequency, n (+ shots when present)."""
    keys = ["dataset", "split", "method"] + (["shots"] if "shots" in curves.columns else []) + ["bin", "lo", "hi"]
    c = curves[curves["n"] > 0].assign(wp=lambda d: d["mean_predicted"] * d["n"], wf=lambda d: d["frequency"] * d["n"])
    g = c.groupby(keys, as_index=False, sort=True)[["wp", "wf", "n"]].sum()
    return g.assign(mean_predicted=g["wp"] / g["n"], frequency=g["wf"] / g["n"]).drop(columns=["wp", "wf"])


def plot(data: pd.DataFrame, out_dir: str | Path, name: str = NAME) -> list[Path]:
    """One panel per (dataset, split): frequency vs mean_predicted per method, marker area ~ bin size."""
    panels = list(dict.fromkeys(zip(data["dataset"], data["split"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    for ax, (ds, split) in zip(axes[0], panels):
        d = data[(data.dataset == ds) & (data.split == split)]
        ax.plot([0.5, 1.0], [0.5, 1.0], color="k", linestyle=":", linewidth=1, label="calibrated")
        for m, dm in d.groupby("method", sort=True):
            dm = dm.sort_values("bin")
            line, = ax.plot(dm["mean_predicted"], dm["frequency"], marker=None, label=m)
            ax.scatter(dm["mean_predicted"], dm["frequency"], s=8 + 60 * dm["n"] / dm["n"].sum(), color=line.get_color())
        title = f"{ds}, {split}"
        if "shots" in d and split == "unseen":
            title += f" ({int(d['shots'].max())} shots)"
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0.5, 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("predicted P(preferred response is chosen)")
    axes[0][0].set_ylabel("observed frequency")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save(fig, data, out_dir, name)
