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


def test_rows(r: pd.DataFrame) -> pd.DataFrame:
    """The test-table rows of a grid's results (grids with model selection also score the val table)."""
    return r[r["table"] == "test"] if "table" in r.columns else r


def at_defaults(r: pd.DataFrame) -> pd.DataFrame:
    """Rows of a grid's results to draw one line or bar per method: its selected cell, on the test table.

    Grids select each method's hyper-parameter point on validation data (the `selected` column of
    results.parquet); figures report those cells only. For results stored before selection existed:
    a method swept over a grid (e.g. `model.n_prototypes` in experiments/pal.py) has several `hparams`
    points; figures that show one line or bar per method keep the point whose swept values equal the
    family's defaults (or, when no point does, every point, labelled `method (key=value)`).
    """
    import json

    from plural.run import configs_for

    if "selected" in r.columns:
        return test_rows(r[r["selected"]])
    keep = []
    for (method, model), d in r.groupby(["method", "model"], sort=False):
        points = d["hparams"].unique()
        if len(points) == 1:
            keep.append(d)
            continue
        defaults = configs_for(model)

        def is_default(point: str) -> bool:
            for key, value in json.loads(point).items():
                section, _, name = key.rpartition(".")
                if str(getattr(defaults[section or "model"], name, None)) != str(value):
                    return False
            return True

        chosen = [p for p in points if is_default(p)]
        if chosen:
            keep.append(d[d["hparams"] == chosen[0]])
        else:
            label = d["hparams"].map(lambda p: ", ".join(f"{k.rpartition('.')[2]}={v}" for k, v in json.loads(p).items()))
            keep.append(d.assign(method=d["method"] + " (" + label + ")"))
    return pd.concat(keep, ignore_index=True) if keep else r
