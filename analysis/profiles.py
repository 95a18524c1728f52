"""Per-community attribute profiles of a fitted attribute-weighted model (`palette`), their bootstrap CIs,
a clustered heatmap, and the rank agreement of two profiles (`plural profile`).

A community's profile is its model's attention over the attributes, averaged over the community's
responses (the chosen and the rejected response of each of its rows): one weight per attribute, summing
to 1. The CI of each weight is the percentile interval of that average over responses drawn with
replacement (`n_boot` draws), i.e. the uncertainty due to which responses the community happened to
write, not due to training (compare two seeds' profiles with `compare_profiles` for that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from plural.errors import PluralError


def attention_by_community(run, data) -> dict[str, np.ndarray]:
    """community name -> (R, A) attention of its model over the attributes of its R responses.

    run: a loaded `palette` run (`plural.run.load_run`); data: a table read by `plural.data.read_table`
    with the run's attribute columns. A table without a group column is one community, named "all"."""
    from plural.models.base import view_of

    family = run.result.family
    if not hasattr(family, "profile"):
        raise PluralError(f"plural profile reads the attention of an attribute-weighted model; "
                          f"the run's family {family.name!r} has none (fit --model palette)")
    names = run.result.spec.get("attr_names", [])
    if list(data.attr_names) != list(names):
        raise PluralError(f"{data.source}: attribute columns {list(data.attr_names)} differ from the run's {names}")
    view = view_of(family, data)
    model = run.result.model(0)
    groups = list(run.result.spec.get("groups", []))
    prompt = np.concatenate([view.prompt, view.prompt])
    responses = np.concatenate([view.chosen, view.rejected])
    if not groups:  # fitted without a group column: one community, every row
        return {"all": np.asarray(model.profile(0, prompt, responses))}
    row_group = np.tile(data.group_index(groups), 2)
    out = {g: np.asarray(model.profile(c, prompt[row_group == c], responses[row_group == c]))
           for c, g in enumerate(groups) if (row_group == c).any()}
    if not out:
        raise PluralError(f"{data.source}: no row belongs to a community of the run ({', '.join(groups)})")
    return out


def profile_tables(alpha: dict[str, np.ndarray], names: list[str], n_boot: int = 1000,
                   seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(profile, ci): profile has one row per community (column `community`, then one column per attribute:
    the mean attention); ci is long, one row per community and attribute with `weight`, `lo`, `hi` (the
    2.5 / 97.5 percentiles of the bootstrap means)."""
    rng = np.random.default_rng(seed)
    rows, ci = [], []
    for g, a in alpha.items():
        mean = a.mean(0)
        # each draw resamples the R responses with replacement: its mean is counts @ a / R
        boot = rng.multinomial(len(a), np.full(len(a), 1.0 / len(a)), size=n_boot) @ a / len(a) if n_boot else mean[None]
        lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
        rows.append({"community": g, **dict(zip(names, map(float, mean)))})
        ci += [{"community": g, "attribute": n, "weight": float(m), "lo": float(l), "hi": float(h)}
               for n, m, l, h in zip(names, mean, lo, hi)]
    return pd.DataFrame(rows), pd.DataFrame(ci)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two vectors (average ranks for ties; nan when one is constant)."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def read_profile(path: str | Path) -> pd.DataFrame:
    """A profile CSV (first column the community, the others attribute weights), checked."""
    path = Path(path)
    if not path.exists():
        raise PluralError(f"{path}: no such profile file")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PluralError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})")
    if df.shape[1] < 2:
        raise PluralError(f"{path}: a profile has a community column and at least one attribute column")
    df = df.rename(columns={df.columns[0]: "community"})
    df["community"] = df["community"].astype(str)
    for col in df.columns[1:]:
        bad = ~np.isfinite(pd.to_numeric(df[col], errors="coerce"))
        if bad.any():
            raise PluralError(f"{path}: column {col!r}, row {int(np.argmax(bad.to_numpy())) + 2}: not a finite number")
    return df


def compare_profiles(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per community present in both: Spearman correlation of the two profiles over their shared
    attributes. Columns `community`, `spearman`, `top_a`, `top_b` (each profile's heaviest attribute)."""
    attrs = [c for c in a.columns[1:] if c in set(b.columns[1:])]
    if len(attrs) < 2:
        raise PluralError(f"the two profiles share {len(attrs)} attribute column(s); a rank correlation needs two")
    b = b.set_index("community")
    rows = []
    for _, row in a.iterrows():
        if row["community"] not in b.index:
            continue
        x, y = row[attrs].to_numpy(float), b.loc[row["community"], attrs].to_numpy(float)
        rows.append({"community": row["community"], "spearman": rank_correlation(x, y),
                     "top_a": attrs[int(np.argmax(x))], "top_b": attrs[int(np.argmax(y))]})
    if not rows:
        raise PluralError("the two profiles share no community")
    return pd.DataFrame(rows)


def cluster_order(weights: np.ndarray) -> np.ndarray:
    """Row order that puts communities with similar profiles next to each other (average-linkage
    hierarchical clustering on correlation distance; the given order for fewer than three rows)."""
    if len(weights) < 3:
        return np.arange(len(weights))
    from scipy.cluster.hierarchy import leaves_list, linkage

    centred = weights - weights.mean(1, keepdims=True)
    flat = np.linalg.norm(centred, axis=1) == 0
    centred[flat] = 1e-9 * np.arange(weights.shape[1])  # a constant profile: any distance, not nan
    return leaves_list(linkage(centred, method="average", metric="correlation"))


def heatmap(profile: pd.DataFrame, path: str | Path) -> Path:
    """Communities (rows, clustered by profile) x attributes heatmap of the weights, written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = profile.iloc[:, 1:].to_numpy(float)
    order = cluster_order(w)
    names = list(profile.columns[1:])
    fig, ax = plt.subplots(figsize=(1.0 + 0.35 * len(names), 1.2 + 0.3 * len(w)))
    im = ax.imshow(w[order], aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(w)), profile["community"].to_numpy()[order], fontsize=7)
    ax.set_xlabel("attribute")
    ax.set_ylabel("community (clustered by profile)")
    fig.colorbar(im, ax=ax, label="attention weight")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def regression_profiles(frame: pd.DataFrame, names: list[str], l2: float = 1e-3) -> pd.DataFrame:
    """The linear baseline profile: per community (the `group` column; "all" without one), a Bradley-Terry
    logistic regression of the label on the attribute score differences (chosen - rejected, no content),
    and its absolute coefficients normalised to sum to 1. On a simulated population with the true
    attribute scores this is the best a profile can recover (personas.communities documents the numbers).

    frame: a preference table with `chosen_attr_<name>` / `rejected_attr_<name>` columns; l2: ridge penalty
    (per pair summed loss). Returns the same layout as a `plural profile` CSV."""
    groups = frame["group"].astype(str) if "group" in frame else pd.Series("all", index=frame.index)
    rows = []
    for g in dict.fromkeys(groups):
        d = frame[groups == g]
        x = np.stack([d[f"chosen_attr_{a}"].to_numpy(float) - d[f"rejected_attr_{a}"].to_numpy(float)
                      for a in names], 1)
        w = np.zeros(len(names))
        for _ in range(50):  # Newton steps on the ridge-penalised BT log-likelihood
            p = 1.0 / (1.0 + np.exp(-x @ w))
            grad = x.T @ (1.0 - p) - l2 * w
            hess = (x * (p * (1.0 - p))[:, None]).T @ x + l2 * np.eye(len(w))
            step = np.linalg.solve(hess, grad)
            w += step
            if np.abs(step).max() < 1e-8:
                break
        rows.append({"community": g, **dict(zip(names, np.abs(w) / max(np.abs(w).sum(), 1e-12)))})
    return pd.DataFrame(rows)


def profile_of(run, data, n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(profile, ci) of a loaded palette run on a table read by `read_table` (`profile_tables` of its attention)."""
    return profile_tables(attention_by_community(run, data), run.result.spec["attr_names"], n_boot=n_boot, seed=seed)


def top_attribute_hits(profile: pd.DataFrame, defining: dict) -> pd.DataFrame:
    """Each community's top attribute against the attribute that defines it (e.g. truth.json's `defining` of a
    statements population with structure=communities): columns community, top, defining, hit."""
    top = profile.set_index("community").idxmax(axis=1)
    out = pd.DataFrame({"community": top.index, "top": top.values, "defining": [defining[c] for c in top.index]})
    return out.assign(hit=out["top"] == out["defining"])
