"""Accuracy overall / per user / per group with user-clustered bootstrap CIs, and the gap closed.

Input is the row table of `plural.evaluate.predict`: one row per scored comparison with `user_id`,
`group`, `margin`, `correct`, and, for simulated populations, the ground-truth columns `oracle_p`
(P(user prefers chosen)) and `population_p` (the best user-blind predictor's probability).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plural.calibration import expected_accuracy  # noqa: F401  (re-exported: defined beside the calibration metrics)


def gap_closed(acc: float, single: float, oracle: float) -> float:
    """(acc - single) / (oracle - single): 0 = no better than one shared reward, 1 = oracle."""
    return float((acc - single) / (oracle - single)) if oracle != single else float("nan")


def bootstrap_ci(values: np.ndarray, clusters: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """CI of the mean of `values`, resampling whole clusters (users) with replacement.

    Pairs of one user are correlated, so users, not pairs, are the resampling unit.
    """
    values = np.asarray(values, float)
    codes, uniq = pd.factorize(np.asarray(clusters))
    n_c = len(uniq)
    sums = np.bincount(codes, weights=values, minlength=n_c)
    counts = np.bincount(codes, minlength=n_c).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_c, size=(n_boot, n_c))
    means = sums[draws].sum(1) / np.maximum(counts[draws].sum(1), 1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def agreement(margin: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per row: 1 where the model prefers the response a predictor with P(chosen) = p prefers (sign(margin)
    = sign(p - 1/2)), 0 where it prefers the other, 1/2 where either is a tie."""
    a, b = np.sign(np.asarray(margin, float)), np.sign(np.asarray(p, float) - 0.5)
    return np.where((a == 0) | (b == 0), 0.5, (a == b).astype(float))


def _cols(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-row score columns: `accuracy` (realised) and, with ground truth, `expected`, `oracle`, `single`,
    `agree_oracle` (the model's preference is the user's noise-free one) and `agree_single` (it is the best
    user-blind predictor's: for a user-blind model, how well it learned the population's preference,
    apart from the label noise and the users it cannot serve)."""
    out = {"accuracy": rows["correct"].to_numpy(float)}
    if "oracle_p" in rows.columns and rows["oracle_p"].notna().all():
        p, m = rows["oracle_p"].to_numpy(float), rows["margin"].to_numpy()
        out["expected"] = expected_accuracy(m, p)
        out["oracle"] = np.maximum(p, 1 - p)
        out["agree_oracle"] = agreement(m, p)
        if "population_p" in rows.columns and rows["population_p"].notna().all():
            q = rows["population_p"].to_numpy(float)
            out["single"] = np.where(np.isclose(q, 0.5), 0.5, np.where(q > 0.5, p, 1 - p))  # a split population: a coin
            out["agree_single"] = agreement(m, q)
    return out


def accuracy_table(rows: pd.DataFrame, by: str | None = "group", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One line per value of `by` (or one line overall with by=None).

    Columns: n_users, n_pairs, accuracy, accuracy_lo, accuracy_hi (95% user-bootstrap CI); with ground
    truth also expected (noise-free accuracy), oracle, single, gap_closed (of the expected accuracy),
    agree_oracle and agree_single (shares of pairs on which the model prefers what the user's oracle / the
    best user-blind predictor prefers).
    """
    keys = [("all", rows)] if by is None else list(rows.groupby(by, sort=True))
    lines = []
    for key, r in keys:
        cols = _cols(r)
        lo, hi = bootstrap_ci(cols["accuracy"], r["user_id"].to_numpy(), n_boot, seed=seed)
        line = {by or "subset": key, "n_users": r["user_id"].nunique(), "n_pairs": len(r),
                "accuracy": cols["accuracy"].mean(), "accuracy_lo": lo, "accuracy_hi": hi}
        for k in ("expected", "oracle", "single", "agree_oracle", "agree_single"):
            if k in cols:
                line[k] = cols[k].mean()
        if "single" in cols:
            line["gap_closed"] = gap_closed(line["expected"], line["single"], line["oracle"])
        lines.append(line)
    return pd.DataFrame(lines)


def group_report(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """Overall and per-group tables plus the worst-off group and the spread across groups."""
    overall = accuracy_table(rows, by=None, n_boot=n_boot, seed=seed)
    groups = accuracy_table(rows, by="group", n_boot=n_boot, seed=seed) if rows["group"].notna().any() else None
    out = {"overall": overall, "groups": groups}
    if groups is not None and len(groups):
        key = "expected" if "expected" in groups else "accuracy"
        worst = groups.loc[groups[key].idxmin()]
        out["worst_group"] = str(worst["group"])
        out["worst_accuracy"] = float(worst[key])
        out["spread"] = float(groups[key].max() - groups[key].min())
    return out
