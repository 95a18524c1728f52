"""Shared figure plumbing: headless matplotlib, saving PNG + PDF + the CSV of the plotted numbers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402,F401  (re-exported for figure modules)
import pandas as pd  # noqa: E402


def save(fig, data: pd.DataFrame, out_dir: str | Path, name: str) -> list[Path]:
    """Write out_dir/name.{png,pdf,csv}; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data.to_csv(out / f"{name}.csv", index=False)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths + [out / f"{name}.csv"]


def score_column(df: pd.DataFrame) -> str:
    """The noise-free accuracy when ground truth exists, else the realised one."""
    return "expected" if "expected" in df and df["expected"].notna().all() else "accuracy"
